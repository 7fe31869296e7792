"""Keel monitor."""
