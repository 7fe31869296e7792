"""Prompts as code: prompt files in a directory, pushed idempotently, pulled back out.

Two file forms, both UTF-8:

``*.yaml`` / ``*.yml``::

    name: refund-agent            # optional: defaults to the file name without extension
    type: chat                    # chat (default with messages) or text
    engine: mustache              # or jinja (sandboxed)
    messages:
      - {role: system, content: "You handle refunds for {{shop}}."}
      - {role: user, content: "{{question}}"}
    config: {model: gpt-4o-mini, temperature: 0.2}
    variables_schema: {type: object}
    labels: [staging]             # optional: labels to point at this version after pushing
    message: "tighter tone"       # optional commit message

``*.md`` with YAML front matter: the body is the template of a text prompt; with
``type: chat`` the body is split into messages at lines ``## system``, ``## user``,
``## assistant`` (or ``developer``/``tool``).

Pushing a directory twice creates nothing the second time: identical content returns the
stored version, and labels that already point there do not move.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from keel.core.prompts import PromptContent, PromptMessage, PromptVersion
from keel.errors import InvalidInputError

SUFFIXES = (".yaml", ".yml", ".md")
_KEYS = {
    "name",
    "type",
    "engine",
    "template",
    "messages",
    "config",
    "model_config",
    "variables_schema",
    "labels",
    "message",
}
_ROLE_LINE = re.compile(r"^##\s+(system|user|assistant|developer|tool)\s*$", re.M)
MAX_FILE_BYTES = 1_000_000


@dataclass(frozen=True)
class PromptFile:
    """A parsed prompt file."""

    path: Path
    name: str
    content: PromptContent
    labels: tuple[str, ...] = ()
    message: str | None = None


def _load_yaml(text: str, where: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise InvalidInputError(f"{where}: invalid YAML: {e}")
    if not isinstance(data, dict):
        raise InvalidInputError(f"{where}: expected a mapping at the top level")
    return data


def _split_front_matter(text: str, where: str) -> tuple[dict[str, Any], str]:
    if not text.startswith("---"):
        return {}, text
    m = re.match(r"^---[ \t]*\r?\n(.*?)\r?\n---[ \t]*\r?\n?", text, re.S)
    if not m:
        raise InvalidInputError(f"{where}: front matter starts with --- but never ends")
    return _load_yaml(m.group(1), where), text[m.end() :]


def _md_messages(body: str, where: str) -> list[dict[str, str]]:
    parts = _ROLE_LINE.split(body)
    if parts[0].strip():
        raise InvalidInputError(
            f"{where}: text before the first '## <role>' heading of a chat prompt"
        )
    msgs = []
    for i in range(1, len(parts), 2):
        msgs.append({"role": parts[i], "content": parts[i + 1].strip("\n")})
    if not msgs:
        raise InvalidInputError(f"{where}: a chat prompt needs '## system' / '## user' sections")
    return msgs


def parse_prompt_file(path: Path) -> PromptFile:
    """Read one prompt file; raise :class:`InvalidInputError` naming the file on any problem."""
    where = str(path)
    if path.stat().st_size > MAX_FILE_BYTES:
        raise InvalidInputError(f"{where}: prompt file larger than 1 MB")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".md":
        data, body = _split_front_matter(text, where)
        if "template" in data or "messages" in data:
            raise InvalidInputError(f"{where}: in Markdown the body is the template")
        if data.get("type", "text") == "chat":
            data["messages"] = _md_messages(body, where)
        else:
            data["type"] = "text"
            data["template"] = body
    else:
        data = _load_yaml(text, where)
    unknown = set(data) - _KEYS
    if unknown:
        raise InvalidInputError(f"{where}: unknown keys {', '.join(sorted(unknown))}")
    name = str(data.get("name") or path.stem)
    kind = data.get("type") or ("chat" if "messages" in data else "text")
    config = data.get("config", data.get("model_config")) or {}
    labels = data.get("labels") or []
    if isinstance(labels, str):
        labels = [labels]
    try:
        content = PromptContent.model_validate(
            {
                "type": kind,
                "template": data.get("template"),
                "messages": [PromptMessage.model_validate(m) for m in data.get("messages") or []],
                "engine": data.get("engine", "mustache"),
                "model_config": config,
                "variables_schema": data.get("variables_schema") or {},
            }
        )
    except ValueError as e:
        raise InvalidInputError(f"{where}: {e}")
    return PromptFile(
        path=path,
        name=name,
        content=content,
        labels=tuple(str(x) for x in labels),
        message=data.get("message"),
    )


def discover(directory: Path) -> list[Path]:
    """Prompt files under ``directory`` (recursively), sorted, hidden directories skipped."""
    if not directory.is_dir():
        raise InvalidInputError(f"{directory} is not a directory")
    out = []
    for p in sorted(directory.rglob("*")):
        rel = p.relative_to(directory)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if p.is_file() and p.suffix in SUFFIXES:
            out.append(p)
    return out


def load_directory(directory: Path) -> list[PromptFile]:
    """Parse every prompt file; names must be unique across the directory."""
    files = [parse_prompt_file(p) for p in discover(directory)]
    seen: dict[str, Path] = {}
    for f in files:
        if f.name in seen:
            raise InvalidInputError(
                f"prompt {f.name!r} is defined twice: {seen[f.name]} and {f.path}"
            )
        seen[f.name] = f.path
    return files


def to_yaml(pv: PromptVersion, labels: list[str] | None = None) -> str:
    """The YAML file form of a version (what ``keel prompts pull`` writes)."""
    c = pv.content
    data: dict[str, Any] = {"name": pv.name, "type": c.type}
    if c.engine != "mustache":
        data["engine"] = c.engine
    if c.type == "text":
        data["template"] = c.template
    else:
        data["messages"] = [{"role": m.role, "content": m.content} for m in c.messages]
    if c.model_config_:
        data["config"] = c.model_config_
    if c.variables_schema:
        data["variables_schema"] = c.variables_schema
    if labels:
        data["labels"] = sorted(labels)
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100)


@dataclass(frozen=True)
class PushResult:
    """What pushing one prompt file did."""

    name: str
    version: int
    created: bool
    labels_moved: tuple[str, ...]
    path: str


def push_directory(
    registry: Any,
    project_id: str,
    directory: Path,
    *,
    actor: str,
    message: str | None = None,
) -> list[PushResult]:
    """Push every prompt file of ``directory``; idempotent (see the module docstring).

    Everything is parsed and validated before anything is stored, so a bad file stores nothing.
    Prompts are pushed in an order where included prompts come first.
    """
    from keel.prompts import template

    files = load_directory(directory)
    for f in files:
        template.validate(f.content)
    by_name = {f.name: f for f in files}
    ordered: list[PromptFile] = []
    state: dict[str, int] = {}

    def visit(f: PromptFile, depth: int = 0) -> None:
        if state.get(f.name) == 2:
            return
        if state.get(f.name) == 1 or depth > template.MAX_INCLUDE_DEPTH:
            raise InvalidInputError(f"include cycle through prompt {f.name!r}")
        state[f.name] = 1
        for ref in template.content_includes(f.content):
            if ref.name in by_name:
                visit(by_name[ref.name], depth + 1)
        state[f.name] = 2
        ordered.append(f)

    for f in files:
        visit(f)
    results = []
    for f in ordered:
        pv, created = registry.push(
            project_id, f.name, f.content, message=f.message or message, author=actor
        )
        moved = []
        for label in f.labels:
            cur = registry.store.prompts.find_label(project_id, f.name, label)
            if cur is None or cur.version != pv.version:
                registry.move_label(
                    project_id,
                    f.name,
                    label,
                    pv.version,
                    actor=actor,
                    reason=f"prompt file {f.path.name}",
                )
                moved.append(label)
        results.append(PushResult(f.name, pv.version, created, tuple(moved), str(f.path)))
    return results
