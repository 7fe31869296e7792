"""SQL projects, API keys and audit events."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from keel.core.clock import Clock
from keel.core.ids import new_id
from keel.core.names import validate_name
from keel.core.projects import ApiKey, AuditEvent, Project
from keel.errors import ConflictError, NotFoundError
from keel.storage.sql.engine import Database, metadata
from keel.storage.sql.types import Json, UtcDateTime

COMPONENT = "projects"

projects = sa.Table(
    "projects",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("name", sa.String(128), nullable=False, unique=True),
    sa.Column("created_at", UtcDateTime(), nullable=False),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column(
        "project_id", sa.String(40), sa.ForeignKey("projects.id"), nullable=False, index=True
    ),
    sa.Column("name", sa.String(128), nullable=False),
    sa.Column("prefix", sa.String(32), nullable=False),
    sa.Column("key_hash", sa.String(80), nullable=False, unique=True),
    sa.Column("data", Json, nullable=False),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("revoked_at", UtcDateTime(), nullable=True),
)

audit_events = sa.Table(
    "audit_events",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("project_id", sa.String(40), nullable=False),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("action", sa.String(100), nullable=False),
    sa.Column("subject", sa.String(300), nullable=False),
    sa.Column("data", Json, nullable=False),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Index("ix_audit_project_subject", "project_id", "subject", "created_at"),
)


def _v1(conn: Connection, dialect: str) -> None:
    metadata.create_all(conn, tables=[projects, api_keys, audit_events])


MIGRATIONS = [_v1]

_KEY_DATA = (
    "scopes",
    "allowed_routes",
    "allowed_models",
    "rpm_limit",
    "tpm_limit",
    "budget_usd_day",
    "budget_usd_month",
)


def _key_from_row(r: Any) -> ApiKey:
    return ApiKey(
        id=r.id,
        project_id=r.project_id,
        name=r.name,
        prefix=r.prefix,
        key_hash=r.key_hash,
        created_at=r.created_at,
        revoked_at=r.revoked_at,
        **(r.data or {}),
    )


class SqlProjectStore:
    """Implements :class:`keel.storage.projects.ProjectStore` on SQL."""

    def __init__(self, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock

    def add_project(self, name: str) -> Project:
        validate_name(name, "project name")
        p = Project(id=new_id("prj"), name=name, created_at=self._clock.now())
        try:
            with self._db.write() as conn:
                conn.execute(projects.insert().values(**p.model_dump()))
        except ConflictError:
            raise ConflictError(f"project {name!r} already exists")
        return p

    def get_project(self, project_id: str) -> Project:
        with self._db.read() as conn:
            r = conn.execute(projects.select().where(projects.c.id == project_id)).first()
        if r is None:
            raise NotFoundError(f"project {project_id!r} not found")
        return Project.model_validate(r._asdict())

    def find_project_by_name(self, name: str) -> Project | None:
        with self._db.read() as conn:
            r = conn.execute(projects.select().where(projects.c.name == name)).first()
        return Project.model_validate(r._asdict()) if r else None

    def list_projects(self) -> list[Project]:
        with self._db.read() as conn:
            rows = conn.execute(
                projects.select().order_by(projects.c.created_at, projects.c.id)
            ).all()
        return [Project.model_validate(r._asdict()) for r in rows]

    def add_api_key(self, key: ApiKey) -> ApiKey:
        validate_name(key.name, "key name")
        data = {k: getattr(key, k) for k in _KEY_DATA}
        with self._db.write() as conn:
            if (
                conn.execute(
                    sa.select(projects.c.id).where(projects.c.id == key.project_id)
                ).first()
                is None
            ):
                raise NotFoundError(f"project {key.project_id!r} not found")
            conn.execute(
                api_keys.insert().values(
                    id=key.id,
                    project_id=key.project_id,
                    name=key.name,
                    prefix=key.prefix,
                    key_hash=key.key_hash,
                    data=data,
                    created_at=key.created_at,
                    revoked_at=key.revoked_at,
                )
            )
        return key

    def find_api_key_by_hash(self, key_hash: str) -> ApiKey | None:
        with self._db.read() as conn:
            r = conn.execute(api_keys.select().where(api_keys.c.key_hash == key_hash)).first()
        return _key_from_row(r) if r else None

    def list_api_keys(self, project_id: str | None = None) -> list[ApiKey]:
        q = api_keys.select().order_by(api_keys.c.created_at, api_keys.c.id)
        if project_id is not None:
            q = q.where(api_keys.c.project_id == project_id)
        with self._db.read() as conn:
            return [_key_from_row(r) for r in conn.execute(q).all()]

    def revoke_api_key(self, key_id: str) -> ApiKey:
        with self._db.write() as conn:
            r = conn.execute(api_keys.select().where(api_keys.c.id == key_id)).first()
            if r is None:
                raise NotFoundError(f"API key {key_id!r} not found")
            if r.revoked_at is None:
                conn.execute(
                    api_keys.update()
                    .where(api_keys.c.id == key_id)
                    .values(revoked_at=self._clock.now())
                )
                r = conn.execute(api_keys.select().where(api_keys.c.id == key_id)).first()
        return _key_from_row(r)

    def count_active_api_keys(self) -> int:
        with self._db.read() as conn:
            return int(
                conn.execute(
                    sa.select(sa.func.count())
                    .select_from(api_keys)
                    .where(api_keys.c.revoked_at.is_(None))
                ).scalar_one()
            )

    def add_audit_event(self, event: AuditEvent) -> AuditEvent:
        data = event.model_dump(mode="json", include={"before", "after", "reason", "evidence"})
        with self._db.write() as conn:
            conn.execute(
                audit_events.insert().values(
                    id=event.id,
                    project_id=event.project_id,
                    actor=event.actor,
                    action=event.action,
                    subject=event.subject,
                    data=data,
                    created_at=event.created_at,
                )
            )
        return event

    def list_audit_events(
        self, project_id: str, *, subject: str | None = None, limit: int = 100
    ) -> list[AuditEvent]:
        q = audit_events.select().where(audit_events.c.project_id == project_id)
        if subject is not None:
            q = q.where(audit_events.c.subject == subject)
        q = q.order_by(audit_events.c.created_at.desc(), audit_events.c.id.desc()).limit(limit)
        with self._db.read() as conn:
            rows = conn.execute(q).all()
        return [
            AuditEvent(
                id=r.id,
                project_id=r.project_id,
                actor=r.actor,
                action=r.action,
                subject=r.subject,
                created_at=r.created_at,
                **(r.data or {}),
            )
            for r in rows
        ]
