"""The one-span trace summary (every gateway request) equals the general computation."""

from __future__ import annotations

import itertools

from keel.storage.spans import IndexRow, _summarize_many, _summarize_one, summarize


def _rows() -> list[IndexRow]:
    out = []
    for parent, status, usage, models, names, extra in itertools.product(
        (None, "p1", "s1"),  # no parent, a parent elsewhere, its own parent (a cycle)
        ("ok", "error", "unset", "weird"),
        ((None, None, None), (3, None, None), (None, 4, 0.25), (5, 6, 1), (0, 0, 0.0)),
        ((None, None), ("m", None), (None, "m"), ("m", "m"), ("b", "a")),
        ("chat m", "", "x" * 2500),
        (
            (None, None, None, None, None, None),
            ("svc", "openai", "route", "prompt", 3, "chat"),
            ("", "", "", "prompt", None, None),
        ),
    ):
        svc, provider, route, prompt, version, op = extra
        out.append(
            IndexRow(
                "s1",
                parent,
                names,
                100,
                90 if status == "weird" else 250,
                status,
                svc,
                usage[0],
                usage[1],
                usage[2],
                models[0],
                models[1],
                provider,
                route,
                prompt,
                version,
                op is not None,
                op,
            )
        )
    return out


def test_one_span_summary_equals_the_general_one() -> None:
    rows = _rows()
    assert len(rows) > 2000
    for r in rows:
        fast = _summarize_one("p", "t", r)
        general = _summarize_many("p", "t", [r])
        assert fast == general, r
        assert [type(v) for v in fast.values()] == [type(v) for v in general.values()], r
        assert summarize("p", "t", [r]) == general
