"""Generators (image, video, audio, music, speech), each a registered tool."""
