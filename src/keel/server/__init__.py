"""The HTTP server: ``create_app(settings, store)`` mounts every router on one ASGI app."""

from keel.server.app import create_app

__all__ = ["create_app"]
