"""Homeward: face matching that returns candidate lists for human review."""

__version__ = "0.1.0"
