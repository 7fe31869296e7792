"""Keel otlp."""
