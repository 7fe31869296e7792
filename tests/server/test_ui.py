"""The web UI is served, locked down, and never injects API data as HTML."""

from __future__ import annotations

from starlette.testclient import TestClient

from keel.server import create_app
from keel.settings import Settings
from keel.storage import open_store
from keel.ui import STATIC_DIR


def test_index_and_assets():
    with TestClient(create_app(Settings(), open_store("memory://"))) as c:
        r = c.get("/")
        assert r.status_code == 200 and "<title>Keel</title>" in r.text
        assert "script-src 'self'" in r.headers["content-security-policy"]
        assert c.get("/ui/static/app.js").headers["content-type"].startswith("text/javascript")
        assert c.get("/ui/static/style.css").status_code == 200
        for bad in ["../app.py", "..%2F..%2Fsettings.py", "nope.js"]:
            assert c.get(f"/ui/static/{bad}").status_code == 404


def test_ui_never_uses_html_injection_sinks():
    js = (STATIC_DIR / "app.js").read_text()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in js, sink
