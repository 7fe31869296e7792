"""The pytest plugin: marker + fixtures, run in a child pytest on a generated test file."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_marker_fixture_suite_and_summary(tmp_path):
    (tmp_path / "suite.yaml").write_text(
        textwrap.dedent(
            """
            name: plugin
            target: {model: fake:echo}
            dataset: {rows: [{id: a, input: hi, expected_output: hi}, {id: b, input: yo, expected_output: yo}]}
            evaluators: [exact_match]
            gate: ["exact_match.pass_rate>=1"]
            """
        )
    )
    (tmp_path / "test_cases.py").write_text(
        textwrap.dedent(
            """
            import pytest

            @pytest.mark.keel_eval("exact_match", {"Contains": "refund"})
            def test_good(keel_eval):
                scores = keel_eval(response="refund", expected_output="refund")
                assert [s.evaluator for s in scores] == ["ExactMatch", "Contains"]

            @pytest.mark.keel_eval("exact_match")
            def test_bad(keel_eval):
                keel_eval(response="no refund", expected_output="refund")

            def test_check_with_threshold(keel_eval):
                s = keel_eval.check("levenshtein", response="refund", expected_output="refunds", threshold=0.8)
                assert s.passed

            def test_suite(keel_suite):
                out = keel_suite("suite.yaml")
                assert out.verdict.passed
                out2 = keel_suite("suite.yaml", gates=["exact_match.pass_rate>=1.01"])
                assert not out2.verdict.passed
            """
        )
    )
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--keel-junit", "scores.xml", "test_cases.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = r.stdout
    assert r.returncode == 1, out
    assert "1 failed, 3 passed" in out
    assert "ExactMatch scored 0.000" in out
    assert "keel evals" in out and "ExactMatch: 1/2 passed" in out
    xml = (tmp_path / "scores.xml").read_text()
    assert xml.count("<testcase") == 4 and 'failures="1"' in xml
