"""Concrete model backends: pure request/response translation plus the bytes on the wire."""
