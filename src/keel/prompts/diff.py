"""Differences between two prompt versions: template text and configuration.

The same :class:`PromptDiff` renders as JSON (for CI and the API) and as coloured text (for the
terminal). Config is compared key by key on dotted paths, so a change of ``temperature`` or of
one tool's description is one line, not a blob.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any

from keel.core.prompts import PromptVersion
from keel.prompts.template import texts

_MISSING = object()


@dataclass
class ValueChange:
    """A changed (or added, or removed) value at a dotted path."""

    path: str
    before: Any = None
    after: Any = None
    kind: str = "changed"  # added | removed | changed

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return {"path": self.path, "kind": self.kind, "before": self.before, "after": self.after}


@dataclass
class PromptDiff:
    """What differs between version ``a`` and version ``b`` of a prompt."""

    name: str
    a: int
    b: int
    a_hash: str
    b_hash: str
    template: list[str] = field(default_factory=list)  # unified diff lines
    fields: list[ValueChange] = field(default_factory=list)  # type, engine
    config: list[ValueChange] = field(default_factory=list)
    variables_schema: list[ValueChange] = field(default_factory=list)

    @property
    def identical(self) -> bool:
        """True when the two versions have the same content."""
        return self.a_hash == self.b_hash

    def to_json(self) -> dict[str, Any]:
        """JSON form (stable key order)."""
        return {
            "name": self.name,
            "a": self.a,
            "b": self.b,
            "a_hash": self.a_hash,
            "b_hash": self.b_hash,
            "identical": self.identical,
            "template": self.template,
            "fields": [c.to_json() for c in self.fields],
            "config": [c.to_json() for c in self.config],
            "variables_schema": [c.to_json() for c in self.variables_schema],
        }

    def to_text(self) -> str:
        """Plain unified-diff style text."""
        return "\n".join(line for line, _ in self._lines())

    def to_rich(self) -> Any:
        """A ``rich.text.Text`` with colours, for the terminal."""
        from rich.text import Text

        out = Text()
        for line, style in self._lines():
            out.append(line + "\n", style=style)
        return out

    def _lines(self) -> list[tuple[str, str]]:
        lines: list[tuple[str, str]] = [(f"{self.name}: v{self.a} -> v{self.b}", "bold")]
        if self.identical:
            lines.append(("(identical content)", "dim"))
            return lines
        for title, changes in (
            ("fields", self.fields),
            ("config", self.config),
            ("variables_schema", self.variables_schema),
        ):
            for c in changes:
                if c.kind == "added":
                    lines.append((f"+ {title}.{c.path} = {_show(c.after)}", "green"))
                elif c.kind == "removed":
                    lines.append((f"- {title}.{c.path} = {_show(c.before)}", "red"))
                else:
                    lines.append(
                        (f"~ {title}.{c.path}: {_show(c.before)} -> {_show(c.after)}", "yellow")
                    )
        for line in self.template:
            style = ""
            if line.startswith(("+++", "---")):
                style = "bold"
            elif line.startswith("+"):
                style = "green"
            elif line.startswith("-"):
                style = "red"
            elif line.startswith("@@"):
                style = "cyan"
            lines.append((line, style))
        return lines


def _show(v: Any) -> str:
    import json

    return json.dumps(v, ensure_ascii=False, sort_keys=True)


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict) and (value or not prefix):
        out: dict[str, Any] = {}
        for k in sorted(value):
            out.update(_flatten(value[k], f"{prefix}.{k}" if prefix else str(k)))
        return out
    if isinstance(value, list) and value:
        out = {}
        for i, v in enumerate(value):
            out.update(_flatten(v, f"{prefix}[{i}]"))
        return out
    return {prefix or "$": value}


def diff_values(a: Any, b: Any) -> list[ValueChange]:
    """Changes between two JSON values, on dotted paths."""
    fa, fb = _flatten(a), _flatten(b)
    out: list[ValueChange] = []
    for path in sorted(set(fa) | set(fb)):
        va, vb = fa.get(path, _MISSING), fb.get(path, _MISSING)
        if va is _MISSING:
            out.append(ValueChange(path, None, vb, "added"))
        elif vb is _MISSING:
            out.append(ValueChange(path, va, None, "removed"))
        elif va != vb or type(va) is not type(vb):
            out.append(ValueChange(path, va, vb, "changed"))
    return out


def _template_lines(v: PromptVersion) -> list[str]:
    c = v.content
    if c.type == "text":
        return (c.template or "").splitlines()
    lines: list[str] = []
    for m, t in zip(c.messages, texts(c), strict=True):
        lines.append(f"[{m.role}]")
        lines.extend(t.splitlines())
    return lines


def diff_versions(a: PromptVersion, b: PromptVersion) -> PromptDiff:
    """Diff two versions (usually of the same prompt)."""
    template = list(
        difflib.unified_diff(
            _template_lines(a),
            _template_lines(b),
            fromfile=f"{a.name}@{a.version}",
            tofile=f"{b.name}@{b.version}",
            lineterm="",
        )
    )
    ca, cb = a.content, b.content
    return PromptDiff(
        name=a.name if a.name == b.name else f"{a.name}|{b.name}",
        a=a.version,
        b=b.version,
        a_hash=a.content_hash,
        b_hash=b.content_hash,
        template=template,
        fields=diff_values(
            {"type": ca.type, "engine": ca.engine}, {"type": cb.type, "engine": cb.engine}
        ),
        config=diff_values(ca.model_config_, cb.model_config_),
        variables_schema=diff_values(ca.variables_schema, cb.variables_schema),
    )
