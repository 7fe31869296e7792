"""``keel serve --workers N`` checks the app imports before uvicorn forks its workers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import uvicorn

import keel.server.app as app_module
from keel.cli.main import app


def test_broken_app_fails_once_before_workers_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """uvicorn would restart each dying worker forever; the parent must fail first, loudly."""
    from typer.testing import CliRunner

    started: list[object] = []
    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: started.append(a))
    monkeypatch.setattr(app_module, "ROUTER_MODULES", ["keel.server.no_such_router_module"])
    res = CliRunner().invoke(
        app, ["--store", f"sqlite:///{tmp_path}/k.db", "serve", "--workers", "2", "--port", "1"]
    )
    assert res.exit_code != 0
    assert "no_such_router_module" in repr(res.exception) + res.output
    assert started == []


def test_workers_refuse_a_memory_store() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "keel", "--store", "memory://", "serve", "--workers", "2"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert "shared store" in proc.stderr + proc.stdout


def test_runtime_tuning_of_a_server_process() -> None:
    code = (
        "import gc, sys; from keel.cli.serve import tune_runtime; tune_runtime();"
        "assert gc.get_threshold()[0] == 50_000, gc.get_threshold();"
        "assert abs(sys.getswitchinterval() - 0.0005) < 1e-9, sys.getswitchinterval();"
        "assert gc.get_freeze_count() > 0"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
