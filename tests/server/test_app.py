"""The server skeleton: health, auth, the error envelope, bad input."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from keel.cli.serve import check_bind
from keel.errors import ConfigError
from keel.server import create_app
from keel.server.auth import create_api_key
from keel.settings import Settings
from keel.storage import open_store


@pytest.fixture
def keyed(tmp_path):
    store = open_store(f"sqlite:///{tmp_path}/k.db")
    p = store.projects.add_project("demo")
    _, secret = create_api_key(store, p, "ci")
    app = create_app(Settings(), store)
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c, {"Authorization": f"Bearer {secret}"}, p


def _err(r, status, code=None):
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and body["error"]["message"]
    if code:
        assert body["error"]["code"] == code
    assert "Traceback" not in r.text
    return body["error"]


def test_health_needs_no_key(keyed):
    c, _, _ = keyed
    assert c.get("/healthz").json()["status"] == "ok"
    assert c.get("/readyz").json() == {"status": "ready", "store": "sqlite"}


def test_projects_with_and_without_key(keyed):
    c, h, p = keyed
    assert c.get("/api/projects", headers=h).json()["data"][0]["id"] == p.id
    e = _err(c.get("/api/projects"), 401, "unauthorized")
    assert "keel keys create" in e["hint"]
    _err(c.get("/api/projects", headers={"Authorization": "Bearer nope"}), 401)
    _err(c.get("/api/projects", headers={"Authorization": "Basic abc"}), 401)


def test_revoked_key_stops_working(keyed):
    c, h, _ = keyed
    r = c.post("/api/keys", json={"name": "tmp"}, headers=h)
    assert r.status_code == 201
    new = {"Authorization": f"Bearer {r.json()['secret']}"}
    assert c.get("/api/projects", headers=new).status_code == 200
    assert c.delete(f"/api/keys/{r.json()['id']}", headers=h).status_code == 200
    _err(c.get("/api/projects", headers=new), 401)


@pytest.mark.parametrize(
    ("body", "ctype"),
    [
        (b"{not json", "application/json"),
        (b"\xff\xfe\xfd", "application/json"),
        (b"[1,2", "application/json"),
        (b"null", "application/json"),
    ],
)
def test_malformed_bodies(keyed, body, ctype):
    c, h, _ = keyed
    _err(c.post("/api/keys", content=body, headers={**h, "content-type": ctype}), 400)


def test_unknown_fields_and_hostile_names(keyed):
    c, h, _ = keyed
    e = _err(c.post("/api/keys", json={"name": "x", "admin": True}, headers=h), 400)
    assert "admin" in e["message"]
    for name in ["../../etc/passwd", "x'; DROP TABLE api_keys; --", "a\x00b"]:
        _err(c.post("/api/keys", json={"name": name}, headers=h), 400)
    assert c.get("/api/projects", headers=h).status_code == 200


def test_oversized_body(keyed):
    c, h, _ = keyed
    _err(
        c.post(
            "/api/keys",
            content=b"{" + b" " * (17 * 1024 * 1024) + b"}",
            headers={**h, "content-type": "application/json"},
        ),
        413,
        "payload_too_large",
    )


def test_unknown_route_and_method(keyed):
    c, h, _ = keyed
    _err(c.get("/api/nothing-here", headers=h), 404)
    _err(c.put("/healthz"), 405)


def test_openapi_is_served(keyed):
    c, _, _ = keyed
    spec = c.get("/openapi.json").json()
    assert "/api/projects" in spec["paths"]


def test_dev_mode_only_on_loopback(tmp_path):
    assert check_bind("127.0.0.1", 0, None) is True
    assert check_bind("::1", 0, None) is True
    assert check_bind("127.0.0.1", 1, None) is False
    assert check_bind("0.0.0.0", 2, None) is False
    with pytest.raises(ConfigError, match="refusing"):
        check_bind("0.0.0.0", 0, None)
    # non-loopback app never runs open even with no keys
    store = open_store("memory://")
    s = Settings()
    s.server.host = "10.1.2.3"
    with TestClient(create_app(s, store)) as c:
        assert c.get("/api/projects").status_code == 401


def test_store_down_makes_readyz_503(tmp_path):
    store = open_store(f"sqlite:///{tmp_path}/k.db")
    store.close()
    store.db.engine.dispose()
    import sqlalchemy as sa

    store.db.engine = sa.create_engine(
        "postgresql+psycopg://nobody@127.0.0.1:1/none", connect_args={"connect_timeout": 1}
    )
    with TestClient(create_app(Settings(), store), raise_server_exceptions=False) as c:
        r = c.get("/readyz")
        assert r.status_code == 503 and r.json()["status"] == "unavailable"
