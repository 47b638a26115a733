"""A minutes-long end-to-end check of the model on this machine: train briefly, checkpoint, reload.

Reads the first few megabytes of the embedded corpus (the running interpreter's standard-library
sources, as :func:`smallcode.corpus.discover` finds them, the ``repo`` suite's modules held out),
gives it a byte-level tokenizer (the special tokens and the 256 bytes, no merges: nothing to wait
for), tokenizes it into shards with ``smallcode data prepare``'s pipeline, and trains a model from
a preset for a few hundred steps with the one training loop (:class:`smallcode.train.trainer.Trainer`,
what every recipe stage runs). It reports held-out loss before and after, copies the final checkpoint
(weights, config and ``tokenizer.json``, so ``smallcode generate OUT/checkpoint`` runs it) to
``OUT/checkpoint`` and checks that it loads back bit-exact. It does not follow the training recipe
(``smallcode.train.recipe`` does).

Under ``out``: ``tokenizer/``, ``shards/``, ``train/`` (the trainer's run directory: metrics,
``loss.png``), ``checkpoint/`` and ``report.json``; each run starts them afresh.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch

from smallcode.corpus import discover
from smallcode.errors import UserError
from smallcode.fileio import atomic_dir, atomic_write_json

DEMO_BYTES = 4_000_000
"""How much of the embedded corpus the demo reads."""


def stdlib_files(limit: int) -> list[Path]:
    """The first files of the embedded corpus, in sorted path order, until they hold ``limit`` bytes."""
    files, total = [], 0
    for path in discover(None).files:
        files.append(path)
        total += path.stat().st_size
        if total >= limit:
            break
    return files


def stdlib_bytes(limit: int) -> np.ndarray:
    """Up to ``limit`` bytes of the files :func:`stdlib_files` chooses, concatenated."""
    data = b"".join(p.read_bytes() for p in stdlib_files(limit))
    return np.frombuffer(data[:limit], dtype=np.uint8)


def run_demo(out: Path, preset: str = "nano", steps: int = 200, batch: int = 8, seq_len: int = 256,
             lr: float = 3e-3, seed: int = 0, corpus_bytes: int = DEMO_BYTES) -> dict:
    """Train ``preset`` for ``steps`` steps on the first ``corpus_bytes`` of the demo corpus under
    ``out``; returns the report."""
    from smallcode.data import PrepareConfig, prepare
    from smallcode.model.checkpoint import Checkpoint
    from smallcode.tokenizer import load_tokenizer, train_tokenizer
    from smallcode.tokenizer.train import MIN_VOCAB
    from smallcode.train.config import DataConfig, TrainConfig
    from smallcode.train.trainer import Trainer

    out = Path(out)
    files = stdlib_files(corpus_bytes)
    with atomic_dir(out / "tokenizer") as tmp:
        train_tokenizer(files, MIN_VOCAB, tmp, show_progress=False)
    tokenizer = load_tokenizer(out / "tokenizer")
    # The corpus already holds the repo suite out, and the standard library is not a benchmark:
    # decontamination would only cost time here.
    prepare(files, tokenizer, out / "shards", PrepareConfig(decontaminate=False), overwrite=True, progress=False)
    config = TrainConfig(
        model=preset, model_overrides={"vocab_size": tokenizer.vocab_size},
        data=DataConfig(kind="shards", path=str(out / "shards"), seq_len=seq_len),
        steps=steps, batch_size=batch, lr=lr, warmup_steps=min(20, max(1, steps // 10)), seed=seed,
        eval_every=0, eval_batches=4, save_every=steps, keep_checkpoints=1,
    )
    shutil.rmtree(out / "train", ignore_errors=True)  # the demo's own run directory: start afresh
    trainer = Trainer(config, out / "train")
    first = next(trainer.source.validation(1), None)
    if first is None:
        raise UserError(f"the first {corpus_bytes} bytes of the corpus left no validation data: read more of it")
    before = trainer.evaluate()
    result = trainer.run()
    with atomic_dir(out / "checkpoint") as tmp:
        shutil.copytree(result.final, tmp, dirs_exist_ok=True)
    ckpt = out / "checkpoint"
    reloaded = Checkpoint.open(ckpt).load_model().to(trainer.info.device)
    probe = first["input_ids"][:2].to(trainer.info.device)
    model = trainer.model.eval()
    with torch.no_grad():
        exact = torch.equal(model(probe).logits, reloaded(probe).logits)
    model_config = trainer.model.config
    report = {
        "preset": preset, "steps": steps, "tokens": result.tokens,
        "tokens_per_s": round(result.tokens / result.wall_s, 1) if result.wall_s else None,
        "val_loss_before": round(before, 4) if before is not None else None,
        "val_loss_after": round(result.val_loss, 4) if result.val_loss is not None else None,
        "checkpoint": str(ckpt), "reload_bit_exact": exact,
        "total_params": model_config.num_params(), "active_params": model_config.num_active_params(),
    }
    atomic_write_json(out / "report.json", report)
    if not exact:
        raise RuntimeError("the checkpoint did not reload bit-exact")
    return report
