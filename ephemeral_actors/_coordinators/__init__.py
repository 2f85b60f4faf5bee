"""Coordinator kinds: the shared core and facades."""
