"""The web UI: one static page (no build step) that reads Keel's REST API."""

from __future__ import annotations

from pathlib import Path

STATIC_DIR = Path(__file__).parent / "static"
