"""Windowing a full-attention model: the same weights attending over a sliding window plus sink tokens.

A full-attention smallcode model is one whose ``window`` is at least ``max_seq_len`` and that has no
global tokens (an imported Llama or Qwen2, for instance). ``window_model(model, W, G)`` gives it
window ``W`` and ``G`` global tokens: query ``i`` then sees the ``W`` most recent positions and the
first ``G`` of the sequence (``smallcode.model.attention``), so its KV cache holds at most ``W + G``
entries however long the context. Nothing but the config changes: no weight is touched, which is
what StreamingLLM (Xiao et al., 2024) does training-free with 4 "attention sink" tokens; the first
tokens soak up attention mass the softmax must put somewhere, and keeping them visible stops the
collapse a plain window suffers once the sequence passes it. For sequences no longer than ``W + G`` the
windowed model is exactly the original (every key is still in view); past that the function changes,
and quality at long range needs adaptation: the recipe follows this stage with a short training
stage distilled from the full-attention original (same tokenizer, so exact logit KD through
``smallcode.train.distill``; ``configs/import/``).

``long_range_loss`` is how the stage is judged: mean next-token cross-entropy (nats/token) over
held-out sequences several windows long (the recipe uses 4 x W tokens from the validation shards).
The recipe writes, in ``<stage>/window.json``, that loss for the full-attention parent, for the
windowed model right after conversion, and for each stage that adapts it (see ``smallcode.train.recipe``).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch

from smallcode.config import ConfigError
from smallcode.fileio import atomic_write_text, sha256_file
from smallcode.model.checkpoint import Checkpoint, save_checkpoint
from smallcode.model.config import ModelConfig
from smallcode.model.transformer import SmallCodeLM, model_from_state

WINDOW_FILE = "window.json"


def is_full_attention(config: ModelConfig) -> bool:
    """Every query sees every earlier position of a sequence up to ``max_seq_len``."""
    return config.window >= config.max_seq_len and config.n_global == 0


def windowed_config(full: ModelConfig, window: int, n_global: int) -> ModelConfig:
    """``full`` with a sliding window of ``window`` positions and ``n_global`` sink tokens; refuses what is
    not a full-attention parent or would not window it."""
    if not is_full_attention(full):
        raise ConfigError(f"window: the parent already attends over a window of {full.window} positions with "
                          f"{full.n_global} global tokens (max_seq_len {full.max_seq_len}); this stage converts a "
                          "full-attention model (window >= max_seq_len, n_global 0)")
    if isinstance(window, bool) or not isinstance(window, int) or not 1 <= window < full.max_seq_len:
        raise ConfigError(f"window: window must be an integer in [1, max_seq_len) = [1, {full.max_seq_len}), "
                          f"got {window!r}")
    if isinstance(n_global, bool) or not isinstance(n_global, int) or n_global < 0:
        raise ConfigError(f"window: n_global must be an integer >= 0, got {n_global!r}")
    return dataclasses.replace(full, window=window, n_global=n_global)


def window_model(model: SmallCodeLM, window: int, n_global: int) -> SmallCodeLM:
    """A copy of ``model`` (same weights, device and dtype) attending over ``window`` + ``n_global`` sinks."""
    config = windowed_config(model.config, window, n_global)
    return model_from_state(model, config, dict(model.state_dict()))


def window_checkpoint(src: str | Path, out: str | Path, window: int, n_global: int) -> Path:
    """Window the checkpoint ``src`` into ``out`` (atomic), with its tokenizer files; ``config.json``
    records the parent (``windowed_from``) and the choice (``window``)."""
    src, out = Path(src), Path(out)
    if out.resolve() == src.resolve():
        raise ConfigError(f"window: the output {out} is the parent checkpoint itself; choose another directory")
    parent = Checkpoint.open(src)
    windowed_config(parent.config, window, n_global)  # refuse before loading any weights
    model = window_model(parent.load_model(), window, n_global)
    extra = {"windowed_from": {"path": str(src.resolve()), "weights_sha256": sha256_file(parent.weights_file)},
             "window": {"window": window, "n_global": n_global}}
    return save_checkpoint(model, out, tokenizer_file=parent.tokenizer_file, extra=extra)


@torch.no_grad()
def long_range_loss(model: SmallCodeLM, shards: str | Path, seq_len: int, rows: int = 8,
                    batch_size: int = 1) -> dict[str, Any]:
    """Mean cross-entropy (nats/token) of ``model`` over the first ``rows`` validation sequences of
    ``seq_len`` tokens of the shard directory ``shards``; ``{"loss", "rows", "tokens", "seq_len"}``.

    The same sequences for every model, in order (the validation split is read without shuffling).
    Runs where the model lives, with bf16 autocast on CUDA and float32 elsewhere; the logits are never
    held whole (``linear_cross_entropy``).
    """
    from smallcode.data import ShardLoader
    from smallcode.train.objectives import linear_cross_entropy

    device = model.device
    loader = ShardLoader(shards, batch_size, seq_len, seed=0)
    was_training = model.training
    model.eval()
    total, count, used = 0.0, 0, 0
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    for batch in loader.validation(batch_size):
        batch = batch[: rows - used].long().to(device)
        with autocast:
            hidden = model.trunk(batch[:, :-1]).hidden
        targets = batch[:, 1:].reshape(-1)
        total += float(linear_cross_entropy(hidden.flatten(0, 1), model.lm_head.weight, targets)) * targets.numel()
        count += targets.numel()
        used += batch.shape[0]
        if used >= rows:
            break
    model.train(was_training)
    if count == 0:
        raise ConfigError(f"{shards}: the validation split holds no sequence of {seq_len + 1} tokens to score "
                          "long-range loss on; hold out more data (val_fraction) or lower the window")
    return {"loss": round(total / count, 5), "rows": used, "tokens": count, "seq_len": seq_len}


def read_window_report(stage_dir: str | Path) -> dict[str, Any]:
    """The stage's ``window.json`` (empty when not written yet)."""
    path = Path(stage_dir) / WINDOW_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def write_window_report(stage_dir: str | Path, report: dict[str, Any]) -> None:
    """Write ``window.json`` atomically."""
    atomic_write_text(Path(stage_dir) / WINDOW_FILE, json.dumps(report, indent=2) + "\n")
