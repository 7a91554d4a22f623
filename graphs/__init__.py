"""Prebuilt workflows, listed by name."""
