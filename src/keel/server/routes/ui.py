"""The web UI: a static single page at ``/`` that calls the REST API with the user's key.

The page itself needs no key (it holds no data); every API call it makes is authenticated.
"""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import FileResponse, RedirectResponse, Response

from keel.errors import NotFoundError
from keel.ui import STATIC_DIR

router = APIRouter(include_in_schema=False)

_FILES = {"app.js": "text/javascript", "style.css": "text/css", "index.html": "text/html"}
_SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


@router.get("/")
def index() -> Response:
    """The UI's single page."""
    return FileResponse(
        STATIC_DIR / "index.html", media_type="text/html", headers=_SECURITY_HEADERS
    )


@router.get("/ui")
def ui_redirect() -> Response:
    """``/ui`` → ``/``."""
    return RedirectResponse("/")


@router.get("/ui/static/{name}")
def static(name: str) -> Response:
    """A static asset, from a fixed allow-list (no path traversal possible)."""
    if name not in _FILES:
        raise NotFoundError(f"no UI asset {name!r}")
    return FileResponse(STATIC_DIR / name, media_type=_FILES[name], headers=_SECURITY_HEADERS)
