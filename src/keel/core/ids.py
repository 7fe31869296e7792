"""Identifiers: short, URL-safe, time-sortable, with a readable prefix (``prj_…``, ``key_…``)."""

from __future__ import annotations

import os
import time

_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"


def _b36(n: int, width: int) -> str:
    out = []
    for _ in range(width):
        n, r = divmod(n, 36)
        out.append(_ALPHABET[r])
    return "".join(reversed(out))


def new_id(prefix: str) -> str:
    """A new id like ``run_0kx3…``: 9 chars of milliseconds then 12 random chars."""
    ms = time.time_ns() // 1_000_000
    rnd = int.from_bytes(os.urandom(8), "big")
    return f"{prefix}_{_b36(ms, 9)}{_b36(rnd, 12)}"
