"""Content hashing that is stable across processes, platforms and Python versions.

The hash is SHA-256 over a canonical JSON encoding: keys sorted, no insignificant whitespace,
UTF-8, integers as integers, floats in their shortest round-trip form, NaN and infinities
refused (they have no JSON form and would make two hashes of "the same" content differ).
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

from pydantic import BaseModel


def _normalize(value: Any) -> Any:
    # Exact-type checks first: str, dict and list are nearly all content, and ``type(x) is``
    # is several times cheaper than the isinstance chain below (which handles subclasses).
    t = type(value)
    if t is str or value is None or t is bool or t is int:
        return value
    if t is dict:
        out = {}
        for k, v in value.items():
            if type(k) is not str and not isinstance(k, str):
                raise TypeError(f"content keys must be strings, got {type(k).__name__}")
            tv = type(v)
            out[k] = v if (tv is str or tv is int or tv is bool or v is None) else _normalize(v)
        return out
    if t is list or t is tuple:
        return [
            v
            if (type(v) is str or v is None or type(v) is bool or type(v) is int)
            else _normalize(v)
            for v in value
        ]
    if isinstance(value, BaseModel):
        return _normalize(value.model_dump(mode="json"))
    if isinstance(value, dict):
        return _normalize(dict(value))
    if isinstance(value, list | tuple):
        return [_normalize(v) for v in value]
    if isinstance(value, str | int):  # subclasses (bool, enums) encode as their base value
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("NaN and infinity cannot be content-hashed")
        if value.is_integer() and abs(value) < 2**53:
            return int(value)
        return value
    raise TypeError(f"cannot content-hash a {type(value).__name__}")


def canonical_json(value: Any) -> bytes:
    """The canonical byte encoding that :func:`content_hash` hashes."""
    return json.dumps(
        _normalize(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    ).encode("utf-8")


def content_hash(value: Any) -> str:
    """``sha256:<hex>`` of the canonical JSON of ``value``."""
    return "sha256:" + hashlib.sha256(canonical_json(value)).hexdigest()
