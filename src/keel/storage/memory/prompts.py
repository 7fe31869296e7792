"""In-memory prompt versions and labels."""

from __future__ import annotations

import threading

from keel.core.clock import Clock
from keel.core.ids import new_id
from keel.core.names import validate_name
from keel.core.prompts import PROTECTED_BY_DEFAULT, PromptContent, PromptLabel, PromptVersion
from keel.errors import ConflictError, NotFoundError


class MemoryPromptStore:
    """Implements :class:`keel.storage.prompts.PromptStore` in memory."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._versions: dict[tuple[str, str], list[PromptVersion]] = {}
        self._labels: dict[tuple[str, str, str], PromptLabel] = {}

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
        with self._lock:
            versions = self._versions.setdefault((project_id, name), [])
            for v in versions:
                if v.content_hash == h:
                    return v, False
            pv = PromptVersion(
                id=new_id("pv"),
                project_id=project_id,
                name=name,
                version=len(versions) + 1,
                content=content,
                content_hash=h,
                message=message,
                author=author,
                created_at=self._clock.now(),
            )
            versions.append(pv)
            return pv, True

    def _all(self, project_id: str, name: str) -> list[PromptVersion]:
        vs = self._versions.get((project_id, name))
        if not vs:
            raise NotFoundError(f"prompt {name!r} not found")
        return vs

    def get_version(self, project_id: str, name: str, version: int) -> PromptVersion:
        vs = self._all(project_id, name)
        if not 1 <= version <= len(vs):
            raise NotFoundError(f"prompt {name!r} has no version {version}")
        return vs[version - 1]

    def find_version_by_hash(
        self, project_id: str, name: str, content_hash: str
    ) -> PromptVersion | None:
        return next(
            (
                v
                for v in self._versions.get((project_id, name), [])
                if v.content_hash == content_hash
            ),
            None,
        )

    def get_latest_version(self, project_id: str, name: str) -> PromptVersion:
        return self._all(project_id, name)[-1]

    def list_versions(self, project_id: str, name: str) -> list[PromptVersion]:
        return list(self._all(project_id, name))

    def list_prompts(self, project_id: str) -> list[PromptVersion]:
        return [
            vs[-1] for (pid, _), vs in sorted(self._versions.items()) if pid == project_id and vs
        ]

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
        with self._lock:
            self.get_version(project_id, name, version)
            key = (project_id, name, label)
            cur = self._labels.get(key)
            if expected_version is not None:
                actual = cur.version if cur else 0
                if actual != expected_version:
                    raise ConflictError(
                        f"label {label!r} of {name!r} moved concurrently "
                        f"(expected version {expected_version}, found {actual})",
                        hint="read the label again and retry",
                    )
            if protected is None:
                protected = cur.protected if cur else label in PROTECTED_BY_DEFAULT
            lab = PromptLabel(
                project_id=project_id,
                prompt_name=name,
                label=label,
                version=version,
                protected=protected,
                updated_at=self._clock.now(),
            )
            self._labels[key] = lab
            return lab

    def find_label(self, project_id: str, name: str, label: str) -> PromptLabel | None:
        return self._labels.get((project_id, name, label))

    def list_labels(self, project_id: str, name: str | None = None) -> list[PromptLabel]:
        return [
            lab
            for (pid, n, _), lab in sorted(self._labels.items())
            if pid == project_id and (name is None or n == name)
        ]
