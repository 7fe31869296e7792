"""``keel traces list`` and ``keel traces show ID``: read traces from the configured store."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import typer
from rich.tree import Tree

from keel.cli.common import console, emit_json, handle_errors, open_cli_store, state, table
from keel.errors import InvalidInputError, NotFoundError

traces_app = typer.Typer(help="List and inspect stored traces.", no_args_is_help=True)


def _project_id(store: Any, name: str) -> str:
    p = store.projects.find_project_by_name(name)
    if p is None:
        raise NotFoundError(f"project {name!r} not found", hint="see `keel projects list`")
    return str(p.id)


def _ns(value: str | None) -> int | None:
    if not value:
        return None
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInputError(
            f"not an ISO 8601 time: {value!r}", hint="e.g. 2026-11-28T10:00:00Z"
        )
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1_000_000) * 1000


def _when(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, UTC).strftime("%Y-%m-%d %H:%M:%S")


@traces_app.command("list")
@handle_errors
def list_cmd(
    ctx: typer.Context,
    project: str = typer.Option("default", "--project", "-p", help="project name"),
    since: str | None = typer.Option(None, "--since", help="start time at or after (ISO 8601)"),
    until: str | None = typer.Option(None, "--until", help="start time before (ISO 8601)"),
    service: str | None = typer.Option(None, "--service"),
    model: str | None = typer.Option(None, "--model"),
    provider: str | None = typer.Option(None, "--provider"),
    route: str | None = typer.Option(None, "--route"),
    prompt: str | None = typer.Option(None, "--prompt", help="prompt name, or name@version"),
    status: str | None = typer.Option(None, "--status", help="ok, error or unset"),
    min_cost: float | None = typer.Option(None, "--min-cost", help="USD"),
    min_duration: float | None = typer.Option(None, "--min-duration", help="milliseconds"),
    query: str | None = typer.Option(None, "--query", "-q", help="text in a span name"),
    sort: str = typer.Option(
        "start_time", "--sort", help="start_time, duration, cost, tokens, span_count"
    ),
    asc: bool = typer.Option(False, "--asc", help="ascending order"),
    limit: int = typer.Option(20, "--limit", "-n"),
    cursor: str | None = typer.Option(None, "--cursor", help="next_cursor of the previous page"),
) -> None:
    """List traces, newest first."""
    from keel.storage.spans import TraceFilter

    store = open_cli_store(ctx)
    pname, pversion = prompt, None
    if prompt and "@" in prompt:
        pname, _, v = prompt.rpartition("@")
        try:
            pversion = int(v)
        except ValueError:
            raise InvalidInputError(f"prompt version must be a number: {prompt!r}")
    f = TraceFilter(
        start_from_ns=_ns(since),
        start_to_ns=_ns(until),
        service=service,
        model=model,
        provider=provider,
        route=route,
        prompt_name=pname,
        prompt_version=pversion,
        status=status,
        min_cost_usd=min_cost,
        min_duration_ms=min_duration,
        text=query,
    )
    page = store.spans.list_traces(
        _project_id(store, project),
        f,
        sort=sort,  # type: ignore[arg-type]
        descending=not asc,
        limit=limit,
        cursor=cursor,
    )
    if state(ctx).json:
        emit_json({"data": [t.model_dump() for t in page.items], "next_cursor": page.next_cursor})
        return
    table(
        None,
        [
            "trace",
            "start (UTC)",
            "root",
            "ms",
            "spans",
            "status",
            "tokens in/out",
            "cost $",
            "models",
        ],
        [
            [
                t.trace_id,
                _when(t.start_time_ns),
                t.root_name[:40],
                f"{t.duration_ms:.0f}",
                t.span_count,
                t.status,
                f"{t.input_tokens}/{t.output_tokens}",
                f"{t.cost_usd:.4f}" if t.cost_usd is not None else "",
                ", ".join(t.models)[:40],
            ]
            for t in page.items
        ],
    )
    if page.next_cursor:
        console.print(f"[dim]more: --cursor {page.next_cursor}[/]")


@traces_app.command("show")
@handle_errors
def show_cmd(
    ctx: typer.Context,
    trace_id: str = typer.Argument(..., help="32 hex characters"),
    project: str = typer.Option("default", "--project", "-p", help="project name"),
) -> None:
    """Show one trace as a span tree (LLM spans with model, tokens and cost)."""
    from keel.server.ingest import _load_pricer
    from keel.server.routes.traces import span_tree

    store = open_cli_store(ctx)
    pid = _project_id(store, project)
    tid = trace_id.strip().lower()
    summary = store.spans.get_trace_summary(pid, tid)
    trace = store.spans.get_trace(pid, tid)
    nodes = span_tree(trace.spans, _load_pricer())
    if state(ctx).json:
        emit_json(
            {
                "trace_id": tid,
                "summary": summary.model_dump(),
                "spans": [n.model_dump(mode="json") for n in nodes],
            }
        )
        return
    cost = f", ${summary.cost_usd:.4f}" if summary.cost_usd is not None else ""
    root = Tree(
        f"[bold]{tid}[/] {summary.span_count} spans, {summary.duration_ms:.0f} ms, "
        f"{summary.input_tokens}/{summary.output_tokens} tokens{cost}, {summary.status}"
    )

    def add(parent: Tree, node: Any, depth: int = 0) -> None:
        label = f"{node.name} [dim]{node.duration_ms:.0f} ms[/]"
        if node.status == "error":
            label += f" [red]error[/] {node.status_message or ''}"
        if node.llm is not None:
            llm = node.llm
            bits = [llm.operation, llm.response_model or llm.request_model]
            if llm.input_tokens is not None or llm.output_tokens is not None:
                bits.append(f"{llm.input_tokens or 0}/{llm.output_tokens or 0} tok")
            if llm.cost_usd is not None:
                bits.append(f"${llm.cost_usd:.6f}")
            label += " [cyan]" + " · ".join(str(b) for b in bits if b) + "[/]"
        branch = parent.add(label)
        if depth < 200:
            for ch in node.children:
                add(branch, ch, depth + 1)

    for n in nodes:
        add(root, n)
    console.print(root)
