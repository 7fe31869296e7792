"""The prompt registry over REST (``/api/prompts``).

Versions are append-only: the API can create (``POST``) and read them, never change or delete
one. Labels move with ``PUT``; every move goes through the label guards and is audited.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from keel.core.prompts import PromptContent, PromptLabel, PromptMessage, PromptVersion
from keel.errors import InvalidInputError
from keel.prompts.registry import PromptRegistry
from keel.prompts.webhooks import notifier_from_settings
from keel.server.auth import AuthContext
from keel.server.deps import AppContext, get_context, require_auth

router = APIRouter(prefix="/api/prompts", tags=["prompts"])

_KEY = "prompt_registry"
MAX_INT = 2_147_483_647


async def startup(ctx: AppContext) -> None:
    """Create the registry (with the configured webhooks)."""
    ctx.extras[_KEY] = PromptRegistry(
        ctx.store, notifier=notifier_from_settings(ctx.settings.prompts)
    )


async def shutdown(ctx: AppContext) -> None:
    """Deliver queued webhooks, then stop their thread."""
    reg: PromptRegistry | None = ctx.extras.pop(_KEY, None)
    if reg is not None and reg.notifier is not None:
        reg.notifier.close()


def registry(ctx: AppContext = Depends(get_context)) -> PromptRegistry:
    """The app's prompt registry."""
    reg = ctx.extras.get(_KEY)
    if reg is None:
        reg = ctx.extras[_KEY] = PromptRegistry(
            ctx.store, notifier=notifier_from_settings(ctx.settings.prompts)
        )
    return reg  # type: ignore[no-any-return]


class PromptIn(BaseModel):
    """A new version of a prompt."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["text", "chat"] | None = None
    template: str | None = Field(None, max_length=1_000_000)
    messages: list[PromptMessage] = Field(default_factory=list, max_length=1000)
    engine: Literal["mustache", "jinja"] = "mustache"
    config: dict[str, Any] = Field(default_factory=dict)
    variables_schema: dict[str, Any] = Field(default_factory=dict)
    message: str | None = Field(None, max_length=10_000)
    labels: list[str] = Field(default_factory=list, max_length=20)

    def content(self) -> PromptContent:
        """The hashed part."""
        return PromptContent.model_validate(
            {
                "type": self.type or ("chat" if self.messages else "text"),
                "template": self.template,
                "messages": self.messages,
                "engine": self.engine,
                "model_config": self.config,
                "variables_schema": self.variables_schema,
            }
        )


class VersionOut(BaseModel):
    """A stored prompt version."""

    name: str
    version: int
    type: str
    engine: str
    template: str | None
    messages: list[PromptMessage]
    config: dict[str, Any]
    variables_schema: dict[str, Any]
    variables: list[str]
    content_hash: str
    message: str | None
    author: str | None
    created_at: datetime
    labels: list[str] = Field(default_factory=list)
    label: str | None = Field(None, description="the label this version was resolved through")
    created: bool | None = None
    includes: dict[str, VersionOut] = Field(
        default_factory=dict, description="prompts included by reference, resolved"
    )


class LabelOut(BaseModel):
    """A label and the version it points at."""

    prompt: str
    label: str
    version: int
    protected: bool
    updated_at: datetime


class LabelMoveIn(BaseModel):
    """Move a label."""

    model_config = ConfigDict(extra="forbid")

    version: int = Field(ge=1, le=MAX_INT)
    reason: str | None = Field(None, max_length=2000)
    protected: bool | None = None


class RollbackIn(BaseModel):
    """Move a label back (to ``to``, or to where it was before its last move)."""

    model_config = ConfigDict(extra="forbid")

    to: int | None = Field(None, ge=1, le=MAX_INT)
    reason: str | None = Field(None, max_length=2000)


class RenderIn(BaseModel):
    """Render a version with variables."""

    model_config = ConfigDict(extra="forbid")

    version: int | None = Field(None, ge=1, le=MAX_INT)
    label: str | None = None
    variables: dict[str, Any] = Field(default_factory=dict)


class RenderOut(BaseModel):
    """A rendered prompt."""

    name: str
    version: int
    label: str | None
    content_hash: str
    type: str
    text: str | None = None
    messages: list[dict[str, str]] | None = None


class HistoryOut(BaseModel):
    """One move of a label (from the audit trail)."""

    actor: str
    action: str
    before: int | None
    after: int | None
    reason: str | None
    created_at: datetime


def _labels_of(reg: PromptRegistry, pid: str, name: str) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for lab in reg.store.prompts.list_labels(pid, name):
        out.setdefault(lab.version, []).append(lab.label)
    return out


def version_out(pv: PromptVersion, labels: list[str] | None = None, **extra: Any) -> VersionOut:
    """API form of a version."""
    from keel.prompts.template import own_variables

    c = pv.content
    return VersionOut(
        name=pv.name,
        version=pv.version,
        type=c.type,
        engine=c.engine,
        template=c.template,
        messages=list(c.messages),
        config=c.model_config_,
        variables_schema=c.variables_schema,
        variables=sorted(own_variables(c)),
        content_hash=pv.content_hash,
        message=pv.message,
        author=pv.author,
        created_at=pv.created_at,
        labels=sorted(labels or []),
        **extra,
    )


def _label_out(lab: PromptLabel) -> LabelOut:
    return LabelOut(
        prompt=lab.prompt_name,
        label=lab.label,
        version=lab.version,
        protected=lab.protected,
        updated_at=lab.updated_at,
    )


@router.get("", response_model=list[VersionOut], summary="Prompts (latest version of each)")
def list_prompts(
    auth: AuthContext = Depends(require_auth), reg: PromptRegistry = Depends(registry)
) -> list[VersionOut]:
    """Every prompt of the project with its latest version and its labels."""
    labels: dict[tuple[str, int], list[str]] = {}
    for lab in reg.store.prompts.list_labels(auth.project_id):
        labels.setdefault((lab.prompt_name, lab.version), []).append(lab.label)
    return [
        version_out(pv, labels.get((pv.name, pv.version), []))
        for pv in reg.store.prompts.list_prompts(auth.project_id)
    ]


@router.post(
    "/{name}/versions",
    response_model=VersionOut,
    status_code=201,
    summary="Push a version (identical content returns the stored one, with 200)",
)
def push_version(
    name: str,
    body: PromptIn,
    response: Response,
    auth: AuthContext = Depends(require_auth),
    reg: PromptRegistry = Depends(registry),
) -> VersionOut:
    """Create a version; ``labels`` are then moved to it (through the guards)."""
    auth.require_scope("prompts")
    pv, created = reg.push(
        auth.project_id, name, body.content(), message=body.message, author=auth.actor
    )
    for label in body.labels:
        reg.move_label(
            auth.project_id, name, label, pv.version, actor=auth.actor, reason=body.message
        )
    if not created:
        response.status_code = 200
    return version_out(pv, _labels_of(reg, auth.project_id, name).get(pv.version), created=created)


@router.get("/{name}", response_model=VersionOut, summary="A version by number or label")
def get_prompt(
    name: str,
    version: int | None = Query(None, ge=1, le=MAX_INT),
    label: str | None = Query(None, max_length=128),
    auth: AuthContext = Depends(require_auth),
    reg: PromptRegistry = Depends(registry),
) -> VersionOut:
    """By ``version``, by ``label``, else the latest; included prompts come resolved."""
    res = reg.get(auth.project_id, name, version=version, label=label)
    inc = {
        ref: version_out(pv)
        for ref, pv in reg.includes(auth.project_id, res.version.content).items()
    }
    labels = _labels_of(reg, auth.project_id, name).get(res.version.version)
    return version_out(res.version, labels, label=res.label, includes=inc)


@router.get("/{name}/versions", response_model=list[VersionOut], summary="Every version")
def list_versions(
    name: str, auth: AuthContext = Depends(require_auth), reg: PromptRegistry = Depends(registry)
) -> list[VersionOut]:
    """Oldest first."""
    labels = _labels_of(reg, auth.project_id, name)
    return [
        version_out(pv, labels.get(pv.version))
        for pv in reg.store.prompts.list_versions(auth.project_id, name)
    ]


@router.get("/{name}/versions/{version}", response_model=VersionOut, summary="One version")
def get_version(
    name: str,
    version: int = Path(ge=1, le=MAX_INT),
    auth: AuthContext = Depends(require_auth),
    reg: PromptRegistry = Depends(registry),
) -> VersionOut:
    """One version by number."""
    pv = reg.store.prompts.get_version(auth.project_id, name, version)
    return version_out(pv, _labels_of(reg, auth.project_id, name).get(version))


@router.get("/{name}/labels", response_model=list[LabelOut], summary="Labels of a prompt")
def list_labels(
    name: str, auth: AuthContext = Depends(require_auth), reg: PromptRegistry = Depends(registry)
) -> list[LabelOut]:
    """Every label and where it points."""
    return [_label_out(x) for x in reg.store.prompts.list_labels(auth.project_id, name)]


@router.put("/{name}/labels/{label}", response_model=LabelOut, summary="Move a label")
def move_label(
    name: str,
    label: str,
    body: LabelMoveIn,
    auth: AuthContext = Depends(require_auth),
    reg: PromptRegistry = Depends(registry),
) -> LabelOut:
    """Point the label at a version; protected labels need the guards' consent."""
    auth.require_scope("prompts")
    lab = reg.move_label(
        auth.project_id,
        name,
        label,
        body.version,
        actor=auth.actor,
        reason=body.reason,
        protected=body.protected,
    )
    return _label_out(lab)


@router.post(
    "/{name}/labels/{label}/rollback", response_model=LabelOut, summary="Move a label back"
)
def rollback_label(
    name: str,
    label: str,
    body: RollbackIn,
    auth: AuthContext = Depends(require_auth),
    reg: PromptRegistry = Depends(registry),
) -> LabelOut:
    """Back to ``to``, or to the version before the label's last move."""
    auth.require_scope("prompts")
    return _label_out(
        reg.rollback(auth.project_id, name, label, actor=auth.actor, reason=body.reason, to=body.to)
    )


@router.get(
    "/{name}/labels/{label}/history", response_model=list[HistoryOut], summary="Label moves"
)
def label_history(
    name: str,
    label: str,
    limit: int = Query(100, ge=1, le=1000),
    auth: AuthContext = Depends(require_auth),
    reg: PromptRegistry = Depends(registry),
) -> list[HistoryOut]:
    """Moves of a label, newest first: who, when, from, to, why."""
    return [
        HistoryOut(
            actor=e.actor,
            action=e.action,
            before=e.before,
            after=e.after,
            reason=e.reason,
            created_at=e.created_at,
        )
        for e in reg.label_history(auth.project_id, name, label, limit=limit)
    ]


@router.get("/{name}/diff", summary="Diff two versions (template and config)")
def diff(
    name: str,
    a: str = Query(..., max_length=140, description="version number or label"),
    b: str = Query(..., max_length=140, description="version number or label"),
    auth: AuthContext = Depends(require_auth),
    reg: PromptRegistry = Depends(registry),
) -> dict[str, Any]:
    """JSON diff between ``name@a`` and ``name@b``."""
    if "@" in a or "@" in b:
        raise InvalidInputError("a and b are version numbers or labels of this prompt")
    return reg.diff(auth.project_id, f"{name}@{a}", f"{name}@{b}").to_json()


@router.post("/{name}/render", response_model=RenderOut, summary="Render with variables")
def render(
    name: str,
    body: RenderIn,
    auth: AuthContext = Depends(require_auth),
    reg: PromptRegistry = Depends(registry),
) -> RenderOut:
    """Render a version (by number, label, or the latest); variables must match exactly."""
    if body.version is not None and body.label is not None:
        raise InvalidInputError("give a version or a label, not both")
    ref = f"{name}@{body.version or body.label or 'latest'}"
    res, out = reg.render(auth.project_id, ref, body.variables)
    pv = res.version
    return RenderOut(
        name=pv.name,
        version=pv.version,
        label=res.label,
        content_hash=pv.content_hash,
        type=pv.content.type,
        text=out if isinstance(out, str) else None,
        messages=out if isinstance(out, list) else None,
    )
