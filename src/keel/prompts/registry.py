"""The prompt registry service: push, resolve, label moves with audit and guards, render, diff.

It sits on a :class:`~keel.storage.base.Store` and adds the rules the store does not know:
validation of templates before they are stored, protected labels checked by
:mod:`keel.prompts.guards`, an audit event for every label move, and change notifications.
Both the REST API and the CLI go through this one class.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from keel.core.ids import new_id
from keel.core.names import validate_name
from keel.core.projects import AuditEvent
from keel.core.prompts import PromptContent, PromptLabel, PromptVersion
from keel.errors import InvalidInputError, NotFoundError
from keel.prompts import template
from keel.prompts.diff import PromptDiff, diff_versions
from keel.prompts.guards import LabelGuard, LabelMove, load_label_guards
from keel.prompts.template import PromptRef, parse_ref
from keel.prompts.webhooks import WebhookNotifier

RESERVED_LABELS = frozenset({"latest"})
LABEL_MOVE = "prompt.label.move"


def label_subject(name: str, label: str) -> str:
    """Audit subject of a label: ``prompt:<name>:label:<label>``."""
    return f"prompt:{name}:label:{label}"


@dataclass(frozen=True)
class Resolved:
    """A version reached through a reference, with the label it came through."""

    version: PromptVersion
    label: str | None


class PromptRegistry:
    """Prompt operations for one store (all methods are project-scoped)."""

    def __init__(
        self,
        store: Any,
        *,
        guards: list[LabelGuard] | None = None,
        notifier: WebhookNotifier | None = None,
    ) -> None:
        self.store = store
        self.guards = guards if guards is not None else load_label_guards()
        self.notifier = notifier

    # -- versions --------------------------------------------------------------------------

    def push(
        self,
        project_id: str,
        name: str,
        content: PromptContent,
        *,
        message: str | None = None,
        author: str | None = None,
    ) -> tuple[PromptVersion, bool]:
        """Validate and store ``content``; identical content returns the stored version."""
        validate_name(name, "prompt name")
        template.validate(content)
        try:
            json.dumps(content.model_dump(by_alias=True), allow_nan=False)
            content.hash()
        except (ValueError, TypeError) as e:
            raise InvalidInputError(f"prompt content cannot be stored: {e}")
        for ref in template.content_includes(content):
            if ref.name == name:
                raise InvalidInputError(f"prompt {name!r} includes itself")
        pv, created = self.store.prompts.add_version(
            project_id, name, content, message=message, author=author
        )
        if created:
            self._notify(
                "prompt.version.created",
                {
                    "project_id": project_id,
                    "prompt": name,
                    "version": pv.version,
                    "content_hash": pv.content_hash,
                    "author": author,
                    "message": message,
                },
            )
        return pv, created

    def get(
        self, project_id: str, name: str, *, version: int | None = None, label: str | None = None
    ) -> Resolved:
        """A version by number, by label, or the latest (``label='latest'`` or neither)."""
        if version is not None and label is not None:
            raise InvalidInputError("give a version or a label, not both")
        if version is not None:
            return Resolved(self.store.prompts.get_version(project_id, name, version), None)
        if label is None or label == "latest":
            return Resolved(self.store.prompts.get_latest_version(project_id, name), label)
        lab = self.store.prompts.find_label(project_id, name, label)
        if lab is None:
            self.store.prompts.get_latest_version(project_id, name)  # 404 for the prompt first
            raise NotFoundError(
                f"prompt {name!r} has no label {label!r}",
                hint=f"`keel prompts label {name} {label} VERSION` sets it",
            )
        return Resolved(self.store.prompts.get_version(project_id, name, lab.version), label)

    def resolve(self, project_id: str, ref: str | PromptRef) -> Resolved:
        """Resolve ``name``, ``name@label`` or ``name@N`` (a bare name means the latest)."""
        r = parse_ref(ref, default_label="latest") if isinstance(ref, str) else ref
        return self.get(project_id, r.name, version=r.version, label=r.label)

    def resolver(self, project_id: str) -> template.Resolver:
        """A template include resolver bound to a project."""
        return lambda ref: self.resolve(project_id, ref).version.content

    def includes(self, project_id: str, content: PromptContent) -> dict[str, PromptVersion]:
        """Every prompt ``content`` includes, transitively, by reference string."""
        out: dict[str, PromptVersion] = {}
        pending = list(template.content_includes(content))
        while pending:
            ref = pending.pop(0)
            key = str(ref)
            if key in out:
                continue
            if len(out) > 64:
                raise InvalidInputError("too many included prompts")
            pv = self.resolve(project_id, ref).version
            out[key] = pv
            pending.extend(template.content_includes(pv.content))
        return out

    def render(
        self, project_id: str, ref: str, variables: Mapping[str, Any] | None = None
    ) -> tuple[Resolved, str | list[dict[str, str]]]:
        """Resolve and render a prompt."""
        res = self.resolve(project_id, ref)
        out = template.render(
            res.version.content, variables, self.resolver(project_id), name=res.version.name
        )
        return res, out

    def diff(self, project_id: str, a: str, b: str) -> PromptDiff:
        """Diff two references (``name@1`` and ``name@production``; ``b`` may be ``@label``)."""
        ra = self.resolve(project_id, a).version
        if b.startswith("@"):
            b = ra.name + b
        elif "@" not in b and b.isdigit():
            b = f"{ra.name}@{b}"
        rb = self.resolve(project_id, b).version
        return diff_versions(ra, rb)

    # -- labels ----------------------------------------------------------------------------

    def move_label(
        self,
        project_id: str,
        name: str,
        label: str,
        version: int,
        *,
        actor: str,
        reason: str | None = None,
        protected: bool | None = None,
        _rollback: bool = False,
    ) -> PromptLabel:
        """Point ``label`` at ``version``, after the guards allow it; audited and notified."""
        validate_name(label, "label")
        if label in RESERVED_LABELS:
            raise InvalidInputError(f"{label!r} is reserved and moves by itself")
        target = self.store.prompts.get_version(project_id, name, version)
        cur = self.store.prompts.find_label(project_id, name, label)
        from keel.core.prompts import PROTECTED_BY_DEFAULT

        is_protected = (
            protected
            if protected is not None
            else (cur.protected if cur else label in PROTECTED_BY_DEFAULT)
        )
        if cur is not None and cur.version == version and protected in (None, cur.protected):
            return cur
        move = LabelMove(
            project_id=project_id,
            prompt_name=name,
            label=label,
            from_version=cur.version if cur else None,
            to_version=version,
            content_hash=target.content_hash,
            protected=is_protected or (cur.protected if cur else False),
            actor=actor,
            reason=reason,
            rollback=_rollback,
        )
        for guard in self.guards:
            guard.check(move, self.store)
        lab = self.store.prompts.put_label(
            project_id,
            name,
            label,
            version,
            expected_version=cur.version if cur else 0,
            protected=protected,
        )
        now = getattr(self.store, "clock", None)
        self.store.projects.add_audit_event(
            AuditEvent(
                id=new_id("aud"),
                project_id=project_id,
                actor=actor,
                action=LABEL_MOVE if not _rollback else "prompt.label.rollback",
                subject=label_subject(name, label),
                before=move.from_version,
                after=version,
                reason=reason,
                evidence={"content_hash": target.content_hash, "protected": lab.protected},
                created_at=now.now() if now is not None else lab.updated_at,
            )
        )
        self._notify(
            "prompt.label.moved",
            {
                "project_id": project_id,
                "prompt": name,
                "label": label,
                "from": move.from_version,
                "to": version,
                "actor": actor,
                "reason": reason,
                "rollback": _rollback,
            },
        )
        return lab

    def rollback(
        self,
        project_id: str,
        name: str,
        label: str,
        *,
        actor: str,
        reason: str | None = None,
        to: int | None = None,
    ) -> PromptLabel:
        """Move ``label`` back: to ``to``, or to where it pointed before its last move."""
        cur = self.store.prompts.find_label(project_id, name, label)
        if cur is None:
            raise NotFoundError(f"prompt {name!r} has no label {label!r}")
        if to is None:
            to = self.previous_version(project_id, name, label)
            earlier = True
        else:
            # Only a return to a version the label pointed at before counts as a rollback
            # (guards may let those through without new evidence); anything else is a move.
            history = self.label_history(project_id, name, label, limit=1000)
            earlier = any(ev.after == to for ev in history)
        return self.move_label(
            project_id, name, label, to, actor=actor, reason=reason or "rollback", _rollback=earlier
        )

    def previous_version(self, project_id: str, name: str, label: str) -> int:
        """The version ``label`` pointed at before its latest move."""
        cur = self.store.prompts.find_label(project_id, name, label)
        for ev in self.label_history(project_id, name, label, limit=50):
            if cur is not None and ev.after == cur.version and ev.before is not None:
                return int(ev.before)
        raise InvalidInputError(
            f"label {label!r} of {name!r} has no earlier version to roll back to",
            hint="give the version explicitly with --to",
        )

    def label_history(
        self, project_id: str, name: str, label: str, *, limit: int = 100
    ) -> list[AuditEvent]:
        """Moves of a label, newest first."""
        return self.store.projects.list_audit_events(
            project_id, subject=label_subject(name, label), limit=limit
        )

    def _notify(self, event: str, payload: dict[str, Any]) -> None:
        if self.notifier is not None:
            self.notifier.notify(event, payload)
