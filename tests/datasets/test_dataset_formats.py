"""JSONL, CSV and Parquet codecs: exact round trips, foreign files, clear errors."""

from __future__ import annotations

import io
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keel.core.datasets import Row, RowSource
from keel.datasets import formats
from keel.errors import InvalidInputError

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**53), max_value=2**53),
    st.floats(allow_nan=False, allow_infinity=False, width=64),
    st.text(max_size=30),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
rows = st.builds(
    Row,
    input=values,
    expected_output=values,
    context=st.lists(st.text(max_size=20), max_size=3),
    agent_steps=st.lists(st.dictionaries(st.text(max_size=5), scalars, max_size=3), max_size=2),
    metadata=st.dictionaries(st.text(max_size=8), values, max_size=3),
    tags=st.lists(st.text(min_size=1, max_size=8), max_size=3),
    split=st.one_of(st.none(), st.sampled_from(["train", "test"])),
    source=st.one_of(
        st.none(),
        st.builds(
            RowSource,
            trace_id=st.text("0123456789abcdef", min_size=32, max_size=32),
            prompt_version=st.integers(1, 9),
            scores=st.dictionaries(st.sampled_from(["g", "f"]), st.floats(0, 1), max_size=2),
        ),
    ),
)


def _same(a: list[Row], b: list[Row]) -> None:
    assert [r.content_hash() for r in a] == [r.content_hash() for r in b]


@pytest.mark.parametrize("fmt", formats.FORMATS)
@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.lists(rows, max_size=8))
def test_round_trip_every_format(tmp_path_factory, fmt, data):
    p = tmp_path_factory.mktemp("rt") / f"rows.{fmt}"
    assert formats.write_rows(data, p) == len(data)
    back = list(formats.read_rows(p))
    _same(data, back)
    # writing what was read gives the same bytes
    p2 = p.with_name(f"again.{fmt}")
    formats.write_rows(back, p2)
    assert p.read_bytes() == p2.read_bytes()


def test_csv_cells_that_look_like_json_stay_strings(tmp_path: Path):
    tricky = ["42", "true", "null", "[1]", '"q"', "", " 7", "NaN", "plain text", "{not json"]
    data = [Row(input=s, expected_output=i) for i, s in enumerate(tricky)]
    p = tmp_path / "t.csv"
    formats.write_rows(data, p)
    back = list(formats.read_rows(p))
    assert [r.input for r in back] == tricky
    assert [r.expected_output for r in back] == list(range(len(tricky)))


@pytest.mark.parametrize("text", ["\r", "a\rb", "a\r\nb", "\n", "x,\"y\"\r"])
def test_csv_cells_with_bare_carriage_returns(tmp_path: Path, text: str):
    # A bare "\r" in a cell once went out unquoted and split the row on read.
    data = [Row(input=text, context=[text], metadata={text: text}, tags=[text])]
    p = tmp_path / "cr.csv"
    formats.write_rows(data, p)
    _same(data, list(formats.read_rows(p)))


def test_hand_written_files(tmp_path: Path):
    (tmp_path / "a.csv").write_text(
        "input,expected_output,difficulty\nWhat is 2+2?,4,easy\nCapital of France?,Paris,\n",
        encoding="utf-8",
    )
    a = list(formats.read_rows(tmp_path / "a.csv"))
    assert (
        a[0].input == "What is 2+2?"
        and a[0].expected_output == 4
        and a[0].metadata == {"difficulty": "easy"}
    )
    assert a[1].expected_output == "Paris" and a[1].metadata == {"difficulty": None}
    (tmp_path / "b.jsonl").write_text(
        '{"input": {"q": "x"}, "label": "pos", "id": "ignored"}\n\n{"input": "y"}\n',
        encoding="utf-8",
    )
    b = list(formats.read_rows(tmp_path / "b.jsonl"))
    assert b[0].metadata == {"label": "pos"} and b[0].id == "ignored" and b[1].input == "y"
    table = pa.table(
        {
            "input": ["q1", "q2"],
            "expected_output": [1, 2],
            "tags": [["a"], []],
            "score": [0.5, None],
        }
    )
    pq.write_table(table, tmp_path / "c.parquet")
    c = list(formats.read_rows(tmp_path / "c.parquet"))
    assert (c[0].input, c[0].expected_output, c[0].tags, c[0].metadata) == (
        "q1",
        1,
        ["a"],
        {"score": 0.5},
    )


def test_errors_name_the_place(tmp_path: Path):
    (tmp_path / "bad.jsonl").write_text('{"input": 1}\n{oops\n', encoding="utf-8")
    with pytest.raises(InvalidInputError, match=r"bad\.jsonl:2"):
        list(formats.read_rows(tmp_path / "bad.jsonl"))
    (tmp_path / "arr.jsonl").write_text("[1, 2]\n", encoding="utf-8")
    with pytest.raises(InvalidInputError, match="expected an object"):
        list(formats.read_rows(tmp_path / "arr.jsonl"))
    (tmp_path / "x.txt").write_text("", encoding="utf-8")
    with pytest.raises(InvalidInputError, match="format"):
        list(formats.read_rows(tmp_path / "x.txt"))
    (tmp_path / "nan.jsonl").write_text('{"input": NaN}\n', encoding="utf-8")
    with pytest.raises(InvalidInputError):
        list(formats.read_rows(tmp_path / "nan.jsonl"))
    (tmp_path / "fake.parquet").write_bytes(b"not parquet")
    with pytest.raises(InvalidInputError, match="Parquet"):
        list(formats.read_rows(tmp_path / "fake.parquet"))
    (tmp_path / "wide.csv").write_text("input\na,b\n", encoding="utf-8")
    with pytest.raises(InvalidInputError, match="more cells"):
        list(formats.read_rows(tmp_path / "wide.csv"))


def test_jsonl_lines_are_canonical():
    buf = io.BytesIO()
    formats.write_jsonl([Row(input={"b": 1, "a": 2}, metadata={"z": 1.0})], buf)
    line = buf.getvalue()
    assert line.startswith(
        b'{"agent_steps":[],"context":[],"expected_output":null,"id":"","input":{"a":2,"b":1}'
    )
    assert line.endswith(b"\n") and line.count(b"\n") == 1
