"""Keel releases."""
