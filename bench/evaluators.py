"""Evaluator quality figures in one run: grounding on HaluEval and on hard cases, with baselines.

    python bench/evaluators.py            # all held-out rows (5,000-9,999 of each file); ~10-20 min
    python bench/evaluators.py --quick    # 300 held-out rows per file, ragground on 150

ms/ex is wall time per example (one thread); cpu ms/ex is the process CPU time per example,
the fairer figure when other jobs share the 2 cores (the load average is printed).

What it prints:

1. Groundedness / HallucinationScore (local backend) on HaluEval QA, dialogue and
   summarisation, held-out rows 5,000-9,999 only: ROC AUC, balanced accuracy at the default
   threshold (chosen on dev rows, see bench/calibrate_grounding.py), ms per example (the
   MiniLM model is loaded before timing).
   HallucinationScore is exactly 1 - Groundedness, so its AUC (with "hallucinated" as the
   positive class) and its balanced accuracy at its own default threshold are the same numbers;
   both are printed to make that explicit.
2. Baselines in the same run: the naive share of answer words found in the context (threshold
   chosen on dev rows), and ragground's model-free mode (its own ``is_grounded``; the first 300
   sampled rows per file, it is slow on long documents).
3. The hard cases of bench/data/grounding_hard.jsonl (swapped names/numbers, dropped
   conditions, flipped negations, one added claim, 'always' where the context limits it,
   against paraphrases): AUC and accuracy overall, on the dev and test contexts, and per kind.
4. PromptInjection / JSONValidation / ToolSelectionAccuracy from bench/evaluators_safety.py
   (written with the other built-ins) when that file exists.

Each HaluEval row gives two examples (right answer = grounded, hallucinated answer = not);
contexts: QA knowledge (+ the question as query), dialogue knowledge (+ the dialogue history
as query), the summarised document.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "src"))

from halueval import DEV, HELD_OUT, TASKS, Example, balanced_accuracy, best_threshold, load, roc_auc  # noqa: E402

from keel.evals.builtins.grounding import Groundedness, HallucinationScore  # noqa: E402
from keel.evals.evaluate import evaluate_rows  # noqa: E402
from keel.evals.grounding import DEFAULT_THRESHOLD, check_grounding  # noqa: E402

HARD = HERE / "data" / "grounding_hard.jsonl"
_W = re.compile(r"[a-z0-9]+")
_STOP = frozenset(
    [
        "a",
        "an",
        "the",
        "of",
        "to",
        "in",
        "on",
        "for",
        "and",
        "or",
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "by",
        "with",
        "at",
        "from",
        "as",
        "it",
        "its",
        "that",
        "this",
    ]
)


def naive_overlap(response: str, context: str) -> float:
    """Share of the response's words (minus a few stop words) that occur in the context."""
    ctx = set(_W.findall(context.lower()))
    words = [w for w in _W.findall(response.lower()) if w not in _STOP]
    return sum(w in ctx for w in words) / len(words) if words else 0.0


class RagGround:
    """ragground's deterministic tier (no model download), if the package is installed."""

    def __init__(self) -> None:
        self.error: str | None = None
        try:
            import logging

            logging.getLogger("ragground").setLevel(logging.ERROR)
            from ragground import RAGGround

            self._g: Any = RAGGround(auto_download=False, require_model=False)
        except Exception as e:  # not installed / not usable offline
            self._g = None
            self.error = f"{type(e).__name__}: {e}"

    def __call__(self, response: str, context: str) -> tuple[float, bool]:
        rep = self._g.verify(context=context, answer=response)
        return float(rep.grounding_score), bool(rep.is_grounded)


def ours(ex: Example) -> float:
    return check_grounding(ex.response, ex.context, query=ex.query).score


def _cold_caches() -> None:
    """Empty the context-index and embedding caches (each pass starts as a fresh process would)."""
    from keel.evals.grounding import clear_index_cache
    from keel.ml.embeddings import embeddings_available, get_embedder

    clear_index_cache()
    if embeddings_available():
        get_embedder().clear_cache()


def score_task(
    task: str,
    rows: list[Example],
    rg: RagGround | None,
    rg_rows: int,
    naive_thr: float,
    workers: int = 2,
) -> dict[str, Any]:
    labels = [e.label for e in rows]
    g = Groundedness()
    _cold_caches()
    t0, c0 = time.perf_counter(), time.process_time()
    s = [
        g.evaluate(response=e.response, context=e.context, query=e.query).value or 0.0 for e in rows
    ]
    ms = (time.perf_counter() - t0) * 1000 / len(rows)
    cpu_ms = (time.process_time() - c0) * 1000 / len(rows)
    workers_ms = None
    if workers > 1:  # the same scoring with rows on worker processes, from cold caches again
        _cold_caches()
        t0 = time.perf_counter()
        evaluate_rows(
            [{"response": e.response, "context": e.context, "query": e.query} for e in rows],
            g,
            processes=workers,
        )
        workers_ms = (time.perf_counter() - t0) * 1000 / len(rows)
    lex = Groundedness(model=False)
    t0, c0 = time.perf_counter(), time.process_time()
    sl = [
        lex.evaluate(response=e.response, context=e.context, query=e.query).value or 0.0
        for e in rows
    ]
    lex_ms = (time.perf_counter() - t0) * 1000 / len(rows)
    lex_cpu = (time.process_time() - c0) * 1000 / len(rows)
    h = [1 - x for x in s]
    out: dict[str, Any] = {
        "examples": len(rows),
        "groundedness": {
            "auc": roc_auc(labels, s),
            "balanced_accuracy": balanced_accuracy(labels, s, g.threshold),
            "ms_per_example": ms,
            "cpu_ms_per_example": cpu_ms,
            "workers": workers,
            "ms_per_example_workers": workers_ms,
        },
        "hallucination_score": {
            "auc": roc_auc([1 - y for y in labels], h),
            "balanced_accuracy": _bacc_lower_is_better(labels, h, HallucinationScore().threshold),
        },
        "lexical_only": {
            "auc": roc_auc(labels, sl),
            "balanced_accuracy": balanced_accuracy(labels, sl, lex.threshold),
            "ms_per_example": lex_ms,
            "cpu_ms_per_example": lex_cpu,
        },
    }
    t0 = time.perf_counter()
    nv = [naive_overlap(e.response, e.context) for e in rows]
    out["naive_overlap"] = {
        "auc": roc_auc(labels, nv),
        "balanced_accuracy": balanced_accuracy(labels, nv, naive_thr),
        "threshold": naive_thr,
        "ms_per_example": (time.perf_counter() - t0) * 1000 / len(rows),
    }
    if rg is not None and rg._g is not None:
        sub = rows[: 2 * rg_rows]  # whole HaluEval rows (pairs)
        t0 = time.perf_counter()
        res = [rg(e.response, e.context) for e in sub]
        y = [e.label for e in sub]
        out["ragground"] = {
            "examples": len(sub),
            "auc": roc_auc(y, [r[0] for r in res]),
            "balanced_accuracy": balanced_accuracy(y, [float(r[1]) for r in res], 0.5),
            "ms_per_example": (time.perf_counter() - t0) * 1000 / len(sub),
        }
    return out


def _bacc_lower_is_better(labels: list[int], halluc: list[float], threshold: float) -> float:
    """Balanced accuracy of 'hallucinated when value > threshold' (passes at value <= threshold)."""
    y = np.asarray(labels)
    flagged = np.asarray(halluc) > threshold
    tpr = float((flagged & (y == 0)).sum() / max(1, (y == 0).sum()))
    tnr = float((~flagged & (y == 1)).sum() / max(1, (y == 1).sum()))
    return (tpr + tnr) / 2


def naive_thresholds(sample: int) -> dict[str, float]:
    """The naive baseline's threshold per task, chosen on dev rows (as ours was)."""
    out = {}
    for task in TASKS:
        ex = load(task, DEV, sample=sample, seed=3)
        out[task] = best_threshold(
            [e.label for e in ex], [naive_overlap(e.response, e.context) for e in ex]
        )[0]
    return out


def hard_cases(rg: RagGround | None) -> dict[str, Any]:
    rows = [
        json.loads(line) for line in HARD.read_text(encoding="utf-8").splitlines() if line.strip()
    ]
    g = Groundedness()
    sc = [g.evaluate(response=r["response"], context=r["context"]).value or 0.0 for r in rows]
    lex = Groundedness(model=False)
    sl = [lex.evaluate(response=r["response"], context=r["context"]).value or 0.0 for r in rows]
    nv = [naive_overlap(r["response"], r["context"]) for r in rows]
    rgs = (
        [rg(r["response"], r["context"]) for r in rows]
        if rg is not None and rg._g is not None
        else None
    )
    y = [r["label"] for r in rows]
    out: dict[str, Any] = {"cases": len(rows)}
    for split in ("all", "dev", "test"):
        idx = [i for i, r in enumerate(rows) if split == "all" or r["split"] == split]
        yy = [y[i] for i in idx]
        out[split] = {
            "cases": len(idx),
            "auc": roc_auc(yy, [sc[i] for i in idx]),
            "accuracy": float(np.mean([(sc[i] >= g.threshold) == (y[i] == 1) for i in idx])),
            "lexical_auc": roc_auc(yy, [sl[i] for i in idx]),
            "lexical_accuracy": float(
                np.mean([(sl[i] >= lex.threshold) == (y[i] == 1) for i in idx])
            ),
            "naive_auc": roc_auc(yy, [nv[i] for i in idx]),
            "ragground_auc": roc_auc(yy, [rgs[i][0] for i in idx]) if rgs else None,
            "ragground_accuracy": float(np.mean([rgs[i][1] == (y[i] == 1) for i in idx]))
            if rgs
            else None,
        }
    per_kind: dict[str, list[bool]] = defaultdict(list)
    for r, s in zip(rows, sc, strict=True):
        per_kind[r["kind"]].append((s >= g.threshold) == (r["label"] == 1))
    out["accuracy_by_kind"] = {k: f"{sum(v)}/{len(v)}" for k, v in sorted(per_kind.items())}
    return out


def safety_figures(quick: bool) -> dict[str, Any] | None:
    path = HERE / "evaluators_safety.py"
    if not path.exists():
        return None
    spec = importlib.util.spec_from_file_location("evaluators_safety", path)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return {
        "prompt_injection_bastion": mod.prompt_injection_bastion(quick=quick),
        "json_validation": mod.json_validation_accuracy(),
        "tool_selection": mod.tool_selection_accuracy(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--quick", action="store_true", help="300 held-out rows per file (ragground on 150)"
    )
    ap.add_argument(
        "--rows", type=int, default=None, help="held-out rows per file (default: all 5,000)"
    )
    ap.add_argument(
        "--ragground-rows",
        type=int,
        default=None,
        help="rows per file for ragground (default 1,000; 150 with --quick)",
    )
    ap.add_argument("--no-ragground", action="store_true")
    ap.add_argument("--no-safety", action="store_true")
    ap.add_argument("--json", action="store_true", help="also print all figures as JSON")
    ap.add_argument(
        "--workers",
        type=int,
        default=2,
        help="also time Groundedness with rows on this many processes (evaluate_rows(processes=N); 1: skip)",
    )
    a = ap.parse_args()
    rows = a.rows or (300 if a.quick else None)
    rg_rows = a.ragground_rows or (150 if a.quick else 300)

    rg = None if a.no_ragground else RagGround()
    from keel.ml.embeddings import embeddings_available, get_embedder

    if embeddings_available():  # load the models before timing (once per process, ~0.5 s)
        get_embedder().embed(["warm up"])
    from keel.evals.entailment import get_entailment_model

    nli = get_entailment_model()
    if nli is not None:
        nli.support([("warm up", "warm up")])
    load0 = os.getloadavg()
    thr = naive_thresholds(1000)
    results: dict[str, Any] = {"tasks": {}, "default_threshold": DEFAULT_THRESHOLD}
    for task in TASKS:
        ex = load(task, HELD_OUT, sample=rows, seed=5)
        results["tasks"][task] = score_task(
            task, ex, rg, min(rg_rows, len(ex) // 2), thr[task], workers=a.workers
        )
    results["hard"] = hard_cases(rg)
    if not a.no_safety:
        results["safety"] = safety_figures(a.quick)
    results["load_avg_start"] = load0
    results["load_avg_end"] = os.getloadavg()
    results["ragground_error"] = rg.error if rg else "skipped"

    print(
        f"HaluEval held-out rows 5,000-9,999 ({'all rows' if rows is None else f'{rows} sampled rows'} per file; 2 examples per row)"
    )
    print(
        f"default threshold (Groundedness) {DEFAULT_THRESHOLD}; HallucinationScore threshold {HallucinationScore().threshold}"
    )
    hdr = f"{'task':14s} {'method':22s} {'AUC':>6s} {'bal.acc':>8s} {'ms/ex':>7s} {'cpu ms/ex':>9s}"
    print(hdr)
    print("-" * len(hdr))
    for task, r in results["tasks"].items():
        gr = r["groundedness"]
        print(
            f"{task:14s} {'Groundedness (local)':22s} {gr['auc']:6.3f} {gr['balanced_accuracy']:8.3f} {gr['ms_per_example']:7.2f} {gr['cpu_ms_per_example']:9.2f}"
        )
        if gr.get("ms_per_example_workers") is not None:
            label = f"  same, {gr['workers']} processes"
            print(
                f"{'':14s} {label:22s} {'':6s} {'':8s} {gr['ms_per_example_workers']:7.2f}   (wall ms per example)"
            )
        lx = r["lexical_only"]
        print(
            f"{'':14s} {'  lexical only (no model)':22s} {lx['auc']:6.3f} {lx['balanced_accuracy']:8.3f} {lx['ms_per_example']:7.2f} {lx['cpu_ms_per_example']:9.2f}"
        )
        hs = r["hallucination_score"]
        print(
            f"{'':14s} {'HallucinationScore':22s} {hs['auc']:6.3f} {hs['balanced_accuracy']:8.3f} {'':>7s}"
        )
        nv = r["naive_overlap"]
        print(
            f"{'':14s} {'naive word overlap':22s} {nv['auc']:6.3f} {nv['balanced_accuracy']:8.3f} {nv['ms_per_example']:7.2f}"
        )
        if "ragground" in r:
            rr = r["ragground"]
            print(
                f"{'':14s} {'ragground (' + str(rr['examples'] // 2) + ' rows)':22s} {rr['auc']:6.3f} {rr['balanced_accuracy']:8.3f} {rr['ms_per_example']:7.2f}"
            )
    if results["ragground_error"] and rg is not None:
        print(f"ragground not run: {results['ragground_error']}")
    h = results["hard"]
    print(
        f"\nHard cases ({h['cases']} in bench/data/grounding_hard.jsonl; dev = contexts 0-9 used in calibration, test = 10-29)"
    )
    for split in ("all", "dev", "test"):
        s = h[split]
        rgtxt = (
            f"  ragground AUC {s['ragground_auc']:.3f} acc {s['ragground_accuracy']:.3f}"
            if s["ragground_auc"] is not None
            else ""
        )
        print(
            f"  {split:5s} n={s['cases']:3d}  Groundedness AUC {s['auc']:.3f} acc {s['accuracy']:.3f}"
            f"  (lexical only {s['lexical_auc']:.3f} / {s['lexical_accuracy']:.3f})  naive AUC {s['naive_auc']:.3f}{rgtxt}"
        )
    print("  accuracy by kind:", ", ".join(f"{k} {v}" for k, v in h["accuracy_by_kind"].items()))
    sf = results.get("safety")
    if sf:
        pi = sf["prompt_injection_bastion"]
        print(
            f"\nPromptInjection on bastioncorpus: AUC {pi['roc_auc']:.3f}, TPR @ <=1% FPR {pi['tpr_at_1pct_fpr']:.3f}, "
            f"default cut TPR {pi['tpr_at_default_cut']:.3f} / FPR {pi['fpr_at_default_cut']:.3f}, {pi['ms_per_row']:.2f} ms/row"
        )
        for key in ("json_validation", "tool_selection"):
            r = sf[key]
            print(f"{key}: accuracy {r['accuracy']:.3f} on {r['cases']} cases")
    elif not a.no_safety:
        print("\n(bench/evaluators_safety.py not found: safety figures skipped)")
    print(
        f"\nload average at start {tuple(round(x, 2) for x in load0)}, at end {tuple(round(x, 2) for x in results['load_avg_end'])} (2 cores, shared)"
    )
    if a.json:
        print(json.dumps(results, indent=2, default=float))


if __name__ == "__main__":
    main()
