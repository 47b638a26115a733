"""A minutes-long end-to-end check of the model on this machine: train briefly, checkpoint, reload.

Builds a model from a preset, trains it for a few hundred AdamW steps on the embedded corpus (the
running interpreter's standard-library sources) read as bytes, reports held-out loss before and
after, writes a checkpoint and checks that it loads back bit-exact. It does not train a tokenizer
or follow the training recipe (``smallcode.train.recipe`` does both).
"""

from __future__ import annotations

import sysconfig
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from smallcode.fileio import atomic_write_json
from smallcode.model import ModelConfig, SmallCodeLM
from smallcode.model.checkpoint import Checkpoint, save_checkpoint


def stdlib_bytes(limit: int) -> np.ndarray:
    """Up to ``limit`` bytes of the standard library's .py files, in sorted path order."""
    root = Path(sysconfig.get_paths()["stdlib"])
    chunks, total = [], 0
    for path in sorted(root.rglob("*.py")):
        if "site-packages" in path.parts:
            continue
        data = path.read_bytes()
        chunks.append(data)
        total += len(data)
        if total >= limit:
            break
    return np.frombuffer(b"".join(chunks)[:limit], dtype=np.uint8)


def run_demo(out: Path, preset: str = "nano", steps: int = 200, batch: int = 8, seq_len: int = 256,
             lr: float = 3e-3, seed: int = 0) -> dict:
    torch.manual_seed(seed)
    config = ModelConfig.preset(preset)
    model = SmallCodeLM(config)
    data = torch.from_numpy(stdlib_bytes(4_000_000).astype(np.int64))
    split = int(len(data) * 0.95)
    train, val = data[:split], data[split:]
    gen = torch.Generator().manual_seed(seed)

    def batch_from(source: torch.Tensor, n: int, g: torch.Generator) -> torch.Tensor:
        starts = torch.randint(0, len(source) - seq_len - 1, (n,), generator=g)
        return torch.stack([source[s : s + seq_len + 1] for s in starts.tolist()])

    val_batch = batch_from(val, 16, torch.Generator().manual_seed(seed + 1))

    @torch.no_grad()
    def val_loss() -> float:
        model.eval()
        logits = model(val_batch[:, :-1]).logits
        model.train()
        return F.cross_entropy(logits.reshape(-1, config.vocab_size), val_batch[:, 1:].reshape(-1)).item()

    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.1)
    before = val_loss()
    t0 = time.perf_counter()
    bar = tqdm(range(steps), desc=f"train {preset}", unit="step")
    for step in bar:
        for group in opt.param_groups:  # linear warmup, then cosine to 10%
            warm = min(1.0, (step + 1) / 20)
            group["lr"] = lr * warm * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * step / steps)))
        xy = batch_from(train, batch, gen)
        out_ = model(xy[:, :-1])
        loss = F.cross_entropy(out_.logits.reshape(-1, config.vocab_size), xy[:, 1:].reshape(-1))
        (loss + out_.aux_loss(config)).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        bar.set_postfix(loss=f"{loss.item():.3f}", balance=f"{out_.balance_loss.item():.3f}")
    elapsed = time.perf_counter() - t0
    after = val_loss()
    ckpt = save_checkpoint(model, out / "checkpoint")
    reloaded = Checkpoint.open(ckpt).load_model()
    probe = val_batch[:2, :-1]
    with torch.no_grad():
        model.eval()
        exact = torch.equal(model(probe).logits, reloaded(probe).logits)
    report = {
        "preset": preset, "steps": steps, "tokens": steps * batch * seq_len,
        "tokens_per_s": round(steps * batch * seq_len / elapsed, 1),
        "val_loss_before": round(before, 4), "val_loss_after": round(after, 4),
        "checkpoint": str(ckpt), "reload_bit_exact": exact,
        "total_params": config.num_params(), "active_params": config.num_active_params(),
    }
    atomic_write_json(out / "report.json", report)
    if not exact:
        raise RuntimeError("the checkpoint did not reload bit-exact")
    return report
