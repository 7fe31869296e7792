"""Projects and API keys over REST."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field

from keel.core.names import validate_name
from keel.errors import NotFoundError
from keel.server.auth import AuthContext, create_api_key
from keel.server.deps import AppContext, get_context, require_auth

router = APIRouter(prefix="/api", tags=["projects"])


class ProjectOut(BaseModel):
    """A project as the API shows it."""

    id: str
    name: str
    created_at: datetime


class KeyOut(BaseModel):
    """An API key as the API shows it (never the secret, except once on creation)."""

    id: str
    project_id: str
    name: str
    prefix: str
    scopes: list[str]
    created_at: datetime
    revoked_at: datetime | None = None
    secret: str | None = None


class KeyIn(BaseModel):
    """Request to create a key in the caller's project."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=128)
    scopes: list[str] = Field(default_factory=lambda: ["*"])
    allowed_routes: list[str] | None = None
    allowed_models: list[str] | None = None
    rpm_limit: int | None = Field(None, ge=1)
    tpm_limit: int | None = Field(None, ge=1)
    budget_usd_day: float | None = Field(None, ge=0)
    budget_usd_month: float | None = Field(None, ge=0)


class ProjectsPage(BaseModel):
    """The projects this key can see (a key is scoped to exactly one)."""

    data: list[ProjectOut]


@router.get("/projects", response_model=ProjectsPage, summary="The caller's project")
def list_projects(auth: AuthContext = Depends(require_auth)) -> ProjectsPage:
    """A key sees its own project; dev mode sees the default project."""
    return ProjectsPage(data=[ProjectOut.model_validate(auth.project.model_dump())])


@router.get("/keys", response_model=list[KeyOut], summary="Keys of the caller's project")
def list_keys(
    auth: AuthContext = Depends(require_auth), ctx: AppContext = Depends(get_context)
) -> list[KeyOut]:
    """Every key of the project, revoked ones included."""
    auth.require_scope("keys")
    return [
        KeyOut.model_validate(k.model_dump())
        for k in ctx.store.projects.list_api_keys(auth.project_id)
    ]


@router.post("/keys", response_model=KeyOut, status_code=201, summary="Create a key")
def create_key(
    body: KeyIn, auth: AuthContext = Depends(require_auth), ctx: AppContext = Depends(get_context)
) -> KeyOut:
    """Create a key in the caller's project; the secret is in this response only."""
    auth.require_scope("keys")
    validate_name(body.name, "key name")
    key, secret = create_api_key(
        ctx.store, auth.project, body.name, **body.model_dump(exclude={"name"})
    )
    ctx.auth.invalidate()
    return KeyOut.model_validate({**key.model_dump(), "secret": secret})


@router.delete("/keys/{key_id}", response_model=KeyOut, summary="Revoke a key")
def revoke_key(
    key_id: str, auth: AuthContext = Depends(require_auth), ctx: AppContext = Depends(get_context)
) -> KeyOut:
    """Revoke a key of the caller's project."""
    auth.require_scope("keys")
    keys = {k.id: k for k in ctx.store.projects.list_api_keys(auth.project_id)}
    if key_id not in keys:
        raise NotFoundError(f"API key {key_id!r} not found in this project")
    k = ctx.store.projects.revoke_api_key(key_id)
    ctx.auth.invalidate()
    return KeyOut.model_validate(k.model_dump())
