"""Does validation loss stay flat past the training context? (the StreamingLLM question)

Trains ``nano`` briefly on the embedded corpus with a byte-level tokenizer (``smallcode.demo``;
training context ``--train-len``, which should exceed the window so the model sees its window
slide), then scores the corpus's long files that training never read (encoded by the checkpoint's
own tokenizer), at 1x, 4x and 8x the training
context. Loss is reported per position bucket, so a rise past the training length shows up
directly. Two inference variants of the same weights: as trained (window + global tokens) and with
the global tokens switched off, to see whether globals seen at distances never met in training hurt.
A third column scores the same target bytes from a fresh context of ``--train-len`` bytes (at
positions 0..L-1): where it equals the long-context loss, a rise across buckets comes from the
text (later parts of files are harder), not from the position. Pass ``--checkpoint`` to score an
existing byte-level checkpoint instead of training one.
Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

from smallcode.corpus import discover
from smallcode.demo import DEMO_BYTES, stdlib_files
from smallcode.model.checkpoint import Checkpoint


def held_out_long_files(tokenizer: object, min_tokens: int, limit: int) -> list[list[int]]:
    """The first ``min_tokens + 1`` tokens of corpus files the demo never trained on (those after its
    first ``DEMO_BYTES``) that are at least that long."""
    trained = set(stdlib_files(DEMO_BYTES))
    out = []
    for path in discover(None).files:
        if path in trained:
            continue
        ids = tokenizer.encode(path.read_text(encoding="utf-8", errors="replace"))  # type: ignore[attr-defined]
        if len(ids) > min_tokens:
            out.append(ids[: min_tokens + 1])
            if len(out) == limit:
                break
    return out


@torch.no_grad()
def position_losses(model: torch.nn.Module, docs: list[list[int]]) -> torch.Tensor:
    """Mean next-token loss at every position (T,), averaged over documents."""
    total = None
    for d in docs:
        ids = torch.tensor(d, dtype=torch.long)[None]
        logits = model(ids[:, :-1]).logits[0]
        loss = F.cross_entropy(logits, ids[0, 1:], reduction="none")
        total = loss if total is None else total + loss
    return total / len(docs)


@torch.no_grad()
def restarted_losses(model: torch.nn.Module, docs: list[list[int]], L: int) -> torch.Tensor:
    """The same targets scored with a fresh short context: for positions >= L/2, each target is
    predicted from a window of L tokens that starts L/2 before it, at positions 0..L-1. (T,), NaN
    where not computed. Equal to ``position_losses`` wherever the model's loss depends only on
    the text it can see, not on how far into the sequence it is."""
    h = L // 2
    total, n = None, 0
    for d in docs:
        ids = torch.tensor(d, dtype=torch.long)
        out = torch.full((len(ids) - 1,), float("nan"))
        for s in range(h, len(ids) - h, h):
            inp, tgt = ids[s - h : s + h][None], ids[s - h + 1 : s + h + 1]
            loss = F.cross_entropy(model(inp).logits[0], tgt, reduction="none")
            out[s - 1 : s - 1 + h] = loss[h - 1 : 2 * h - 1]
        total = out if total is None else total + out
        n += 1
    return total / n


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--checkpoint", type=Path, default=None)
    p.add_argument("--train-len", type=int, default=512)
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--docs", type=int, default=12)
    args = p.parse_args()
    L = args.train_len
    with tempfile.TemporaryDirectory() as tmp:
        if args.checkpoint is None:
            from smallcode.demo import run_demo

            report = run_demo(Path(tmp), steps=args.steps, batch=args.batch, seq_len=L)
            ckpt = Path(report["checkpoint"])
        else:
            ckpt, report = args.checkpoint, None
        checkpoint = Checkpoint.open(ckpt)
        model, tokenizer = checkpoint.load_model().eval(), checkpoint.load_tokenizer()
    docs = held_out_long_files(tokenizer, 8 * L, args.docs)
    edges = [0, L, 4 * L, 8 * L]
    result: dict[str, object] = {"train_len": L, "window": model.config.window, "n_global": model.config.n_global,
                                 "docs": len(docs), "train_report": report}
    for name, n_global in (("as_trained", model.config.n_global), ("no_global", 0)):
        for block in model.blocks:
            block.attn.n_global = n_global
        losses = position_losses(model, docs)
        result[name] = {f"{a}-{b}": round(losses[a:b].mean().item(), 4) for a, b in zip(edges, edges[1:], strict=False)}
        result[name]["last_half_of_train_len"] = round(losses[L // 2 : L].mean().item(), 4)
    for block in model.blocks:
        block.attn.n_global = model.config.n_global
    restart = restarted_losses(model, docs, L)
    result["restarted_context"] = {f"{a}-{b}": round(restart[a:b].nanmean().item(), 4)
                                   for a, b in zip(edges[1:], edges[2:], strict=False)}
    base = result["as_trained"]["last_half_of_train_len"]  # type: ignore[index]
    result["rise_at_8x_vs_train_len"] = round(result["as_trained"][f"{4 * L}-{8 * L}"] - base, 4)  # type: ignore[index]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
