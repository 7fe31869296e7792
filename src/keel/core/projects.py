"""Projects, their API keys and the audit trail."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field


class Project(BaseModel):
    """A tenant: everything stored belongs to exactly one project."""

    id: str
    name: str
    created_at: datetime


class ApiKey(BaseModel):
    """A project-scoped API key. Only its hash is stored; the secret is shown once."""

    id: str
    project_id: str
    name: str
    prefix: str = Field(description="first characters of the key, for recognising it in lists")
    key_hash: str
    scopes: list[str] = Field(default_factory=lambda: ["*"])
    allowed_routes: list[str] | None = None
    allowed_models: list[str] | None = None
    rpm_limit: int | None = None
    tpm_limit: int | None = None
    budget_usd_day: float | None = None
    budget_usd_month: float | None = None
    created_at: datetime
    revoked_at: datetime | None = None


class AuditEvent(BaseModel):
    """Who did what, when, from what to what, and why — linked to its evidence."""

    id: str
    project_id: str
    actor: str
    action: str
    subject: str
    before: Any = None
    after: Any = None
    reason: str | None = None
    evidence: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime


KEY_PREFIX = "keel_sk_"


def generate_api_key_secret() -> str:
    """A new random key secret (``keel_sk_`` + 43 URL-safe characters, 256 bits)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_api_key(secret: str) -> str:
    """The stored form of a key. Keys are 256-bit random, so a plain SHA-256 is enough."""
    return "sha256:" + hashlib.sha256(secret.encode("utf-8")).hexdigest()
