"""SQL prompt versions and labels.

Versions are insert-only; content is stored as its canonical JSON, so what was hashed is what is
read back. Numbering per prompt is race-free: on Postgres a transaction-scoped advisory lock
keyed by (project, prompt) serializes pushes of one prompt; on SQLite writes are serialized by
``BEGIN IMMEDIATE``. Unique constraints on (prompt, version) and (prompt, content hash) back
this up, and a push that loses a race retries.
"""

from __future__ import annotations

from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from keel.core.clock import Clock
from keel.core.hashing import canonical_json
from keel.core.ids import new_id
from keel.core.names import validate_name
from keel.core.prompts import PROTECTED_BY_DEFAULT, PromptContent, PromptLabel, PromptVersion
from keel.errors import ConflictError, NotFoundError, StoreError
from keel.storage.sql.engine import Database, metadata
from keel.storage.sql.types import UtcDateTime

COMPONENT = "prompts"

prompt_versions = sa.Table(
    "prompt_versions",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("project_id", sa.String(40), nullable=False),
    sa.Column("name", sa.String(128), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("content", sa.Text, nullable=False),
    sa.Column("content_hash", sa.String(80), nullable=False),
    sa.Column("message", sa.Text, nullable=True),
    sa.Column("author", sa.String(200), nullable=True),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.UniqueConstraint("project_id", "name", "version", name="uq_prompt_versions_number"),
    sa.UniqueConstraint("project_id", "name", "content_hash", name="uq_prompt_versions_hash"),
)

prompt_labels = sa.Table(
    "prompt_labels",
    metadata,
    sa.Column("project_id", sa.String(40), primary_key=True),
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("label", sa.String(128), primary_key=True),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("protected", sa.Boolean, nullable=False),
    sa.Column("updated_at", UtcDateTime(), nullable=False),
)


def _v1(conn: Connection, dialect: str) -> None:
    metadata.create_all(conn, tables=[prompt_versions, prompt_labels])


MIGRATIONS = [_v1]

_RETRIES = 20


def _version_from_row(r: Any) -> PromptVersion:
    return PromptVersion(
        id=r.id,
        project_id=r.project_id,
        name=r.name,
        version=r.version,
        content=PromptContent.model_validate(orjson.loads(r.content)),
        content_hash=r.content_hash,
        message=r.message,
        author=r.author,
        created_at=r.created_at,
    )


def _label_from_row(r: Any) -> PromptLabel:
    return PromptLabel(
        project_id=r.project_id,
        prompt_name=r.name,
        label=r.label,
        version=r.version,
        protected=bool(r.protected),
        updated_at=r.updated_at,
    )


def lock_key(conn: Connection, db: Database, *parts: str) -> None:
    """Serialize writers on one key for the rest of the transaction (Postgres only)."""
    if not db.is_sqlite:
        conn.execute(
            sa.text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"),
            {"k": "\x1f".join(parts)},
        )


class SqlPromptStore:
    """Implements :class:`keel.storage.prompts.PromptStore` on SQL."""

    def __init__(self, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock

    def add_version(
        self,
        project_id: str,
        name: str,
        content: PromptContent,
        *,
        message: str | None = None,
        author: str | None = None,
    ) -> tuple[PromptVersion, bool]:
        validate_name(name, "prompt name")
        h = content.hash()
        body = canonical_json(content.model_dump(mode="json", by_alias=True)).decode("utf-8")
        for _ in range(_RETRIES):
            try:
                with self._db.write() as conn:
                    lock_key(conn, self._db, "prompt", project_id, name)
                    existing = conn.execute(
                        prompt_versions.select().where(
                            prompt_versions.c.project_id == project_id,
                            prompt_versions.c.name == name,
                            prompt_versions.c.content_hash == h,
                        )
                    ).first()
                    if existing is not None:
                        return _version_from_row(existing), False
                    top = conn.execute(
                        sa.select(sa.func.max(prompt_versions.c.version)).where(
                            prompt_versions.c.project_id == project_id,
                            prompt_versions.c.name == name,
                        )
                    ).scalar()
                    pv = PromptVersion(
                        id=new_id("pv"),
                        project_id=project_id,
                        name=name,
                        version=int(top or 0) + 1,
                        content=content,
                        content_hash=h,
                        message=message,
                        author=author,
                        created_at=self._clock.now(),
                    )
                    conn.execute(
                        prompt_versions.insert().values(
                            id=pv.id,
                            project_id=project_id,
                            name=name,
                            version=pv.version,
                            content=body,
                            content_hash=h,
                            message=message,
                            author=author,
                            created_at=pv.created_at,
                        )
                    )
                    return pv, True
            except ConflictError:
                continue  # lost a race for the number: read again and retry
        raise StoreError(f"could not number a new version of {name!r}: too much contention")

    def _one(self, where: list[Any]) -> Any:
        with self._db.read() as conn:
            return conn.execute(prompt_versions.select().where(*where)).first()

    def get_version(self, project_id: str, name: str, version: int) -> PromptVersion:
        r = self._one(
            [
                prompt_versions.c.project_id == project_id,
                prompt_versions.c.name == name,
                prompt_versions.c.version == version,
            ]
        )
        if r is None:
            if (
                self._one(
                    [prompt_versions.c.project_id == project_id, prompt_versions.c.name == name]
                )
                is None
            ):
                raise NotFoundError(f"prompt {name!r} not found")
            raise NotFoundError(f"prompt {name!r} has no version {version}")
        return _version_from_row(r)

    def find_version_by_hash(
        self, project_id: str, name: str, content_hash: str
    ) -> PromptVersion | None:
        r = self._one(
            [
                prompt_versions.c.project_id == project_id,
                prompt_versions.c.name == name,
                prompt_versions.c.content_hash == content_hash,
            ]
        )
        return _version_from_row(r) if r else None

    def get_latest_version(self, project_id: str, name: str) -> PromptVersion:
        with self._db.read() as conn:
            r = conn.execute(
                prompt_versions.select()
                .where(prompt_versions.c.project_id == project_id, prompt_versions.c.name == name)
                .order_by(prompt_versions.c.version.desc())
                .limit(1)
            ).first()
        if r is None:
            raise NotFoundError(f"prompt {name!r} not found")
        return _version_from_row(r)

    def list_versions(self, project_id: str, name: str) -> list[PromptVersion]:
        with self._db.read() as conn:
            rows = conn.execute(
                prompt_versions.select()
                .where(prompt_versions.c.project_id == project_id, prompt_versions.c.name == name)
                .order_by(prompt_versions.c.version)
            ).all()
        if not rows:
            raise NotFoundError(f"prompt {name!r} not found")
        return [_version_from_row(r) for r in rows]

    def list_prompts(self, project_id: str) -> list[PromptVersion]:
        top = (
            sa.select(prompt_versions.c.name, sa.func.max(prompt_versions.c.version).label("v"))
            .where(prompt_versions.c.project_id == project_id)
            .group_by(prompt_versions.c.name)
            .subquery()
        )
        q = (
            prompt_versions.select()
            .join(
                top,
                sa.and_(prompt_versions.c.name == top.c.name, prompt_versions.c.version == top.c.v),
            )
            .where(prompt_versions.c.project_id == project_id)
            .order_by(prompt_versions.c.name)
        )
        with self._db.read() as conn:
            return [_version_from_row(r) for r in conn.execute(q).all()]

    def put_label(
        self,
        project_id: str,
        name: str,
        label: str,
        version: int,
        *,
        expected_version: int | None = None,
        protected: bool | None = None,
    ) -> PromptLabel:
        validate_name(label, "label")
        self.get_version(project_id, name, version)
        key = sa.and_(
            prompt_labels.c.project_id == project_id,
            prompt_labels.c.name == name,
            prompt_labels.c.label == label,
        )
        now = self._clock.now()
        with self._db.write() as conn:
            lock_key(conn, self._db, "label", project_id, name, label)
            cur = conn.execute(prompt_labels.select().where(key)).first()
            if expected_version is not None:
                actual = cur.version if cur else 0
                if actual != expected_version:
                    raise ConflictError(
                        f"label {label!r} of {name!r} moved concurrently "
                        f"(expected version {expected_version}, found {actual})",
                        hint="read the label again and retry",
                    )
            if protected is None:
                protected = bool(cur.protected) if cur else label in PROTECTED_BY_DEFAULT
            values = {"version": version, "protected": protected, "updated_at": now}
            if cur is None:
                conn.execute(
                    prompt_labels.insert().values(
                        project_id=project_id, name=name, label=label, **values
                    )
                )
            else:
                conn.execute(prompt_labels.update().where(key).values(**values))
        return PromptLabel(
            project_id=project_id,
            prompt_name=name,
            label=label,
            version=version,
            protected=protected,
            updated_at=now,
        )

    def find_label(self, project_id: str, name: str, label: str) -> PromptLabel | None:
        with self._db.read() as conn:
            r = conn.execute(
                prompt_labels.select().where(
                    prompt_labels.c.project_id == project_id,
                    prompt_labels.c.name == name,
                    prompt_labels.c.label == label,
                )
            ).first()
        return _label_from_row(r) if r else None

    def list_labels(self, project_id: str, name: str | None = None) -> list[PromptLabel]:
        q = prompt_labels.select().where(prompt_labels.c.project_id == project_id)
        if name is not None:
            q = q.where(prompt_labels.c.name == name)
        with self._db.read() as conn:
            rows = conn.execute(q.order_by(prompt_labels.c.name, prompt_labels.c.label)).all()
        return [_label_from_row(r) for r in rows]
