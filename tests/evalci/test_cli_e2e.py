"""End to end through the real CLI (subprocesses) on SQLite, against a scripted upstream.

Prompt v1 (production), a regressing v2 and an improving v3 run the same suite on one stored
dataset version; the gate compares each with production's run: regression -> exit 1 with a
report naming the rows, improvement -> exit 0; config errors exit 2; an upstream outage or a
dead store exits 3; a run killed with SIGKILL resumes without re-sending a completed row.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from keel.core.datasets import Row
from keel.core.prompts import PromptContent, PromptMessage
from keel.datasets.service import ensure_dataset, push_rows
from keel.errors import GateFailedError
from keel.evals.label_guard import PassedRunGuard
from keel.prompts.registry import PromptRegistry
from keel.storage import open_store

from .upstream import ScriptedUpstream, scripted_answer

KEEL = str(Path(sys.executable).parent / "keel")
pytestmark = pytest.mark.timeout(600)  # several CLI processes per test
QUESTIONS = {f"What is the refund code for order {i}?": f"RF-{i:04d}" for i in range(80)}
SYSTEMS = {
    1: "You are a helpful refund agent.",
    2: "You are a terse refund agent.",  # regresses
    3: "You are a careful refund agent.",  # improves
}


def keel(*args: str, store: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KEEL_STORE_URL": store, "NO_COLOR": "1", "COLUMNS": "200"}
    return subprocess.run(
        [KEEL, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture
def world(tmp_path):
    url = f"sqlite:///{tmp_path}/keel.db"
    store = open_store(url)
    pid = store.projects.add_project("default").id
    reg = PromptRegistry(store, guards=[])
    for v, system in SYSTEMS.items():
        content = PromptContent(
            type="chat",
            messages=[
                PromptMessage(role="system", content=system),
                PromptMessage(role="user", content="{{question}}"),
            ],
            model_config={"temperature": 0},
        )
        pv, _ = reg.push(pid, "refund-agent", content, message=f"v{v}")
        assert pv.version == v
    store.prompts.put_label(pid, "refund-agent", "production", 1)
    ds = ensure_dataset(store, pid, "refund-cases")
    push_rows(
        store,
        ds,
        [Row(input={"question": q}, expected_output=a) for q, a in QUESTIONS.items()],
    )
    store.close()
    with ScriptedUpstream(mode="quality", answers=QUESTIONS) as up:
        suite = tmp_path / "suite.yaml"
        suite.write_text(
            f"""
name: refund-agent
target:
  prompt: refund-agent@production
  model: scripted
  base_url: {up.base_url}
dataset: refund-cases@1
evaluators:
  - exact_match
gate:
  rules: ["exact_match.pass_rate>=0.2"]
  min_samples: 50
  regression: {{margin: 0.05, confidence: 0.95}}
baseline: production
run: {{concurrency: 8, retries: 1, backoff_s: 0.01}}
links: https://keel.example.com
"""
        )
        yield {"url": url, "dir": tmp_path, "suite": str(suite), "up": up, "pid": pid}


def test_regression_fails_improvement_passes_and_production_needs_a_passed_run(world):
    url, d, suite = world["url"], world["dir"], world["suite"]
    base = keel("eval", "run", suite, "--json", str(d / "v1.json"), store=url, cwd=d)
    assert base.returncode == 0, base.stdout + base.stderr
    v1 = json.loads((d / "v1.json").read_text())
    assert v1["run"]["prompt_version"] == 1 and v1["run"]["dataset_version"] == 1
    assert any(c.get("skipped") for c in v1["verdict"]["checks"])  # no baseline run yet

    bad = keel(
        "eval", "run", suite, "--target", "prompt:refund-agent@2",
        "--markdown", str(d / "v2.md"), "--junit", str(d / "v2.xml"), "--json", str(d / "v2.json"),
        store=url, cwd=d,
    )
    assert bad.returncode == 1, bad.stdout + bad.stderr
    rep = json.loads((d / "v2.json").read_text())
    reg = next(c for c in rep["verdict"]["checks"] if c["kind"] == "regression")
    assert reg["passed"] is False and reg["significant"] and reg["drop_exceeds_margin"]
    assert reg["baseline_run"] == v1["run"]["id"]
    md = (d / "v2.md").read_text()
    assert "failed" in md and "regressed" in md
    # the report names the rows that broke, with links
    broke = [f["row_id"] for f in rep["flipped"] if f["direction"] == "broke"]
    assert broke and all(r in md for r in broke[:5])
    assert f"https://keel.example.com/evals/runs/{rep['run']['id']}#row-{broke[0]}" in md
    # the rows named are the ones the scripted upstream really got wrong under v2
    for row in rep["worst"]:
        q = row["input"]["question"]
        msgs_v2 = [{"role": "system", "content": SYSTEMS[2]}, {"role": "user", "content": q}]
        assert scripted_answer(msgs_v2, QUESTIONS) != QUESTIONS[q]
    xml = (d / "v2.xml").read_text()
    assert xml.count("<testcase ") == 80 + len(rep["verdict"]["checks"])
    assert "<failure" in xml

    good = keel("eval", "run", suite, "--target", "prompt:refund-agent@3", "--json", str(d / "v3.json"), store=url, cwd=d)
    assert good.returncode == 0, good.stdout + good.stderr
    rep3 = json.loads((d / "v3.json").read_text())
    reg3 = next(c for c in rep3["verdict"]["checks"] if c["kind"] == "regression")
    assert reg3["passed"] and reg3["mean_delta"] > 0

    # list / show / compare
    lst = keel("--json", "eval", "list", store=url, cwd=d)
    assert lst.returncode == 0 and len(json.loads(lst.stdout)) == 3
    show = keel("--json", "eval", "show", rep["run"]["id"], store=url, cwd=d)
    assert show.returncode == 0 and len(json.loads(show.stdout)["results"]) == 80
    cmp_ = keel("--json", "eval", "compare", v1["run"]["id"], rep["run"]["id"], store=url, cwd=d)
    c = json.loads(cmp_.stdout)
    assert c["evaluators"][0]["significant_drop"] is True
    assert {f["row_id"] for f in c["flipped"] if f["direction"] == "broke"} == set(broke)

    # protected label: production may move to v3 (passed run), not to v2 (failed run)
    store = open_store(url)
    try:
        guarded = PromptRegistry(store, guards=[PassedRunGuard()])
        with pytest.raises(GateFailedError, match="failed the gate"):
            guarded.move_label(world["pid"], "refund-agent", "production", 2, actor="ci")
        lab = guarded.move_label(world["pid"], "refund-agent", "production", 3, actor="ci")
        assert lab.version == 3
        guarded.move_label(world["pid"], "refund-agent", "canary", 2, actor="ci")  # unprotected
    finally:
        store.close()


def test_rerun_is_served_from_cache(world):
    url, d, suite = world["url"], world["dir"], world["suite"]
    assert keel("eval", "run", suite, store=url, cwd=d).returncode == 0
    sent = len(world["up"].requests)
    assert sent == 80
    r = keel("eval", "run", suite, "--json", str(d / "again.json"), store=url, cwd=d)
    assert r.returncode == 0
    assert len(world["up"].requests) == sent  # nothing re-sent
    assert json.loads((d / "again.json").read_text())["run"]["summary"]["cached"] == 80


def test_config_errors_exit_2(world, tmp_path):
    url, d, suite = world["url"], world["dir"], world["suite"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ntarget: {model: fake:echo, colour: red}\ndataset: refund-cases\nevaluators: [exact_match]\n")
    r = keel("eval", "run", str(bad), store=url, cwd=d)
    assert r.returncode == 2 and "target.colour: unknown key" in r.stderr
    assert keel("eval", "run", suite, "--gate", "exact_match.avg>=1", store=url, cwd=d).returncode == 2
    assert keel("eval", "run", suite, "--dataset", "nope@1", store=url, cwd=d).returncode == 2
    assert keel("eval", "run", str(tmp_path / "missing.yaml"), store=url, cwd=d).returncode == 2
    r = keel("eval", "run", suite, "--target", "prompt:refund-agent@9", store=url, cwd=d)
    assert r.returncode == 2
    assert world["up"].requests == []


def test_outage_exits_3_and_dead_store_exits_3(world):
    url, d, suite = world["url"], world["dir"], world["suite"]
    world["up"].mode = "down"
    r = keel("eval", "run", suite, store=url, cwd=d)
    assert r.returncode == 3, r.stdout + r.stderr
    assert "looks down" in r.stderr and "--resume" in r.stderr
    assert len(world["up"].requests) < 80 * 2  # aborted early, not 80 rows × retries
    r = keel("eval", "run", suite, store="postgresql+psycopg://nobody@127.0.0.1:1/none", cwd=d)
    assert r.returncode == 3, r.stderr


def _stored_rows(db: Path) -> tuple[str | None, set[str]]:
    eng = sa.create_engine(f"sqlite:///{db}")
    try:
        with eng.connect() as c:
            run = c.exec_driver_sql("SELECT id FROM eval_runs").scalar()
            rows = {r[0] for r in c.exec_driver_sql("SELECT row_id FROM eval_results")}
            return run, rows
    except sa.exc.OperationalError:
        return None, set()
    finally:
        eng.dispose()


def test_sigkill_then_resume_resends_no_completed_row(tmp_path):
    db = tmp_path / "keel.db"
    url = f"sqlite:///{db}"
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"id": f"row{i}", "input": f"ping {i}", "expected_output": f"ping {i}"}) + "\n" for i in range(300)))
    with ScriptedUpstream(mode="echo", latency_s=0.03) as up:
        suite = tmp_path / "suite.yaml"
        suite.write_text(
            f"""
name: resume
target: {{model: scripted, base_url: {up.base_url}}}
dataset: {{path: rows.jsonl}}
evaluators: [exact_match]
gate: ["exact_match.pass_rate>=1"]
run: {{concurrency: 4, cache: false}}
"""
        )
        env = {**os.environ, "KEEL_STORE_URL": url}
        proc = subprocess.Popen([KEEL, "eval", "run", str(suite), "--no-progress"], cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        done: set[str] = set()
        while time.monotonic() < deadline:
            _, done = _stored_rows(db)
            if len(done) >= 60:
                break
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        run_id, done = _stored_rows(db)
        assert run_id and 60 <= len(done) < 300
        before = len(up.requests)
        up.requests.clear()
        r = keel("eval", "run", str(suite), "--resume", run_id, "--json", str(tmp_path / "r.json"), store=url, cwd=tmp_path)
        assert r.returncode == 0, r.stdout + r.stderr
        resent = {t.removeprefix("ping ") for t in up.user_texts()}
        assert not ({f"row{i}" for i in map(int, resent)} & done)  # no completed row re-sent
        assert len(up.requests) == 300 - len(done)
        assert before >= len(done)
        rep = json.loads((tmp_path / "r.json").read_text())
        assert rep["run"]["id"] == run_id and rep["run"]["summary"]["results"] == 300
        assert rep["passed"] is True
        # resuming with another configuration is refused
        suite.write_text(suite.read_text().replace("exact_match]", "exact_match, levenshtein]"))
        r = keel("eval", "run", str(suite), "--resume", run_id, store=url, cwd=tmp_path)
        assert r.returncode == 2 and "another configuration" in r.stderr
