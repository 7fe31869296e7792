"""Shared CLI plumbing: settings, store, output as rich tables or ``--json``, error exits.

Exit codes, for every command: 0 ok, 1 a gate or check failed, 2 usage or config error,
3 runtime error (store or provider down).
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
import typer
from rich.console import Console
from rich.table import Table

from keel.errors import ConfigError, InvalidInputError, KeelError, NotFoundError, StoreError
from keel.settings import Settings, load_settings

console = Console()
err_console = Console(stderr=True)

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_RUNTIME = 0, 1, 2, 3

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class CliState:
    """Options given before the subcommand."""

    config: str | None = None
    json: bool = False
    store_url: str | None = None
    _settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        """Settings from keel.toml + env, with ``--store`` applied."""
        if self._settings is None:
            overrides = {"store": {"url": self.store_url}} if self.store_url else None
            self._settings = load_settings(self.config, overrides=overrides)
        return self._settings


def state(ctx: typer.Context) -> CliState:
    """The root state, from any subcommand's context."""
    root = ctx.find_root()
    if not isinstance(root.obj, CliState):
        root.obj = CliState()
    return root.obj


def open_cli_store(ctx: typer.Context) -> Any:
    """Open the configured store (creating ``.keel/`` for the default SQLite file)."""
    from keel.storage import open_store

    return open_store(state(ctx).settings.store.url)


def emit_json(data: Any) -> None:
    """Print ``data`` as JSON on stdout."""
    sys.stdout.write(
        orjson.dumps(data, option=orjson.OPT_INDENT_2, default=_default).decode() + "\n"
    )


def _default(o: Any) -> Any:
    if hasattr(o, "model_dump"):
        return o.model_dump(mode="json")
    if hasattr(o, "isoformat"):
        return o.isoformat()
    raise TypeError(type(o).__name__)


def table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """Print a rich table."""
    t = Table(title=title, header_style="bold cyan")
    for c in columns:
        t.add_column(c)
    for r in rows:
        t.add_row(*["" if v is None else str(v) for v in r])
    console.print(t)


def handle_errors(fn: F) -> F:
    """Turn Keel errors into a readable message and the documented exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (ConfigError, InvalidInputError, NotFoundError) as e:
            _fail(e, EXIT_USAGE)
        except StoreError as e:
            _fail(e, EXIT_RUNTIME)
        except KeelError as e:
            _fail(e, EXIT_RUNTIME if e.status >= 500 else EXIT_USAGE)

    return wrapper  # type: ignore[return-value]


def _fail(e: KeelError, code: int) -> None:
    err_console.print(f"[bold red]error:[/] {e.message}")
    if e.hint:
        err_console.print(f"[yellow]hint:[/] {e.hint}")
    raise typer.Exit(code)


PROJECT_OPTION = typer.Option(
    "default", "--project", "-p", help="project name (created if missing)"
)


def cli_actor() -> str:
    """Who the CLI acts as, for audit events (``cli:<user>``)."""
    import getpass

    try:
        return f"cli:{getpass.getuser()}"
    except Exception:
        return "cli"


def open_project(ctx: typer.Context, project: str) -> tuple[Any, str]:
    """The configured store and the id of ``project`` (created if missing)."""
    from keel.cli.keys import ensure_project

    store = open_cli_store(ctx)
    proj: Any = ensure_project(store, project)
    return store, proj.id
