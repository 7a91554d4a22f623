"""Encoders and media tools, each a registered tool."""
