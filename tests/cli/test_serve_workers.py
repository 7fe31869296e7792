"""``keel serve --workers N``: the app is imported before workers start, connections are spread
over the workers by the parent, dead workers are replaced, and nothing is left behind on stop."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import keel.server.app as app_module
import keel.server.workers as workers_module
from keel.cli.main import app
from keel.server.workers import _Worker, pick


def test_broken_app_fails_once_before_workers_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """uvicorn would restart each dying worker forever; the parent must fail first, loudly."""
    from typer.testing import CliRunner

    started: list[object] = []
    monkeypatch.setattr(workers_module, "run", lambda *a, **k: started.append(a))
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


# ----------------------------------------------------------------------------- balancing


def _w(i: int, open_: int, ready: bool = True) -> _Worker:
    w = _Worker(i, "warning", {})
    w.open, w.ready = open_, ready
    w.channel = socket.socket()  # only tested for None
    return w


def test_pick_prefers_fewest_open_connections_then_takes_turns() -> None:
    pool = [_w(0, 2), _w(1, 1), _w(2, 1), _w(3, 0, ready=False)]
    try:
        assert [w.index for w in pick(pool, 0)] == [1, 2, 0]
        assert [w.index for w in pick(pool, 2)] == [2, 1, 0]  # ties: whose turn it is first
        pool[0].open = 0
        assert pick(pool, 1)[0].index == 0
    finally:
        for w in pool:
            assert w.channel is not None
            w.channel.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            out.extend(int(x) for x in f.read().split())
    return out


def _owner_of(client: socket.socket, pids: list[int]) -> int:
    """The worker process holding the server end of ``client``'s TCP connection."""
    port = client.getsockname()[1]
    inode = None
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            rem_port = int(fields[2].split(":")[1], 16)
            if rem_port == port and fields[3] == "01":  # ESTABLISHED, the server's end
                inode = fields[9]
    assert inode is not None
    for pid in pids:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == f"socket:[{inode}]":
                    return pid
            except OSError:
                continue
    raise AssertionError(f"no worker holds the connection from port {port}")


def _get(conn: http.client.HTTPConnection, path: str = "/healthz") -> int:
    conn.request("GET", path)
    r = conn.getresponse()
    r.read()
    return r.status


@pytest.mark.slow
def test_keep_alive_connections_are_spread_over_workers_and_a_dead_worker_is_replaced(
    tmp_path: Path, keel_serve: Any
) -> None:
    port = _free_port()
    proc = keel_serve(tmp_path / "w.db", port, workers=2)
    try:
        pids = _children(proc.pid)
        assert len(pids) == 2
        conns = [http.client.HTTPConnection("127.0.0.1", port, timeout=10) for _ in range(4)]
        for c in conns:
            assert _get(c) == 200
        owners = [_owner_of(c.sock, pids) for c in conns]  # type: ignore[arg-type]
        # uvicorn's workers raced for each accept; a 3–1 or 4–0 split was common
        assert sorted(owners.count(p) for p in pids) == [2, 2], owners
        # closing connections frees their worker's share: the next two go to that worker
        victim = owners[0]
        for c, o in zip(conns, owners, strict=True):
            if o == victim:
                c.close()
        time.sleep(0.3)
        fresh = [http.client.HTTPConnection("127.0.0.1", port, timeout=10) for _ in range(2)]
        for c in fresh:
            assert _get(c) == 200
        assert [_owner_of(c.sock, pids) for c in fresh] == [victim, victim]  # type: ignore[arg-type]

        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            now = _children(proc.pid)
            if len(now) == 2 and victim not in now:
                break
            time.sleep(0.1)
        else:
            raise AssertionError("the dead worker was not replaced")
        survivor = next(p for p in pids if p != victim)
        replacement = next(p for p in _children(proc.pid) if p != survivor)
        time.sleep(2)  # until the replacement serves
        # the survivor's connections still work; new connections reach the replacement
        for c, o in zip(conns, owners, strict=True):
            if o == survivor:
                assert _get(c) == 200
        late = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        assert _get(late) == 200
        assert _owner_of(late.sock, [survivor, replacement]) == replacement  # type: ignore[arg-type]
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    assert all(not os.path.exists(f"/proc/{p}") for p in pids)


@pytest.mark.slow
def test_workers_exit_when_the_parent_is_killed(tmp_path: Path, keel_serve: Any) -> None:
    port = _free_port()
    proc = keel_serve(tmp_path / "w.db", port, workers=2)
    pids = _children(proc.pid)
    proc.kill()
    proc.wait(10)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.1)
    assert not any(_alive(p) for p in pids), "orphaned workers kept running"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_a_worker_that_cannot_start_stops_the_server_with_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No restart loop: a worker dying before it serves stops the parent, with a reason."""
    from keel.errors import ConfigError

    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\necho 'worker: broken install' >&2\nexit 3\n")
    fake.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(fake))
    t0 = time.monotonic()
    with pytest.raises(ConfigError, match=r"worker \d exited with status 3 before it started"):
        workers_module.run("127.0.0.1", _free_port(), 2, "warning", dict(os.environ))
    assert time.monotonic() - t0 < 10


def test_without_descriptor_passing_serve_falls_back_to_uvicorn_workers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import uvicorn
    from typer.testing import CliRunner

    assert workers_module.supported()  # Linux
    ran: list[dict[str, object]] = []
    monkeypatch.setattr(workers_module, "supported", lambda: False)
    monkeypatch.setattr(workers_module, "run", lambda *a, **k: pytest.fail("balancer used"))
    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: ran.append(k))
    res = CliRunner().invoke(
        app, ["--store", f"sqlite:///{tmp_path}/k.db", "serve", "--workers", "3", "--port", "1"]
    )
    assert res.exit_code == 0, res.output
    assert ran and ran[0]["workers"] == 3 and ran[0]["factory"] is True
