"""Contract for projects, API keys and the audit trail."""

from __future__ import annotations

from typing import Any, Protocol

from keel.core.projects import ApiKey, AuditEvent, Project


class ProjectStore(Protocol):
    """Projects, hashed API keys and audit events."""

    def add_project(self, name: str) -> Project:
        """Create a project; :class:`ConflictError` if the name is taken."""
        ...

    def get_project(self, project_id: str) -> Project:
        """By id; :class:`NotFoundError` if absent."""
        ...

    def find_project_by_name(self, name: str) -> Project | None:
        """By name, or None."""
        ...

    def list_projects(self) -> list[Project]:
        """All projects, oldest first."""
        ...

    def add_api_key(self, key: ApiKey) -> ApiKey:
        """Store a key (its hash, never the secret)."""
        ...

    def find_api_key_by_hash(self, key_hash: str) -> ApiKey | None:
        """The key with this hash, revoked or not, or None."""
        ...

    def list_api_keys(self, project_id: str | None = None) -> list[ApiKey]:
        """Keys of one project (or all), oldest first."""
        ...

    def revoke_api_key(self, key_id: str) -> ApiKey:
        """Mark a key revoked; :class:`NotFoundError` if absent."""
        ...

    def count_active_api_keys(self) -> int:
        """How many keys are not revoked (0 means dev mode may run open)."""
        ...

    def add_audit_event(self, event: AuditEvent) -> AuditEvent:
        """Append an audit event (never updated)."""
        ...

    def list_audit_events(
        self, project_id: str, *, subject: str | None = None, limit: int = 100
    ) -> list[AuditEvent]:
        """Newest first."""
        ...


def key_fields(key: ApiKey) -> dict[str, Any]:
    """Row form of an API key."""
    return key.model_dump()
