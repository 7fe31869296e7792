"""The REST surface of the registry, and signed change webhooks delivered to a real server."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from starlette.testclient import TestClient

from keel.errors import AuthenticationError
from keel.prompts.guards import AllowAll
from keel.prompts.registry import PromptRegistry
from keel.prompts.webhooks import WebhookEndpoint, WebhookNotifier, sign, verify_signature
from keel.server import create_app
from keel.server.auth import create_api_key
from keel.settings import Settings
from keel.storage import open_store


@pytest.fixture
def api(tmp_path):
    store = open_store(f"sqlite:///{tmp_path}/k.db")
    p = store.projects.add_project("demo")
    _, secret = create_api_key(store, p, "ci")
    app = create_app(Settings(), store)
    with TestClient(app, raise_server_exceptions=False) as c:
        # the eval guard (an entry point) is tested below; here every move is allowed
        app.state.keel.extras["prompt_registry"] = PromptRegistry(store, guards=[AllowAll()])
        c.headers["Authorization"] = f"Bearer {secret}"
        yield c, store, p


def test_production_is_guarded_by_the_installed_eval_guard(tmp_path):
    store = open_store(f"sqlite:///{tmp_path}/k.db")
    with TestClient(create_app(Settings(), store), raise_server_exceptions=False) as c:
        assert c.post("/api/prompts/agent/versions", json={"template": "a"}).status_code == 201
        c.post("/api/prompts/agent/versions", json={"template": "b"})
        r = c.put("/api/prompts/agent/labels/production", json={"version": 1})
        assert r.status_code == 409 and r.json()["error"]["code"] == "gate_failed", r.text
        assert c.get("/api/prompts/agent/labels").json() == []
        assert c.put("/api/prompts/agent/labels/staging", json={"version": 1}).status_code == 200


def test_push_get_render_label_diff(api):
    c, store, p = api
    r = c.post(
        "/api/prompts/agent/versions",
        json={"template": "Hi {{name}}", "message": "v1", "labels": ["production"]},
    )
    assert r.status_code == 201, r.text
    v1 = r.json()
    assert (v1["version"], v1["created"], v1["labels"], v1["variables"]) == (
        1,
        True,
        ["production"],
        ["name"],
    )
    assert v1["author"] == "key:ci"
    again = c.post("/api/prompts/agent/versions", json={"template": "Hi {{name}}"})
    assert (
        again.status_code == 200
        and again.json()["version"] == 1
        and again.json()["created"] is False
    )
    r = c.post(
        "/api/prompts/agent/versions",
        json={"template": "Hello {{name}}", "config": {"temperature": 0.1}},
    )
    assert r.json()["version"] == 2
    assert c.get("/api/prompts/agent", params={"label": "production"}).json()["version"] == 1
    assert c.get("/api/prompts/agent").json()["version"] == 2
    assert c.get("/api/prompts/agent/versions/1").json()["template"] == "Hi {{name}}"
    assert [v["version"] for v in c.get("/api/prompts/agent/versions").json()] == [1, 2]
    r = c.put("/api/prompts/agent/labels/production", json={"version": 2, "reason": "tone"})
    assert r.status_code == 200 and r.json()["version"] == 2 and r.json()["protected"]
    r = c.post(
        "/api/prompts/agent/render", json={"label": "production", "variables": {"name": "Bo"}}
    )
    assert r.json()["text"] == "Hello Bo" and r.json()["version"] == 2
    r = c.post("/api/prompts/agent/render", json={"variables": {"nme": "Bo"}})
    assert r.status_code == 400 and "missing name" in r.json()["error"]["message"]
    d = c.get("/api/prompts/agent/diff", params={"a": "1", "b": "production"}).json()
    assert d["b"] == 2 and d["config"] == [
        {"path": "temperature", "kind": "added", "before": None, "after": 0.1}
    ]
    r = c.post("/api/prompts/agent/labels/production/rollback", json={"reason": "bad"})
    assert r.json()["version"] == 1
    hist = c.get("/api/prompts/agent/labels/production/history").json()
    assert [(h["before"], h["after"], h["actor"]) for h in hist] == [
        (2, 1, "key:ci"),
        (1, 2, "key:ci"),
        (None, 1, "key:ci"),
    ]
    assert [x["name"] for x in c.get("/api/prompts").json()] == ["agent"]
    audit = store.projects.list_audit_events(p.id, subject="prompt:agent:label:production")
    assert audit[0].reason == "bad"


def test_includes_come_resolved(api):
    c, _, _ = api
    c.post(
        "/api/prompts/footer/versions", json={"template": "-- {{shop}}", "labels": ["production"]}
    )
    c.post("/api/prompts/mail/versions", json={"template": "Hi {{name}} {{> footer}}"})
    body = c.get("/api/prompts/mail").json()
    assert body["includes"]["footer@production"]["template"] == "-- {{shop}}"


def test_no_api_path_edits_a_stored_version(api):
    c, _, _ = api
    c.post("/api/prompts/agent/versions", json={"template": "Hi {{name}}"})
    for method in ("put", "patch", "delete"):
        for path in (
            "/api/prompts/agent/versions/1",
            "/api/prompts/agent",
            "/api/prompts/agent/versions",
        ):
            r = (
                getattr(c, method)(path, json={"template": "pwned"})
                if method != "delete"
                else c.delete(path)
            )
            assert r.status_code in (404, 405), (method, path, r.status_code)
    assert c.get("/api/prompts/agent/versions/1").json()["template"] == "Hi {{name}}"
    # the only mutating routes on versions are POST (create) and label moves
    app = c.app
    for route in app.routes:  # type: ignore[attr-defined]
        path = getattr(route, "path", "")
        if path.startswith(("/api/prompts", "/api/datasets")):
            methods = getattr(route, "methods", set())
            if "PUT" in methods or "PATCH" in methods or "DELETE" in methods:
                assert path == "/api/prompts/{name}/labels/{label}", path


@pytest.mark.parametrize(
    "body",
    [
        {"template": "{{ ''.__class__.__mro__[1].__subclasses__() }}"},
        {"template": "{{ ''.__class__.__mro__[1].__subclasses__() }}", "engine": "jinja"},
        {"template": "{{ cycler.__init__.__globals__.os.popen('id').read() }}", "engine": "jinja"},
        {"template": "{% include '/etc/passwd' %}", "engine": "jinja"},
    ],
)
def test_injection_payloads_fail_safely(api, body):
    c, _, _ = api
    r = c.post("/api/prompts/evil/versions", json=body)
    if r.status_code == 201:  # stored as data; rendering must still refuse
        r = c.post("/api/prompts/evil/render", json={"variables": {}})
    assert r.status_code == 400, r.text
    assert "root:" not in r.text and "uid=" not in r.text and "Traceback" not in r.text


def test_hostile_names_and_unknown_fields(api):
    c, _, _ = api
    assert (
        c.post("/api/prompts/agent/versions", json={"template": "x", "admin": True}).status_code
        == 400
    )
    for name in ["..", "a%00b", "x';DROP TABLE prompt_versions;--"]:
        r = c.post(f"/api/prompts/{name}/versions", json={"template": "x"})
        assert r.status_code in (400, 404), (name, r.status_code)
    assert c.get("/api/prompts/nope").status_code == 404
    assert c.get("/api/prompts/agent", params={"version": 1, "label": "x"}).status_code in (
        400,
        404,
    )
    assert c.get("/api/prompts", headers={"Authorization": "Bearer nope"}).status_code == 401


def test_other_projects_cannot_see_prompts(api):
    c, store, _ = api
    c.post("/api/prompts/agent/versions", json={"template": "x"})
    other = store.projects.add_project("other")
    _, secret = create_api_key(store, other, "o")
    h = {"Authorization": f"Bearer {secret}"}
    assert c.get("/api/prompts/agent", headers=h).status_code == 404
    assert c.get("/api/prompts", headers=h).json() == []


# -- webhooks --------------------------------------------------------------------------------


class _Receiver:
    def __init__(self, fail_first: int = 0) -> None:
        self.fail_first = fail_first
        self.calls: list[tuple[dict[str, str], bytes]] = []
        self.got = threading.Event()
        outer = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                outer.calls.append(({k.lower(): v for k, v in self.headers.items()}, body))
                if len(outer.calls) <= outer.fail_first:
                    self.send_response(503)
                    self.end_headers()
                    return
                self.send_response(204)
                self.end_headers()
                outer.got.set()

            def log_message(self, *a: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_signature_roundtrip_and_tamper():
    body = b'{"a":1}'
    header = sign("s3cret", body, 1_700_000_000)
    verify_signature("s3cret", body, header, now=1_700_000_010)
    for bad in [
        (b'{"a":2}', header),
        (body, header.replace("v1=", "v1=0")),
        (body, None),
        (body, "garbage"),
    ]:
        with pytest.raises(AuthenticationError):
            verify_signature("s3cret", bad[0], bad[1], now=1_700_000_010)
    with pytest.raises(AuthenticationError, match="too old"):
        verify_signature("s3cret", body, header, now=1_700_001_000)


def test_webhook_is_signed_retried_and_never_blocks(tmp_path):
    rx = _Receiver(fail_first=2)
    notifier = WebhookNotifier([WebhookEndpoint(rx.url, "whsec")], backoff_s=0.05)
    store = open_store(f"sqlite:///{tmp_path}/k.db")
    settings = Settings()
    app = create_app(settings, store)
    try:
        with TestClient(app) as c:
            app.state.keel.extras["prompt_registry"] = PromptRegistry(
                store, notifier=notifier, guards=[AllowAll()]
            )
            t0 = time.monotonic()
            r = c.post("/api/prompts/agent/versions", json={"template": "Hi {{name}}"})
            assert r.status_code == 201
            assert time.monotonic() - t0 < 1.0  # delivery (with its retries) is not on the request
            assert rx.got.wait(10)
        headers, body = rx.calls[-1]
        verify_signature("whsec", body, headers["x-keel-signature"])
        payload = json.loads(body)
        assert (
            payload["type"] == "prompt.version.created"
            and headers["x-keel-event"] == payload["type"]
        )
        assert payload["data"]["prompt"] == "agent" and payload["data"]["version"] == 1
        assert len(rx.calls) == 3 and notifier.stats.delivered == 1
        assert {h["x-keel-delivery"] for h, _ in rx.calls} == {payload["id"]}
    finally:
        notifier.close()
        rx.close()


def test_webhook_down_receiver_gives_up_and_drops_when_full():
    notifier = WebhookNotifier(
        [WebhookEndpoint("http://127.0.0.1:9/none", "k")],
        max_attempts=2,
        backoff_s=0.01,
        queue_size=1,
    )
    for i in range(5):
        notifier.notify("prompt.label.moved", {"i": i})
    assert notifier.flush(10)
    assert notifier.stats.failed >= 1 and notifier.stats.delivered == 0
    assert notifier.stats.failed + notifier.stats.dropped == 5
    notifier.close()


def test_webhooks_from_settings(monkeypatch):
    from keel.errors import ConfigError
    from keel.prompts.webhooks import notifier_from_settings

    monkeypatch.setenv("HOOK_SECRET", "abc")
    n = notifier_from_settings(
        {"webhooks": [{"url": "http://127.0.0.1:1/x", "secret": "env:HOOK_SECRET"}]}
    )
    assert n is not None and n.endpoints[0].secret == "abc"
    assert notifier_from_settings({}) is None
    with pytest.raises(ConfigError):
        notifier_from_settings({"webhooks": [{"url": "http://x"}]})
