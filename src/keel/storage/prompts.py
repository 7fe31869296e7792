"""Contract for the prompt registry: immutable versions and movable labels.

A version, once stored, is never changed: there is no update path in this protocol. Pushing
content whose hash equals a stored version of the same prompt returns that version instead of
creating a new one. Numbers are per prompt (1, 2, 3, …) and are assigned race-free: two
concurrent pushes of different content get different numbers, two of the same content get the
same version.
"""

from __future__ import annotations

from typing import Protocol

from keel.core.prompts import PromptContent, PromptLabel, PromptVersion


class PromptStore(Protocol):
    """Prompt versions (append-only) and labels (pointers that move)."""

    def add_version(
        self,
        project_id: str,
        name: str,
        content: PromptContent,
        *,
        message: str | None = None,
        author: str | None = None,
    ) -> tuple[PromptVersion, bool]:
        """Store a new version, or return the stored one with the same content hash.

        Returns ``(version, created)``.
        """
        ...

    def get_version(self, project_id: str, name: str, version: int) -> PromptVersion:
        """One version; :class:`NotFoundError` if absent."""
        ...

    def find_version_by_hash(
        self, project_id: str, name: str, content_hash: str
    ) -> PromptVersion | None:
        """The version of ``name`` with this content hash, or None."""
        ...

    def get_latest_version(self, project_id: str, name: str) -> PromptVersion:
        """The highest-numbered version; :class:`NotFoundError` if the prompt has none."""
        ...

    def list_versions(self, project_id: str, name: str) -> list[PromptVersion]:
        """Every version of a prompt, oldest first; :class:`NotFoundError` if none."""
        ...

    def list_prompts(self, project_id: str) -> list[PromptVersion]:
        """The latest version of every prompt in the project, by name."""
        ...

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
        """Point ``label`` at ``version`` (which must exist).

        ``expected_version`` makes the move a compare-and-set: when given, the label must
        currently point there (``0`` means "must not exist yet"), else :class:`ConflictError`.
        ``protected`` sets the label's protection; None keeps it (new labels: False).
        """
        ...

    def find_label(self, project_id: str, name: str, label: str) -> PromptLabel | None:
        """A label of a prompt, or None."""
        ...

    def list_labels(self, project_id: str, name: str | None = None) -> list[PromptLabel]:
        """Labels of one prompt (or of every prompt), by prompt name then label."""
        ...
