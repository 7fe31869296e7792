"""100,000 rows import streamed: peak memory stays far below the data size."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import pytest

from keel.core.datasets import Row
from keel.datasets import formats, service
from keel.storage import open_store


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_100k_rows_import_in_bounded_memory(tmp_path: Path):
    n = 100_000
    src = tmp_path / "big.jsonl"
    formats.write_rows(
        (Row(input=f"question {i} " + "x" * 100, expected_output=str(i)) for i in range(n)), src
    )
    size = src.stat().st_size
    assert size > 15_000_000
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


def test_import_streams_large_rows(tmp_path: Path):
    # 1,000 rows of 20 KB: a 20 MB file imports with a few MB of Python allocations
    src = tmp_path / "wide.jsonl"
    formats.write_rows(
        (Row(input=f"q{i} " + "y" * 20_000, expected_output=str(i)) for i in range(1000)), src
    )
    store = open_store(f"sqlite:///{tmp_path}/k.db")
    pid = store.projects.add_project("p").id
    tracemalloc.start()
    try:
        res = service.push_file(store, pid, "wide", src, batch_size=100)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert res.version.row_count == 1000
    assert peak < src.stat().st_size / 4, f"peak {peak / 1e6:.1f} MB"
    store.close()
