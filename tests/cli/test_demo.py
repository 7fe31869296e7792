"""`keel demo` brings up a real server on SQLite and runs the workflow (the README's promise)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path):
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEEL_")}
    r = subprocess.run(
        [sys.executable, "-m", "keel", "demo", "--port", str(port), "--no-wait"],
        cwd=tmp_path,
        env={**env, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "failed:" not in r.stdout, r.stdout
    assert "gate passed (exit 0)" in r.stdout and "production stays on v1" in r.stdout, r.stdout
    assert "keel_sk_" in r.stdout and f"http://127.0.0.1:{port}" in r.stdout
    assert "401 without it" in r.stdout
    assert (tmp_path / ".keel" / "keel.db").exists()
    report = (tmp_path / ".keel" / "demo" / "report-v2.md").read_text()
    assert "failed" in report and "states_policy" in report
