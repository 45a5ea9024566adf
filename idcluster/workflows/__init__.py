"""Workflows: what a command does, top to bottom (compose -> pipeline -> place -> export -> report -> track)."""
