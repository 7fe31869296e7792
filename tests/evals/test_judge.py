"""LLM-as-judge mechanics against a scripted model, a real HTTP endpoint on loopback, and the
prompt registry; Hybrid escalation. The real local model is in test_judge_local.py (slow)."""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from keel.errors import ProviderError
from keel.evals.base import EvalResult, Evaluator
from keel.evals.evaluate import evaluate_rows
from keel.evals.judge import Hybrid, LLMJudge, OpenAIJudgeModel, ScriptedJudgeModel, parse_judgement

OK = '{"score": 5, "reason": "fully correct"}'

PARSE_CASES = [
    (OK, 1.0),
    ('```json\n{"score": 1, "reason": "wrong"}\n```', 0.0),
    ('Sure: {"score": "3", "reason": "half"}', 0.5),
]


@pytest.mark.parametrize(("text", "value"), PARSE_CASES)
def test_parse_judgement(text: str, value: float) -> None:
    assert parse_judgement(text, (1, 5))[0] == value


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "score: 5",
        '{"score": 9, "reason": "x"}',
        '{"reason": "x"}',
        '{"score": true}',
        "[5]",
        '{"score": "high"}',
    ],
)
def test_parse_judgement_rejects_malformed(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_judgement(bad, (1, 5))


def judge(replies: list[Any], **kw: Any) -> tuple[LLMJudge, ScriptedJudgeModel]:
    m = ScriptedJudgeModel(replies)
    return LLMJudge("The answer is correct.", model=m, **kw), m


def test_judge_scores_and_records_prompt_hash() -> None:
    j, m = judge([OK])
    s = j.evaluate(query="2+2?", response="4")
    assert s.score == 1.0 and s.passed is True and s.reason == "fully correct"
    assert s.judge_model == "scripted" and s.judge_prompt_hash == j.prompt.hash()
    sent = m.calls[0]["messages"]
    assert (
        sent[0]["role"] == "system" and "2+2?" in sent[1]["content"] and "4" in sent[1]["content"]
    )
    assert m.calls[0]["response_format"]["type"] == "json_schema"


def test_judge_retries_malformed_then_succeeds() -> None:
    j, m = judge(
        ["I think it is good", '{"score": 7}', '{"score": 4, "reason": "mostly"}'], retries=2
    )
    s = j.evaluate(query="q", response="r")
    assert s.score == 0.75 and s.error is None
    assert len(m.calls) == 3 and len(s.details["attempts"]) == 3
    assert m.calls[1]["messages"][-1]["role"] == "user"  # the correction request


def test_judge_failure_is_a_recorded_error_never_nan() -> None:
    j, _ = judge(["garbage", "more garbage", "still garbage"], retries=2)
    s = j.evaluate(query="q", response="r")
    assert s.value is None and s.passed is None
    assert s.error and "3 attempt" in s.error
    assert s.judge_prompt_hash == j.prompt_hash
    assert not (isinstance(s.value, float) and math.isnan(s.value))


def test_judge_timeouts_are_retried_and_recorded() -> None:
    j, _ = judge([("sleep", 5.0, OK), OK], timeout=0.05, retries=1)
    s = j.evaluate(query="q", response="r")
    assert s.score == 1.0 and "upstream_timeout" in s.details["attempts"][0]["error"]
    j, _m = judge([("sleep", 5.0, OK), ("sleep", 5.0, OK)], timeout=0.05, retries=1)
    s = j.evaluate(query="q", response="r")
    assert s.error and "timed out" in s.error


def test_non_retryable_provider_error_stops_early() -> None:
    j, m = judge([ProviderError("bad key", upstream_status=401, retryable=False), OK], retries=3)
    s = j.evaluate(query="q", response="r")
    assert s.error and len(m.calls) == 1


def test_batch_with_failing_judge_rows_does_not_abort() -> None:
    j, _ = judge([OK, "junk", "junk", "junk", '{"score": 1, "reason": "no"}'], retries=2)
    rows = [
        {"query": "a", "response": "b"},
        {"query": "c", "response": "d"},
        {"query": "e", "response": "f"},
    ]
    scores = [r[0] for r in evaluate_rows(rows, j)]
    assert [s.value for s in scores] == [1.0, None, 0.0]
    assert scores[1].error and scores[0].target_kind == "row"


class _Handler(BaseHTTPRequestHandler):
    replies: list[tuple[int, Any]] = []
    seen: list[dict[str, Any]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        type(self).seen.append(
            {"path": self.path, "auth": self.headers.get("authorization"), "body": body}
        )
        status, content = type(self).replies.pop(0)
        data = json.dumps(
            {
                "id": "x",
                "object": "chat.completion",
                "model": body["model"],
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": content},
                        "finish_reason": "stop",
                    }
                ],
            }
            if status == 200
            else {"error": {"message": str(content)}}
        ).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *a: Any) -> None:
        pass


@pytest.fixture
def endpoint() -> Iterator[str]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    _Handler.seen = []
    yield f"http://127.0.0.1:{srv.server_address[1]}/v1"
    srv.shutdown()
    srv.server_close()


def test_openai_compatible_judge_over_http(endpoint: str) -> None:
    _Handler.replies = [(503, "overloaded"), (200, '{"score": 4, "reason": "ok"}')]
    model = OpenAIJudgeModel("gpt-judge", base_url=endpoint, api_key="sk-test")
    s = LLMJudge("correct?", model=model, retries=1).evaluate(query="q", response="r")
    assert s.score == 0.75 and s.judge_model == "gpt-judge"
    assert (
        _Handler.seen[0]["path"] == "/v1/chat/completions"
        and _Handler.seen[0]["auth"] == "Bearer sk-test"
    )
    assert _Handler.seen[1]["body"]["response_format"]["json_schema"]["name"] == "judgement"
    _Handler.replies = [(401, "bad key")]
    s = LLMJudge("correct?", model=model, retries=3).evaluate(query="q", response="r")
    assert s.error and "401" in s.error and len(_Handler.seen) == 3


def test_judge_prompt_is_pushed_to_the_prompt_registry() -> None:
    from keel.storage import open_store

    store = open_store("memory://")
    try:
        j = LLMJudge(
            "polite?", model=ScriptedJudgeModel([OK]), store=store, prompt_name="judge-polite"
        )
        again = LLMJudge(
            "polite?", model=ScriptedJudgeModel([OK]), store=store, prompt_name="judge-polite"
        )
        v = store.prompts.get_latest_version("default", "judge-polite")
        assert v.content_hash == j.prompt_hash == again.prompt_hash and v.version == 1
        changed = LLMJudge(
            "polite and brief?",
            model=ScriptedJudgeModel([OK]),
            store=store,
            prompt_name="judge-polite",
        )
        assert store.prompts.get_latest_version("default", "judge-polite").version == 2
        assert changed.prompt_hash != j.prompt_hash
    finally:
        store.close()


class _Fixed(Evaluator):
    name = "FixedLocal"
    required_inputs = frozenset({"response"})

    def _evaluate(self, *, response: Any, **_: Any) -> EvalResult:
        return EvalResult(float(response))


def test_hybrid_escalates_only_unsure_rows() -> None:
    m = ScriptedJudgeModel(['{"score": 5, "reason": "judge says yes"}'])
    h = Hybrid(_Fixed(), LLMJudge("ok?", model=m, inputs=("response",)), unsure=(0.4, 0.6))
    sure = h.evaluate(response="0.9")
    assert sure.passed is True and sure.details["escalated"] is False and not m.calls
    unsure = h.evaluate(response="0.5")
    assert (
        unsure.details["escalated"] is True
        and unsure.score == 1.0
        and unsure.judge_model == "scripted"
    )
    failing = Hybrid(
        _Fixed(),
        LLMJudge("ok?", model=ScriptedJudgeModel(["x"]), inputs=("response",), retries=0),
        unsure=(0.4, 0.6),
    )
    s = failing.evaluate(response="0.45")
    assert s.score == 0.45 and s.details["judge_error"] and s.error is None
