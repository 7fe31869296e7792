"""The root ``keel`` command: global options and the command groups."""

from __future__ import annotations

import typer

from keel import __version__
from keel.cli.common import CliState
from keel.cli.datasets import datasets_app
from keel.cli.demo import demo
from keel.cli.eval import eval_app
from keel.cli.keys import keys_app, projects_app
from keel.cli.prompts import prompts_app
from keel.cli.serve import serve
from keel.cli.traces import traces_app

app = typer.Typer(
    name="keel",
    help="Keel: traces, prompts, datasets, evaluators, gateway and gated releases as one record.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _root(
    ctx: typer.Context,
    config: str | None = typer.Option(None, "--config", "-c", help="path to keel.toml"),
    json: bool = typer.Option(False, "--json", help="machine-readable JSON output"),
    store: str | None = typer.Option(
        None, "--store", help="store URL (overrides keel.toml)", envvar="KEEL_STORE_URL"
    ),
) -> None:
    ctx.obj = CliState(config=config, json=json, store_url=store)


@app.command()
def version() -> None:
    """Print Keel's version."""
    typer.echo(__version__)


app.command("serve")(serve)
app.command("demo")(demo)
app.add_typer(keys_app, name="keys")
app.add_typer(projects_app, name="projects")
app.add_typer(traces_app, name="traces")
app.add_typer(prompts_app, name="prompts")
app.add_typer(datasets_app, name="datasets")
app.add_typer(eval_app, name="eval")


def main() -> None:
    """Console entry point."""
    app()
