"""Keel ui."""
