"""Content hashing is canonical and stable (property tests + pinned values)."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keel.core.hashing import canonical_json, content_hash

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**60), 2**60)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@given(json_values)
def test_hash_is_deterministic(value):
    assert content_hash(value) == content_hash(value)


@given(st.dictionaries(st.text(max_size=6), st.integers(), min_size=2, max_size=6))
def test_key_order_does_not_matter(d):
    rev = dict(reversed(list(d.items())))
    assert content_hash(d) == content_hash(rev)


@given(json_values)
def test_canonical_json_roundtrips(value):
    import json

    again = json.loads(canonical_json(value))
    assert canonical_json(again) == canonical_json(value)


def test_pinned_value():
    # Pinned: changing the canonical form would silently re-number every stored version.
    assert content_hash({"b": 1, "a": [1.5, "é", None, True]}) == (
        "sha256:"
        + __import__("hashlib").sha256('{"a":[1.5,"é",null,true],"b":1}'.encode()).hexdigest()
    )
    assert content_hash({"x": 1.0}) == content_hash({"x": 1})


def test_stable_across_processes():
    code = "from keel.core.hashing import content_hash; print(content_hash({'t': 'héllo', 'n': [1, 2.25], 'z': {'k': None}}))"
    outs = {
        subprocess.check_output([sys.executable, "-c", code], env={"PYTHONHASHSEED": seed}).strip()
        for seed in ("1", "2", "99")
    }
    assert len(outs) == 1


@pytest.mark.parametrize("bad", [math.nan, math.inf, {"a": -math.inf}])
def test_non_finite_refused(bad):
    with pytest.raises(ValueError):
        content_hash(bad)
