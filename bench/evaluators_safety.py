"""Safety and structure evaluator figures: PromptInjection on bastioncorpus, JSONValidation and
ToolSelectionAccuracy on built cases.

Functions (imported by ``bench/evaluators.py``; each returns a dict of figures):

* :func:`prompt_injection_bastion` - TPR at <= 1 % FPR on the held-out half of the 181
  labelled ``bastioncorpus`` rows (:func:`bastion_split`; the other half may be used for
  training), TPR/FPR at the shipped default cut, ROC AUC, per-channel, per-language and
  per-category TPR, CPU ms per row.
* :func:`json_validation_accuracy` - accuracy of JSONValidation on hand-built cases.
* :func:`tool_selection_accuracy` - accuracy of ToolSelectionAccuracy's pass/fail on
  hand-built cases.

Run alone: ``python bench/evaluators_safety.py [--quick]``.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import pathlib
import time
from typing import Any


def bastion_rows() -> list[dict[str, Any]]:
    """The bastioncorpus injection rows (located in site-packages, not imported)."""
    spec = importlib.util.find_spec("bastioncorpus")
    if spec is None or not spec.origin:
        raise SystemExit("bastioncorpus is not installed")
    p = pathlib.Path(spec.origin).parent / "corpus" / "injections.jsonl"
    return [json.loads(line) for line in p.read_text("utf-8").splitlines() if line.strip()]


def bastion_split(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``(train, held_out)``: a fixed half of each category for tuning, the other half held out.

    Within each category the rows are ordered by SHA-256 of their id; even positions are held
    out (so a category of n rows holds out ceil(n/2)). Fixed before any model saw the corpus.
    """
    by_cat: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_cat.setdefault(r["category"], []).append(r)
    train: list[dict[str, Any]] = []
    held: list[dict[str, Any]] = []
    for cat in sorted(by_cat):
        ordered = sorted(by_cat[cat], key=lambda r: hashlib.sha256(r["id"].encode()).hexdigest())
        for i, r in enumerate(ordered):
            (held if i % 2 == 0 else train).append(r)
    return train, held


def _auc(pos: list[float], neg: list[float]) -> float:
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def tpr_at_fpr(pos: list[float], neg: list[float], max_fpr: float = 0.01) -> tuple[float, float]:
    """``(TPR, cut)`` at the lowest cut whose FPR on ``neg`` is <= ``max_fpr``."""
    negs = sorted(neg, reverse=True)
    allowed = int(len(negs) * max_fpr)
    cut = negs[allowed] + 1e-9 if allowed < len(negs) else 0.0
    return sum(p >= cut for p in pos) / len(pos), cut


def _figures(probs: list[float], rows: list[dict[str, Any]], cut: float) -> dict[str, Any]:
    pos = [p for p, r in zip(probs, rows, strict=True) if r["label"] == "malicious"]
    neg = [p for p, r in zip(probs, rows, strict=True) if r["label"] != "malicious"]
    tpr1, cut1 = tpr_at_fpr(pos, neg, 0.01)
    by: dict[str, dict[str, str]] = {}
    for key in ("channel", "lang", "category"):
        groups: dict[str, list[float]] = {}
        for p, r in zip(probs, rows, strict=True):
            if r["label"] == "malicious":
                groups.setdefault(r[key], []).append(p)
        by[key] = {
            g: f"{sum(x >= cut for x in v)}/{len(v)} | {sum(x >= cut1 for x in v)}/{len(v)}"
            for g, v in sorted(groups.items())
        }
    fp_cats: dict[str, int] = {}
    for p, r in zip(probs, rows, strict=True):
        if r["label"] != "malicious" and p >= cut:
            fp_cats[r["category"]] = fp_cats.get(r["category"], 0) + 1
    return {
        "rows": len(rows),
        "malicious": len(pos),
        "benign": len(neg),
        "roc_auc": round(_auc(pos, neg), 4),
        "tpr_at_1pct_fpr": round(tpr1, 4),
        "cut_at_1pct_fpr": round(cut1, 4),
        "default_cut": cut,
        "tpr_at_default_cut": round(sum(p >= cut for p in pos) / len(pos), 4),
        "fpr_at_default_cut": round(sum(p >= cut for p in neg) / len(neg), 4),
        "false_positive_categories_at_default_cut": fp_cats,
        "detected_by (default cut | 1%-FPR cut)": by,
    }


def prompt_injection_bastion(quick: bool = False, weights: str | None = None) -> dict[str, Any]:
    """PromptInjection figures on the held-out half of bastioncorpus (see :func:`bastion_split`).

    ``weights``: a weights file to score with instead of the shipped one (for comparisons).
    Figures on the whole corpus are reported too, but only the held-out half is clean for a
    model trained with the train half (``bench/train_prompt_injection.py`` without
    ``--no-bastion``).
    """
    from keel.evals.builtins.injection import cues, injection_probability, load_model

    rows = bastion_rows()
    _train, held = bastion_split(rows)
    model = json.loads(pathlib.Path(weights).read_text("utf-8")) if weights else load_model()
    cut = float(model["threshold"])
    t0 = time.process_time()
    probs = [injection_probability(r["text"], model) for r in held]
    cpu_ms = (time.process_time() - t0) * 1000 / len(held)
    all_probs = [injection_probability(r["text"], model) for r in rows]
    out = _figures(probs, held, cut)
    # baseline for comparison: "any attack cue fires" (the hand-written patterns alone)
    hits = [bool(cues(r["text"])) for r in held]
    mal = [h for h, r in zip(hits, held, strict=True) if r["label"] == "malicious"]
    ben = [h for h, r in zip(hits, held, strict=True) if r["label"] != "malicious"]
    out["baseline_any_cue_tpr"] = round(sum(mal) / len(mal), 4)
    out["baseline_any_cue_fpr"] = round(sum(ben) / len(ben), 4)
    out["cpu_ms_per_row"] = round(cpu_ms, 3)
    out["ms_per_row"] = out["cpu_ms_per_row"]  # the key bench/evaluators.py prints
    full = _figures(all_probs, rows, cut)
    out["whole_corpus"] = {
        k: full[k] for k in ("rows", "roc_auc", "tpr_at_1pct_fpr", "tpr_at_default_cut")
    } | {"fpr_at_default_cut": full["fpr_at_default_cut"]}
    out["weights"] = weights or "shipped"
    out["trained_on"] = model.get("meta", {}).get("trained_on", [])
    return out


# ---- JSONValidation -------------------------------------------------------------------------

_ORDER_SCHEMA = {
    "type": "object",
    "properties": {
        "order_id": {"type": "string", "pattern": "^ORD-[0-9]{4}$"},
        "quantity": {"type": "integer", "minimum": 1},
        "items": {"type": "array", "items": {"type": "string"}, "minItems": 1},
        "express": {"type": "boolean"},
        "email": {"type": "string", "format": "email"},
    },
    "required": ["order_id", "quantity", "items"],
    "additionalProperties": False,
}

# (response, schema or None, expected pass)
JSON_CASES: list[tuple[Any, Any, bool]] = [
    ('{"order_id": "ORD-0001", "quantity": 2, "items": ["pen"]}', _ORDER_SCHEMA, True),
    (
        '```json\n{"order_id": "ORD-0002", "quantity": 1, "items": ["a", "b"]}\n```',
        _ORDER_SCHEMA,
        True,
    ),
    (
        'Here you go: {"order_id": "ORD-0003", "quantity": 5, "items": ["x"], "express": true}',
        _ORDER_SCHEMA,
        True,
    ),
    ({"order_id": "ORD-0004", "quantity": 3, "items": ["y"]}, _ORDER_SCHEMA, True),
    (
        '{"order_id": "ORD-0005", "quantity": 1, "items": ["z"], "email": "a@b.co"}',
        _ORDER_SCHEMA,
        True,
    ),
    ('{"order_id": "ORD-1", "quantity": 2, "items": ["pen"]}', _ORDER_SCHEMA, False),
    ('{"order_id": "ORD-0006", "quantity": "2", "items": ["pen"]}', _ORDER_SCHEMA, False),
    ('{"order_id": "ORD-0007", "quantity": 0, "items": ["pen"]}', _ORDER_SCHEMA, False),
    ('{"order_id": "ORD-0008", "quantity": 2, "items": []}', _ORDER_SCHEMA, False),
    ('{"order_id": "ORD-0009", "quantity": 2}', _ORDER_SCHEMA, False),
    (
        '{"order_id": "ORD-0010", "quantity": 2, "items": ["pen"], "note": "x"}',
        _ORDER_SCHEMA,
        False,
    ),
    ('{"order_id": "ORD-0011", "quantity": 2, "items": ["pen"],}', _ORDER_SCHEMA, False),
    ("{'order_id': 'ORD-0012', 'quantity': 2, 'items': ['pen']}", _ORDER_SCHEMA, False),
    ('{"order_id": "ORD-0013", "quantity": 2.5, "items": ["pen"]}', _ORDER_SCHEMA, False),
    (
        '{"order_id": "ORD-0014", "quantity": 2, "items": ["pen"], "express": "yes"}',
        _ORDER_SCHEMA,
        False,
    ),
    (
        '{"order_id": "ORD-0015", "quantity": 2, "items": ["pen"], "email": "not-an-email"}',
        _ORDER_SCHEMA,
        False,
    ),
    ('["ORD-0016", 2, ["pen"]]', _ORDER_SCHEMA, False),
    ("", _ORDER_SCHEMA, False),
    ("Sorry, I cannot produce JSON.", _ORDER_SCHEMA, False),
    ('{"order_id": "ORD-0017", "quantity": 2, "items": ["pen"]', _ORDER_SCHEMA, False),
    ('{"a": 1}', None, True),
    ("[1, 2, 3]", None, True),
    ("null", None, True),
    ('{"a": NaN}', None, True),  # Python's json accepts NaN; documented limit
    ("{a: 1}", None, False),
    ('{"a": 1} trailing', None, True),  # extract mode takes the first object; strict mode rejects
    ("not json at all", None, False),
    ('{"nested": {"deep": [1, {"x": null}]}}', None, True),
]


def json_validation_accuracy() -> dict[str, Any]:
    """Accuracy of JSONValidation's pass/fail on :data:`JSON_CASES`."""
    from keel.evals.builtins.structured import JSONValidation

    right, wrong = 0, []
    for i, (resp, schema, expect) in enumerate(JSON_CASES):
        s = JSONValidation(schema=schema).evaluate(response=resp)
        if s.passed == expect:
            right += 1
        else:
            wrong.append(i)
    return {"cases": len(JSON_CASES), "accuracy": round(right / len(JSON_CASES), 4), "wrong": wrong}


# ---- ToolSelectionAccuracy ------------------------------------------------------------------

_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather for a city",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string"},
                    "unit": {"type": "string", "enum": ["c", "f"]},
                },
                "required": ["city"],
                "additionalProperties": False,
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "book_flight",
            "description": "Book a flight between two airports on a date",
            "parameters": {
                "type": "object",
                "properties": {
                    "origin": {"type": "string"},
                    "destination": {"type": "string"},
                    "date": {"type": "string"},
                },
                "required": ["origin", "destination", "date"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "refund_order",
            "description": "Refund a customer order by order id",
            "parameters": {
                "type": "object",
                "properties": {"order_id": {"type": "string"}, "amount": {"type": "number"}},
                "required": ["order_id"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "search_docs",
            "description": "Search the help center documentation",
            "parameters": {
                "type": "object",
                "properties": {"query": {"type": "string"}},
                "required": ["query"],
            },
        },
    },
]


def _call(name: str, **args: Any) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "arguments": json.dumps(args)}}


# (tool_calls, expected_tool_calls or None, query or None, expected pass)
TOOL_CASES: list[tuple[list[Any], Any, Any, bool]] = [
    (
        [_call("get_weather", city="Oslo")],
        [{"name": "get_weather", "arguments": {"city": "Oslo"}}],
        None,
        True,
    ),
    (
        [_call("get_weather", city="oslo ")],
        [{"name": "get_weather", "arguments": {"city": "Oslo"}}],
        None,
        True,
    ),
    (
        [_call("get_weather", city="Oslo", unit="c")],
        [{"name": "get_weather", "arguments": {"city": "Oslo"}}],
        None,
        True,
    ),
    (
        [_call("get_weather", city="Bergen")],
        [{"name": "get_weather", "arguments": {"city": "Oslo"}}],
        None,
        False,
    ),
    (
        [_call("search_docs", query="Oslo weather")],
        [{"name": "get_weather", "arguments": {"city": "Oslo"}}],
        None,
        False,
    ),
    ([], [{"name": "get_weather", "arguments": {"city": "Oslo"}}], None, False),
    (
        [_call("get_weather", city="Oslo"), _call("refund_order", order_id="A1")],
        [{"name": "get_weather", "arguments": {"city": "Oslo"}}],
        None,
        False,
    ),
    (
        [_call("refund_order", order_id="A1", amount=20)],
        [{"name": "refund_order", "arguments": {"order_id": "A1", "amount": 20.0}}],
        None,
        True,
    ),
    (
        [_call("refund_order", order_id="A1", amount=200)],
        [{"name": "refund_order", "arguments": {"order_id": "A1", "amount": 20}}],
        None,
        False,
    ),
    (
        [
            _call("book_flight", origin="OSL", destination="LHR", date="2026-05-01"),
            _call("get_weather", city="London"),
        ],
        [
            {
                "name": "book_flight",
                "arguments": {"origin": "OSL", "destination": "LHR", "date": "2026-05-01"},
            },
            {"name": "get_weather", "arguments": {"city": "London"}},
        ],
        None,
        True,
    ),
    (
        [_call("book_flight", origin="LHR", destination="OSL", date="2026-05-01")],
        [
            {
                "name": "book_flight",
                "arguments": {"origin": "OSL", "destination": "LHR", "date": "2026-05-01"},
            }
        ],
        None,
        False,
    ),
    ([], [], None, True),
    ([_call("search_docs", query="x")], [], None, False),
    # against available tools (+ query)
    ([_call("get_weather", city="Oslo")], None, "What's the weather in Oslo?", True),
    ([_call("get_weather", unit="c")], None, "What's the weather in Oslo?", False),
    ([_call("get_weather", city="Oslo", country="NO")], None, "What's the weather in Oslo?", False),
    ([_call("send_email", to="x")], None, "Email my boss", False),
    ([_call("refund_order", order_id="A-77")], None, "Please refund my order A-77", True),
    (
        [_call("search_docs", query="refund")],
        None,
        "Please refund order A-77 for the customer",
        False,
    ),
    (
        [_call("book_flight", origin="OSL", destination="CDG", date="2026-06-01")],
        None,
        "Book me a flight from Oslo to Paris on June 1",
        True,
    ),
    ([_call("get_weather", city="Paris")], None, "Book a flight to Paris on June 1", False),
    (
        [_call("search_docs", query="how to reset password")],
        None,
        "How do I reset my password? Check the help center documentation",
        True,
    ),
    ([], None, "What's the weather in Oslo?", False),
    ([{"name": "refund_order", "arguments": "{not json"}], None, "refund order 5", False),
]


def tool_selection_accuracy() -> dict[str, Any]:
    """Accuracy of ToolSelectionAccuracy's pass/fail on :data:`TOOL_CASES`."""
    from keel.evals.builtins.tools import ToolSelectionAccuracy

    ev = ToolSelectionAccuracy()
    right, wrong = 0, []
    for i, (calls, expected, query, expect) in enumerate(TOOL_CASES):
        if expected is not None:
            s = ev.evaluate(tool_calls=calls, expected_tool_calls=expected)
        else:
            s = ev.evaluate(tool_calls=calls, available_tools=_TOOLS, query=query)
        if s.passed == expect:
            right += 1
        else:
            wrong.append(i)
    return {"cases": len(TOOL_CASES), "accuracy": round(right / len(TOOL_CASES), 4), "wrong": wrong}


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--quick", action="store_true", help="same figures (the sets are small); kept for symmetry"
    )
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--weights", help="PromptInjection weights file to score (default: shipped)")
    a = ap.parse_args()
    out = {
        "prompt_injection_bastion": prompt_injection_bastion(quick=a.quick, weights=a.weights),
        "json_validation": json_validation_accuracy(),
        "tool_selection": tool_selection_accuracy(),
        "load_avg": os.getloadavg(),
    }
    if a.json:
        print(json.dumps(out, indent=2))
        return
    pi = out["prompt_injection_bastion"]
    print(
        f"PromptInjection on bastioncorpus, held-out half ({pi['malicious']} malicious / "
        f"{pi['benign']} benign; weights: {pi['weights']})"
    )
    print(f"  ROC AUC                 {pi['roc_auc']:.3f}")
    print(
        f"  TPR @ <=1% FPR          {pi['tpr_at_1pct_fpr']:.3f}  (cut {pi['cut_at_1pct_fpr']:.3f} set on these benign rows)"
    )
    print(
        f"  default cut {pi['default_cut']:.3f}:      TPR {pi['tpr_at_default_cut']:.3f}  FPR {pi['fpr_at_default_cut']:.3f}  FP categories {pi['false_positive_categories_at_default_cut']}"
    )
    print(f"  CPU ms / row            {pi['cpu_ms_per_row']:.2f}")
    print(
        f"  baseline 'any cue':     TPR {pi['baseline_any_cue_tpr']:.3f}  FPR {pi['baseline_any_cue_fpr']:.3f}"
    )
    for k, v in pi["detected_by (default cut | 1%-FPR cut)"].items():
        print(f"  detected by {k} (default cut | 1%-FPR cut): {v}")
    print(f"  whole corpus (train half included unless trained --no-bastion): {pi['whole_corpus']}")
    for key in ("json_validation", "tool_selection"):
        r = out[key]
        print(f"{key}: accuracy {r['accuracy']:.3f} on {r['cases']} cases; wrong {r['wrong']}")
    print(f"load average {out['load_avg']}")


if __name__ == "__main__":
    main()
