"""Dataset import/export throughput and peak memory (100,000 rows by default).

    .venv/bin/python bench/datasets_import.py            # 100k rows, JSONL+CSV+Parquet, SQLite
    .venv/bin/python bench/datasets_import.py --quick    # 10k rows
    .venv/bin/python bench/datasets_import.py --store postgresql+psycopg://postgres@127.0.0.1:5432/test

Peak memory is Python's traced allocations (tracemalloc) during the import, which shows that
rows are streamed: it stays far below the file size.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import tracemalloc
from pathlib import Path

from keel.core.datasets import Row
from keel.datasets import formats, service
from keel.storage import open_store


def make_rows(n: int, pad: int):
    for i in range(n):
        yield Row(
            input=[{"role": "user", "content": f"question {i} " + "x" * pad}],
            expected_output=f"answer {i}",
            metadata={"i": i, "bucket": i % 7},
            tags=["bench"],
        )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--pad", type=int, default=500, help="extra characters per row")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--store", default=None)
    ap.add_argument("--formats", default="jsonl,csv,parquet")
    args = ap.parse_args()
    n = 10_000 if args.quick else args.rows
    tmp = Path(tempfile.mkdtemp())
    url = args.store or f"sqlite:///{tmp}/bench.db"
    store = open_store(url)
    pid = (store.projects.find_project_by_name("bench") or store.projects.add_project("bench")).id
    print(
        f"rows={n} pad={args.pad} store={store.backend} load={os.getloadavg()[0]:.1f} cores={os.cpu_count()}"
    )
    print(
        f"{'format':8} {'file MB':>8} {'import s':>9} {'rows/s':>8} {'peak MB':>8} {'export s':>9}"
    )
    for fmt in args.formats.split(","):
        src = tmp / f"in.{fmt}"
        formats.write_rows(make_rows(n, args.pad), src)
        size = src.stat().st_size / 1e6
        name = f"bench-{fmt}-{int(time.time())}"
        tracemalloc.start()
        t0 = time.perf_counter()
        res = service.push_file(store, pid, name, src)
        dt = time.perf_counter() - t0
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert res.version.row_count == n, res.to_json()
        t1 = time.perf_counter()
        service.export(store, pid, name, tmp / f"out.{fmt}")
        de = time.perf_counter() - t1
        print(f"{fmt:8} {size:8.1f} {dt:9.2f} {n / dt:8.0f} {peak / 1e6:8.1f} {de:9.2f}")
    print(json.dumps({"done": True}))


if __name__ == "__main__":
    main()
