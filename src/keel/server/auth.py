"""API-key authentication: project-scoped bearer keys, stored hashed, looked up with a cache.

Dev mode: on a loopback bind with no active key, requests run open as the ``default`` project
(announced at start). As soon as one key exists, every route but health needs a key.
"""

from __future__ import annotations

import ipaddress
import threading
import time
from dataclasses import dataclass, field

from keel.core.ids import new_id
from keel.core.projects import ApiKey, Project, generate_api_key_secret, hash_api_key
from keel.errors import AuthenticationError, ConflictError, PermissionDeniedError
from keel.storage.base import Store

DEFAULT_PROJECT = "default"


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost."""
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class AuthContext:
    """Who is calling: the project, and the key (None in open dev mode)."""

    project: Project
    key: ApiKey | None
    open_mode: bool = False

    @property
    def project_id(self) -> str:
        """The caller's project id."""
        return self.project.id

    @property
    def actor(self) -> str:
        """Name for audit events."""
        return f"key:{self.key.name}" if self.key else "dev-mode"

    def require_scope(self, scope: str) -> None:
        """Raise 403 unless the key has ``scope`` (or ``*``)."""
        if self.key is None:
            return
        if "*" not in self.key.scopes and scope not in self.key.scopes:
            raise PermissionDeniedError(f"this key lacks the '{scope}' scope")


@dataclass
class _Cached:
    ctx: AuthContext | None
    expires: float


@dataclass
class Authenticator:
    """Resolves ``Authorization`` headers to an :class:`AuthContext`, with a short cache."""

    store: Store
    allow_open: bool
    ttl_s: float = 5.0
    _cache: dict[str, _Cached] = field(default_factory=dict)
    _open_until: float = 0.0
    _open: bool = False
    _default: _Cached | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def open_mode(self) -> bool:
        """Whether requests without a key are accepted right now."""
        if not self.allow_open:
            return False
        now = time.monotonic()
        if now >= self._open_until:
            self._open = self.store.projects.count_active_api_keys() == 0
            self._open_until = now + 1.0
        return self._open

    def invalidate(self) -> None:
        """Drop cached lookups (after a key is created or revoked)."""
        with self._lock:
            self._cache.clear()
            self._open_until = 0.0
            self._default = None

    def default_project(self) -> Project:
        """The project used in open dev mode (looked up at most once per ``ttl_s``)."""
        now = time.monotonic()
        d = self._default
        if d is not None and d.expires > now and d.ctx is not None:
            return d.ctx.project
        p = self.store.projects.find_project_by_name(DEFAULT_PROJECT)
        if p is None:
            try:
                p = self.store.projects.add_project(DEFAULT_PROJECT)
            except ConflictError:
                p = self.store.projects.find_project_by_name(DEFAULT_PROJECT)
        assert p is not None
        self._default = _Cached(AuthContext(p, None, open_mode=True), now + self.ttl_s)
        return p

    @staticmethod
    def _secret(authorization: str | None, x_api_key: str | None) -> str | None:
        if authorization:
            scheme, _, value = authorization.partition(" ")
            if scheme.lower() != "bearer" or not value.strip():
                raise AuthenticationError("Authorization header must be 'Bearer <key>'")
            return value.strip()
        if x_api_key:
            return x_api_key.strip()
        return None

    def cached(self, authorization: str | None, x_api_key: str | None = None) -> AuthContext | None:
        """:meth:`authenticate` answered from memory alone, or None when that needs the store.

        Never blocks on I/O, so async handlers call it on the event loop and go to a thread
        only on a miss (a new key, an expired entry, dev mode's periodic key count)."""
        secret = self._secret(authorization, x_api_key)
        now = time.monotonic()
        if secret is None:
            if not self.allow_open or now >= self._open_until:
                return None  # let authenticate() decide (it may need the store)
            if not self._open:
                return None
            d = self._default
            if d is None or d.expires <= now or d.ctx is None:
                return None
            return AuthContext(d.ctx.project, None, open_mode=True)
        cached = self._cache.get(secret)
        if cached is None or cached.expires <= now:
            return None
        if cached.ctx is None:
            raise AuthenticationError("invalid API key")
        return cached.ctx

    def authenticate(self, authorization: str | None, x_api_key: str | None = None) -> AuthContext:
        """Check the header; raise :class:`AuthenticationError` when it does not hold."""
        secret = self._secret(authorization, x_api_key)
        if secret is None:
            if self.open_mode():
                return AuthContext(self.default_project(), None, open_mode=True)
            raise AuthenticationError(
                "missing API key",
                hint="send 'Authorization: Bearer <key>'; create one with `keel keys create`",
            )
        now = time.monotonic()
        cached = self._cache.get(secret)
        if cached is not None and cached.expires > now:
            if cached.ctx is None:
                raise AuthenticationError("invalid API key")
            return cached.ctx
        key = self.store.projects.find_api_key_by_hash(hash_api_key(secret))
        ctx = None
        if key is not None and key.revoked_at is None:
            ctx = AuthContext(self.store.projects.get_project(key.project_id), key)
        with self._lock:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[secret] = _Cached(ctx, now + self.ttl_s)
        if ctx is None:
            raise AuthenticationError(
                "invalid or revoked API key", hint="create a new one with `keel keys create`"
            )
        return ctx


def create_api_key(
    store: Store,
    project: Project,
    name: str = "default",
    *,
    scopes: list[str] | None = None,
    **limits: object,
) -> tuple[ApiKey, str]:
    """Create a key for ``project``; returns the stored key and the secret (shown once)."""
    secret = generate_api_key_secret()
    key = ApiKey(
        id=new_id("key"),
        project_id=project.id,
        name=name,
        prefix=secret[:12],
        key_hash=hash_api_key(secret),
        scopes=scopes or ["*"],
        created_at=store.clock.now(),
        **limits,  # type: ignore[arg-type]
    )
    return store.projects.add_api_key(key), secret
