"""pytest plugin for Keel evals (registered through the ``pytest11`` entry point).

Eval cases can live in an ordinary test suite::

    import pytest

    @pytest.mark.keel_eval("exact_match", {"Contains": "refund"}, threshold=None)
    def test_refund_answer(keel_eval):
        answer = my_app.answer("Can I get a refund?")
        keel_eval(response=answer, expected_output="Yes, within 30 days.")   # fails the test on a miss

    def test_grounded(keel_eval):
        keel_eval.check("Groundedness", response=answer, context=docs, threshold=0.8)

    def test_suite(keel_suite):
        outcome = keel_suite("evals/refund.yaml")   # a whole suite file, gated
        assert outcome.verdict.passed, outcome.verdict.summary

Every score is kept and summarised at the end of the session (per evaluator: cases, passed,
mean). ``--keel-junit FILE`` writes those scores as JUnit XML as well.

Kept import-light: nothing of Keel is imported until a fixture is used.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

_SCORES_KEY = "keel_eval_scores"


def pytest_addoption(parser: Any) -> None:
    """``--keel-store`` (where ``keel_suite`` stores runs) and ``--keel-junit``."""
    group = parser.getgroup("keel", "Keel evals")
    group.addoption(
        "--keel-store",
        default=None,
        help="store URL for keel_suite runs (default: in memory)",
    )
    group.addoption("--keel-junit", default=None, help="write keel_eval scores as JUnit XML here")


def pytest_configure(config: Any) -> None:
    """Register the marker."""
    config.addinivalue_line(
        "markers",
        "keel_eval(*evaluators, threshold=None): an evaluation case run through Keel evaluators",
    )
    config.stash[_scores_key] = []


_scores_key: Any = pytest.StashKey[list[tuple[str, Any]]]()


class EvalCase:
    """The ``keel_eval`` fixture: evaluate inputs, record the scores, fail on a miss."""

    def __init__(self, nodeid: str, default_specs: list[Any], threshold: float | None, sink: list[tuple[str, Any]]) -> None:
        self.nodeid = nodeid
        self.default_specs = default_specs
        self.threshold = threshold
        self.sink = sink
        self.scores: list[Any] = []

    def _build(self, spec: Any, threshold: float | None) -> Any:
        from keel.evals.base import Evaluator
        from keel.evals.registry import create_evaluator

        ev = spec if isinstance(spec, Evaluator) else create_evaluator(spec)
        if threshold is not None:
            ev.threshold = float(threshold)
        return ev

    def check(self, evaluator: Any, *, threshold: float | None = None, **inputs: Any) -> Any:
        """Run one evaluator; ``AssertionError`` (with the reason) when it does not pass."""
        ev = self._build(evaluator, threshold if threshold is not None else self.threshold)
        allowed = ev.required_inputs | ev.optional_inputs
        score = ev.evaluate(**{k: v for k, v in inputs.items() if k in allowed})
        self.scores.append(score)
        self.sink.append((self.nodeid, score))
        if score.error:
            raise AssertionError(f"{score.evaluator} errored: {score.error}")
        if not score.passed:
            raise AssertionError(
                f"{score.evaluator} scored {score.value:.3f} (threshold {score.threshold}): {score.reason}"
            )
        return score

    def __call__(self, **inputs: Any) -> list[Any]:
        """Run the marker's evaluators on ``inputs``; every one must pass."""
        if not self.default_specs:
            raise pytest.UsageError(
                "keel_eval(...) needs evaluators: @pytest.mark.keel_eval('exact_match', ...)"
            )
        out, failures = [], []
        for spec in self.default_specs:
            try:
                out.append(self.check(spec, **inputs))
            except AssertionError as e:
                failures.append(str(e))
        if failures:
            raise AssertionError("; ".join(failures))
        return out


@pytest.fixture
def keel_eval(request: Any) -> EvalCase:
    """Evaluate a case with Keel evaluators (see the module docstring)."""
    marker = request.node.get_closest_marker("keel_eval")
    specs = list(marker.args) if marker else []
    threshold = marker.kwargs.get("threshold") if marker else None
    if marker and "evaluators" in marker.kwargs:
        specs += list(marker.kwargs["evaluators"])
    return EvalCase(request.node.nodeid, specs, threshold, request.config.stash[_scores_key])


@pytest.fixture
def keel_suite(request: Any) -> Iterator[Callable[..., Any]]:
    """Run a suite file (with optional CLI-style overrides) and return its outcome."""
    from keel.storage import open_store

    url = request.config.getoption("--keel-store") or "memory://"
    store = open_store(url)

    def run(path: str, **overrides: Any) -> Any:
        from keel.evals.ci import run_suite
        from keel.evals.suite import apply_overrides, load_suite

        suite = load_suite(path)
        if overrides:
            suite = apply_overrides(suite, **overrides)
        p = store.projects.find_project_by_name("default") or store.projects.add_project("default")
        return run_suite(suite, store, project_id=p.id)

    try:
        yield run
    finally:
        store.close()


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: Any) -> None:
    """Per evaluator: cases, passed, mean score."""
    scores = config.stash.get(_scores_key, [])
    if not scores:
        return
    agg: dict[str, list[Any]] = {}
    for _, s in scores:
        agg.setdefault(s.evaluator, []).append(s)
    terminalreporter.section("keel evals")
    for name, ss in sorted(agg.items()):
        vals = [s.value for s in ss if s.value is not None]
        mean = sum(vals) / len(vals) if vals else float("nan")
        passed = sum(1 for s in ss if s.passed)
        terminalreporter.write_line(f"{name}: {passed}/{len(ss)} passed, mean {mean:.3f}")
    path = config.getoption("--keel-junit", None)
    if path:
        _write_junit(path, scores)


def _write_junit(path: str, scores: list[tuple[str, Any]]) -> None:
    from xml.sax.saxutils import escape, quoteattr

    cases = []
    fails = 0
    for nodeid, s in scores:
        body = ""
        if s.error:
            body = f"<error message={quoteattr(s.error)}/>"
        elif not s.passed:
            fails += 1
            body = f"<failure message={quoteattr(f'{s.value:.3f} < {s.threshold}')}>{escape(s.reason or '')}</failure>"
        cases.append(f"  <testcase classname={quoteattr(s.evaluator)} name={quoteattr(nodeid)}>{body}</testcase>")
    xml = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<testsuite name="keel evals" tests="{len(cases)}" failures="{fails}">\n'
        + "\n".join(cases)
        + "\n</testsuite>\n"
    )
    with open(path, "w", encoding="utf-8") as f:
        f.write(xml)
