"""``keel prompts``: prompt files as code, versions, labels, diffs and rendering.

Runs against the configured store (``--store`` / ``keel.toml``), like ``keel keys``.
"""

from __future__ import annotations

import json as jsonlib
from pathlib import Path
from typing import Any

import typer

from keel.cli.common import (
    PROJECT_OPTION,
    cli_actor,
    console,
    emit_json,
    handle_errors,
    open_project,
    state,
    table,
)
from keel.errors import InvalidInputError

prompts_app = typer.Typer(
    help="Push, pull, show, label, diff and render registry prompts.", no_args_is_help=True
)

PROJECT = PROJECT_OPTION
_actor = cli_actor


def _open(ctx: typer.Context, project: str) -> tuple[Any, str]:
    from keel.prompts.registry import PromptRegistry

    store, project_id = open_project(ctx, project)
    return PromptRegistry(store), project_id


def _version_json(reg: Any, pid: str, pv: Any) -> dict[str, Any]:
    labels = [
        x.label for x in reg.store.prompts.list_labels(pid, pv.name) if x.version == pv.version
    ]
    return {
        "name": pv.name,
        "version": pv.version,
        "content_hash": pv.content_hash,
        "labels": labels,
        "message": pv.message,
        "author": pv.author,
        "created_at": pv.created_at.isoformat(),
        **pv.content.model_dump(mode="json", by_alias=True),
    }


@prompts_app.command("push")
@handle_errors
def push(
    ctx: typer.Context,
    directory: Path = typer.Argument(..., help="directory of .yaml/.yml/.md prompt files"),
    project: str = PROJECT,
    message: str | None = typer.Option(None, "--message", "-m", help="commit message"),
) -> None:
    """Sync prompt files into the registry (idempotent: unchanged files create nothing)."""
    from keel.prompts.files import push_directory

    reg, pid = _open(ctx, project)
    results = push_directory(reg, pid, directory, actor=_actor(), message=message)
    if state(ctx).json:
        emit_json([r.__dict__ for r in results])
        return
    table(
        f"Pushed {directory}",
        ["prompt", "version", "status", "labels moved", "file"],
        [
            (
                r.name,
                r.version,
                "new" if r.created else "unchanged",
                ", ".join(r.labels_moved),
                r.path,
            )
            for r in results
        ],
    )


@prompts_app.command("pull")
@handle_errors
def pull(
    ctx: typer.Context,
    directory: Path = typer.Argument(..., help="where to write one YAML file per prompt"),
    project: str = PROJECT,
    label: str | None = typer.Option(
        None, "--label", "-l", help="pull this label (default: latest)"
    ),
) -> None:
    """Write prompts as YAML files (the latest version, or the one a label points at)."""
    from keel.prompts.files import to_yaml

    reg, pid = _open(ctx, project)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for latest in reg.store.prompts.list_prompts(pid):
        if label:
            lab = reg.store.prompts.find_label(pid, latest.name, label)
            if lab is None:
                continue
            pv = reg.store.prompts.get_version(pid, latest.name, lab.version)
        else:
            pv = latest
        labels = [
            x.label for x in reg.store.prompts.list_labels(pid, pv.name) if x.version == pv.version
        ]
        path = directory / f"{pv.name}.yaml"
        path.write_text(to_yaml(pv, labels), encoding="utf-8")
        written.append({"name": pv.name, "version": pv.version, "path": str(path)})
    if state(ctx).json:
        emit_json(written)
        return
    table(
        "Pulled",
        ["prompt", "version", "file"],
        [(w["name"], w["version"], w["path"]) for w in written],
    )


@prompts_app.command("list")
@handle_errors
def list_prompts(ctx: typer.Context, project: str = PROJECT) -> None:
    """Prompts with their latest version and labels."""
    reg, pid = _open(ctx, project)
    labels: dict[str, list[str]] = {}
    for lab in reg.store.prompts.list_labels(pid):
        labels.setdefault(lab.prompt_name, []).append(f"{lab.label}→{lab.version}")
    items = reg.store.prompts.list_prompts(pid)
    if state(ctx).json:
        emit_json(
            [
                {
                    "name": p.name,
                    "latest": p.version,
                    "type": p.content.type,
                    "labels": labels.get(p.name, []),
                }
                for p in items
            ]
        )
        return
    table(
        "Prompts",
        ["name", "latest", "type", "labels", "updated"],
        [
            (
                p.name,
                p.version,
                p.content.type,
                " ".join(labels.get(p.name, [])),
                p.created_at.strftime("%Y-%m-%d %H:%M"),
            )
            for p in items
        ],
    )


@prompts_app.command("show")
@handle_errors
def show(
    ctx: typer.Context,
    ref: str = typer.Argument(..., help="name, name@label or name@N"),
    project: str = PROJECT,
) -> None:
    """One version: template, config, variables, labels."""
    from keel.prompts.template import own_variables

    reg, pid = _open(ctx, project)
    pv = reg.resolve(pid, ref).version
    data = _version_json(reg, pid, pv)
    if state(ctx).json:
        emit_json(data)
        return
    c = pv.content
    console.print(
        f"[bold]{pv.name}[/] v{pv.version}  {pv.content_hash[:19]}…  labels: {', '.join(data['labels']) or '-'}"
    )
    console.print(
        f"type {c.type}, engine {c.engine}, variables: {', '.join(sorted(own_variables(c))) or '-'}"
    )
    if pv.message:
        console.print(f"message: {pv.message}  (by {pv.author or '?'})")
    if c.model_config_:
        console.print(
            "config: " + jsonlib.dumps(c.model_config_, ensure_ascii=False, sort_keys=True)
        )
    if c.type == "text":
        console.print(c.template or "", markup=False, highlight=False)
    else:
        for m in c.messages:
            console.print(f"[bold cyan]\\[{m.role}][/]")
            console.print(m.content, markup=False, highlight=False)


@prompts_app.command("label")
@handle_errors
def label(
    ctx: typer.Context,
    name: str = typer.Argument(...),
    label_name: str = typer.Argument(..., metavar="LABEL"),
    version: int = typer.Argument(..., help="version number to point the label at"),
    reason: str | None = typer.Option(None, "--reason", "-r", help="why (kept in the audit trail)"),
    project: str = PROJECT,
) -> None:
    """Move a label (protected labels ask the label guards first)."""
    reg, pid = _open(ctx, project)
    lab = reg.move_label(pid, name, label_name, version, actor=_actor(), reason=reason)
    if state(ctx).json:
        emit_json(lab.model_dump(mode="json"))
    else:
        typer.echo(f"{name}@{label_name} -> v{lab.version}")


@prompts_app.command("rollback")
@handle_errors
def rollback(
    ctx: typer.Context,
    name: str = typer.Argument(...),
    label_name: str = typer.Argument(..., metavar="LABEL"),
    to: int | None = typer.Option(
        None, "--to", help="version (default: where the label was before)"
    ),
    reason: str | None = typer.Option(None, "--reason", "-r"),
    project: str = PROJECT,
) -> None:
    """Move a label back."""
    reg, pid = _open(ctx, project)
    lab = reg.rollback(pid, name, label_name, actor=_actor(), reason=reason, to=to)
    if state(ctx).json:
        emit_json(lab.model_dump(mode="json"))
    else:
        typer.echo(f"{name}@{label_name} -> v{lab.version} (rolled back)")


@prompts_app.command("history")
@handle_errors
def history(
    ctx: typer.Context,
    name: str = typer.Argument(...),
    label_name: str = typer.Argument(..., metavar="LABEL"),
    project: str = PROJECT,
) -> None:
    """Moves of a label: who, when, from, to, why."""
    reg, pid = _open(ctx, project)
    evs = reg.label_history(pid, name, label_name)
    if state(ctx).json:
        emit_json([e.model_dump(mode="json") for e in evs])
        return
    table(
        f"{name}@{label_name}",
        ["when", "who", "action", "from", "to", "why"],
        [
            (
                e.created_at.strftime("%Y-%m-%d %H:%M:%S"),
                e.actor,
                e.action,
                e.before,
                e.after,
                e.reason,
            )
            for e in evs
        ],
    )


@prompts_app.command("diff")
@handle_errors
def diff(
    ctx: typer.Context,
    a: str = typer.Argument(..., help="name@N or name@label"),
    b: str = typer.Argument(..., help="name@N, name@label, @label or N"),
    project: str = PROJECT,
) -> None:
    """Template and config differences between two versions."""
    reg, pid = _open(ctx, project)
    d = reg.diff(pid, a, b)
    if state(ctx).json:
        emit_json(d.to_json())
    else:
        console.print(d.to_rich())


def _parse_vars(pairs: list[str], vars_file: Path | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if vars_file is not None:
        data = jsonlib.loads(vars_file.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise InvalidInputError("--vars-file must hold a JSON object")
        out.update(data)
    for p in pairs:
        k, sep, v = p.partition("=")
        if not sep or not k:
            raise InvalidInputError(f"--var expects name=value, got {p!r}")
        out[k] = v
    return out


@prompts_app.command("render")
@handle_errors
def render(
    ctx: typer.Context,
    ref: str = typer.Argument(..., help="name, name@label or name@N"),
    var: list[str] = typer.Option([], "--var", "-v", help="name=value (repeatable)"),
    vars_file: Path | None = typer.Option(None, "--vars-file", help="JSON object of variables"),
    project: str = PROJECT,
) -> None:
    """Render a version with variables (exactly the ones it uses)."""
    reg, pid = _open(ctx, project)
    res, out = reg.render(pid, ref, _parse_vars(var, vars_file))
    if state(ctx).json:
        emit_json(
            {
                "name": res.version.name,
                "version": res.version.version,
                "label": res.label,
                "rendered": out,
            }
        )
        return
    if isinstance(out, str):
        typer.echo(out)
    else:
        for m in out:
            console.print(f"[bold cyan]\\[{m['role']}][/]")
            console.print(m["content"], markup=False, highlight=False)
