"""Keel sdk."""
