"""100,000 rows import streamed: peak memory stays far below the data size."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import pytest

from keel.core.datasets import Row
from keel.datasets import formats, service
from keel.storage import open_store


@pytest.mark.slow
def test_100k_rows_import_in_bounded_memory(tmp_path: Path):
    n = 100_000
    src = tmp_path / "big.jsonl"
    formats.write_rows(
        (Row(input=f"question {i} " + "x" * 400, expected_output=str(i)) for i in range(n)), src
    )
    size = src.stat().st_size
    assert size > 45_000_000
    store = open_store(f"sqlite:///{tmp_path}/k.db")
    pid = store.projects.add_project("p").id
    seen: list[int] = []
    tracemalloc.start()
    try:
        res = service.push_file(store, pid, "big", src, progress=seen.append)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert res.version.row_count == n and sum(seen) == n and len(seen) == n // service.BATCH
    # only ids are held (≈ 100 bytes a row), never the rows themselves
    assert peak < 30_000_000, f"peak {peak / 1e6:.1f} MB for a {size / 1e6:.0f} MB file"
    d = store.datasets.get_dataset(pid, "big")
    assert sum(1 for _ in store.datasets.iter_row_ids(d.id, 1)) == n
    store.close()
