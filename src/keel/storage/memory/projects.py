"""In-memory projects, keys and audit events."""

from __future__ import annotations

import threading

from keel.core.clock import Clock
from keel.core.ids import new_id
from keel.core.names import validate_name
from keel.core.projects import ApiKey, AuditEvent, Project
from keel.errors import ConflictError, NotFoundError


class MemoryProjectStore:
    """Implements :class:`keel.storage.projects.ProjectStore` in memory."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._projects: dict[str, Project] = {}
        self._keys: dict[str, ApiKey] = {}
        self._audit: list[AuditEvent] = []

    def add_project(self, name: str) -> Project:
        validate_name(name, "project name")
        with self._lock:
            if any(p.name == name for p in self._projects.values()):
                raise ConflictError(f"project {name!r} already exists")
            p = Project(id=new_id("prj"), name=name, created_at=self._clock.now())
            self._projects[p.id] = p
            return p

    def get_project(self, project_id: str) -> Project:
        try:
            return self._projects[project_id]
        except KeyError:
            raise NotFoundError(f"project {project_id!r} not found")

    def find_project_by_name(self, name: str) -> Project | None:
        return next((p for p in self._projects.values() if p.name == name), None)

    def list_projects(self) -> list[Project]:
        return sorted(self._projects.values(), key=lambda p: (p.created_at, p.id))

    def add_api_key(self, key: ApiKey) -> ApiKey:
        validate_name(key.name, "key name")
        with self._lock:
            if key.project_id not in self._projects:
                raise NotFoundError(f"project {key.project_id!r} not found")
            if key.id in self._keys or any(k.key_hash == key.key_hash for k in self._keys.values()):
                raise ConflictError("API key already exists")
            self._keys[key.id] = key
            return key

    def find_api_key_by_hash(self, key_hash: str) -> ApiKey | None:
        return next((k for k in self._keys.values() if k.key_hash == key_hash), None)

    def list_api_keys(self, project_id: str | None = None) -> list[ApiKey]:
        keys = [k for k in self._keys.values() if project_id is None or k.project_id == project_id]
        return sorted(keys, key=lambda k: (k.created_at, k.id))

    def revoke_api_key(self, key_id: str) -> ApiKey:
        with self._lock:
            k = self._keys.get(key_id)
            if k is None:
                raise NotFoundError(f"API key {key_id!r} not found")
            if k.revoked_at is None:
                k = k.model_copy(update={"revoked_at": self._clock.now()})
                self._keys[key_id] = k
            return k

    def count_active_api_keys(self) -> int:
        return sum(1 for k in self._keys.values() if k.revoked_at is None)

    def add_audit_event(self, event: AuditEvent) -> AuditEvent:
        with self._lock:
            self._audit.append(event)
        return event

    def list_audit_events(
        self, project_id: str, *, subject: str | None = None, limit: int = 100
    ) -> list[AuditEvent]:
        evs = [
            e
            for e in self._audit
            if e.project_id == project_id and (subject is None or e.subject == subject)
        ]
        return list(reversed(evs))[:limit]
