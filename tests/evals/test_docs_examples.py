"""Every Python example in docs/evaluators.md runs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOC = Path(__file__).parents[2] / "docs" / "evaluators.md"
BLOCKS = re.findall(r"```python\n(.*?)```", DOC.read_text("utf-8"), re.DOTALL)


@pytest.mark.parametrize("code", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_docs_example_runs(code: str) -> None:
    exec(compile(code, str(DOC), "exec"), {})


def test_there_are_examples() -> None:
    assert len(BLOCKS) >= 5
