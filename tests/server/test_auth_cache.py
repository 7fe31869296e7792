"""``Authenticator.cached``: the event loop's store-free answer, equal to ``authenticate``."""

from __future__ import annotations

import pytest

from keel.errors import AuthenticationError
from keel.server.auth import Authenticator, create_api_key
from keel.storage import open_store


@pytest.fixture
def store(tmp_path):
    s = open_store(f"sqlite:///{tmp_path / 'a.db'}")
    yield s
    s.close()


def test_cached_answers_only_after_a_store_lookup(store) -> None:
    proj = store.projects.add_project("p1")
    _, secret = create_api_key(store, proj, "k", scopes=["*"])
    auth = Authenticator(store=store, allow_open=False, ttl_s=60)
    bearer = f"Bearer {secret}"
    assert auth.cached(bearer) is None  # a miss: the caller must go to the store
    ctx = auth.authenticate(bearer)
    hit = auth.cached(bearer)
    assert hit is ctx and hit.project.id == proj.id
    assert auth.cached(None, secret) is ctx  # x-api-key form, same key
    auth.invalidate()
    assert auth.cached(bearer) is None


def test_cached_invalid_keys_and_bad_headers_raise(store) -> None:
    auth = Authenticator(store=store, allow_open=False, ttl_s=60)
    with pytest.raises(AuthenticationError):
        auth.cached("Basic abc")  # malformed: refused without the store
    assert auth.cached("Bearer nope") is None
    with pytest.raises(AuthenticationError):
        auth.authenticate("Bearer nope")
    with pytest.raises(AuthenticationError):
        auth.cached("Bearer nope")  # remembered as invalid


def test_cached_expires(store) -> None:
    proj = store.projects.add_project("p2")
    _, secret = create_api_key(store, proj, "k", scopes=["*"])
    auth = Authenticator(store=store, allow_open=False, ttl_s=0.0)
    auth.authenticate(f"Bearer {secret}")
    assert auth.cached(f"Bearer {secret}") is None  # expired at once: back to the store


def test_open_mode_is_cached_only_while_it_holds(store) -> None:
    auth = Authenticator(store=store, allow_open=True, ttl_s=60)
    assert auth.cached(None) is None  # the key count was never read
    ctx = auth.authenticate(None)
    assert ctx.open_mode
    hit = auth.cached(None)
    assert hit is not None and hit.open_mode and hit.project.id == ctx.project.id
    proj = store.projects.add_project("p3")
    create_api_key(store, proj, "k", scopes=["*"])
    auth.invalidate()  # as the server does after creating a key
    assert auth.cached(None) is None
    with pytest.raises(AuthenticationError):
        auth.authenticate(None)
    assert auth.cached(None) is None  # not open any more
    closed = Authenticator(store=store, allow_open=False)
    assert closed.cached(None) is None
    with pytest.raises(AuthenticationError):
        closed.authenticate(None)
