"""``keel keys`` and ``keel projects``: local administration against the configured store."""

from __future__ import annotations

import typer

from keel.cli.common import emit_json, handle_errors, open_cli_store, state, table
from keel.errors import NotFoundError

keys_app = typer.Typer(help="Create, list and revoke project API keys.", no_args_is_help=True)
projects_app = typer.Typer(help="List and create projects.", no_args_is_help=True)


def ensure_project(store: object, name: str) -> object:
    """The project called ``name``, created if missing."""
    p = store.projects.find_project_by_name(name)  # type: ignore[attr-defined]
    return p or store.projects.add_project(name)  # type: ignore[attr-defined]


@keys_app.command("create")
@handle_errors
def create(
    ctx: typer.Context,
    project: str = typer.Option(
        "default", "--project", "-p", help="project name (created if missing)"
    ),
    name: str = typer.Option("default", "--name", "-n", help="a label for the key"),
    scope: list[str] = typer.Option(["*"], "--scope", help="scopes; * allows everything"),
) -> None:
    """Create a key. The secret is printed once and never stored."""
    from keel.server.auth import create_api_key

    store = open_cli_store(ctx)
    proj = ensure_project(store, project)
    key, secret = create_api_key(store, proj, name, scopes=scope)  # type: ignore[arg-type]
    if state(ctx).json:
        emit_json(
            {
                "id": key.id,
                "project": project,
                "project_id": key.project_id,
                "name": key.name,
                "secret": secret,
            }
        )
        return
    typer.echo(f"Created key {key.id} ({key.name}) for project {project}.")
    typer.echo("Secret (shown once, store it now):")
    typer.echo(secret)


@keys_app.command("list")
@handle_errors
def list_keys(
    ctx: typer.Context, project: str | None = typer.Option(None, "--project", "-p")
) -> None:
    """List keys (never their secrets)."""
    store = open_cli_store(ctx)
    pid = None
    if project:
        p = store.projects.find_project_by_name(project)
        if p is None:
            raise NotFoundError(
                f"project {project!r} not found", hint="`keel projects list` shows them"
            )
        pid = p.id
    keys = store.projects.list_api_keys(pid)
    if state(ctx).json:
        emit_json([k.model_dump(mode="json", exclude={"key_hash"}) for k in keys])
        return
    names = {p.id: p.name for p in store.projects.list_projects()}
    table(
        "API keys",
        ["id", "project", "name", "prefix", "created", "revoked"],
        [
            (
                k.id,
                names.get(k.project_id),
                k.name,
                k.prefix + "…",
                k.created_at.strftime("%Y-%m-%d %H:%M"),
                k.revoked_at and k.revoked_at.strftime("%Y-%m-%d %H:%M"),
            )
            for k in keys
        ],
    )


@keys_app.command("revoke")
@handle_errors
def revoke(ctx: typer.Context, key_id: str) -> None:
    """Revoke a key by id."""
    k = open_cli_store(ctx).projects.revoke_api_key(key_id)
    if state(ctx).json:
        emit_json(k.model_dump(mode="json", exclude={"key_hash"}))
    else:
        typer.echo(f"Revoked {k.id}.")


@projects_app.command("list")
@handle_errors
def list_projects(ctx: typer.Context) -> None:
    """List projects."""
    ps = open_cli_store(ctx).projects.list_projects()
    if state(ctx).json:
        emit_json([p.model_dump(mode="json") for p in ps])
        return
    table(
        "Projects",
        ["id", "name", "created"],
        [(p.id, p.name, p.created_at.strftime("%Y-%m-%d %H:%M")) for p in ps],
    )


@projects_app.command("create")
@handle_errors
def create_project(ctx: typer.Context, name: str) -> None:
    """Create a project."""
    p = open_cli_store(ctx).projects.add_project(name)
    if state(ctx).json:
        emit_json(p.model_dump(mode="json"))
    else:
        typer.echo(f"Created project {p.name} ({p.id}).")
