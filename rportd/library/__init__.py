"""Saved scripts and commands (the library)."""
