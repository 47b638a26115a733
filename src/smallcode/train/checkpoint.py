"""Resumable training checkpoints: the model checkpoint plus everything needed to continue exactly.

Layout under a run directory::

    checkpoints/step_0000200/   config.json  model.safetensors  tokenizer.json  train_state.pt
    checkpoints/latest          the name of the newest complete checkpoint

Each checkpoint is written under a temporary name and renamed into place (see
``smallcode.model.checkpoint``), and only then does ``latest`` move to it (an atomic file
replace); older checkpoints are deleted after that. A process killed at any instant therefore
leaves ``latest`` naming a complete checkpoint, and at worst a temporary directory that the next
start removes. ``train_state.pt`` holds the optimizer state, the next step (which is also the
data position, since batches are a pure function of the step), the RNG states, the counters of
skipped steps and the config it was trained with; it is read with ``weights_only=True``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch

from smallcode.fileio import atomic_write_text
from smallcode.model.checkpoint import Checkpoint, CheckpointError, save_checkpoint
from smallcode.model.transformer import SmallCodeLM

TRAIN_STATE_FILE = "train_state.pt"
TRAIN_FORMAT_VERSION = 1
LATEST = "latest"


def checkpoint_name(step: int) -> str:
    return f"step_{step:07d}"


def save_train_checkpoint(run_dir: Path, step: int, model: SmallCodeLM, model_state: dict[str, torch.Tensor],
                          train_state: dict[str, Any], tokenizer_file: Path | None, keep: int) -> Path:
    """Write checkpoint ``step`` (the number of finished optimizer steps), point ``latest`` at it, prune."""
    root = run_dir / "checkpoints"
    bad = [k for k, v in model_state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:  # never persist a poisoned model: the previous checkpoint stays the latest
        raise CheckpointError(f"refusing to save step {step}: non-finite values in {bad[:3]}")
    state = {"format_version": TRAIN_FORMAT_VERSION, "step": step, **train_state}
    target = save_checkpoint(model, root / checkpoint_name(step), tokenizer_file=tokenizer_file,
                             extra={"train_step": step},
                             write_extra=lambda d: torch.save(state, d / TRAIN_STATE_FILE), state=model_state)
    atomic_write_text(root / LATEST, target.name + "\n")
    for old in sorted(root.glob("step_*"))[:-keep]:
        if old.name != target.name:
            shutil.rmtree(old, ignore_errors=True)
    return target


def _complete(d: Path) -> bool:
    return (d / TRAIN_STATE_FILE).is_file() and Checkpoint.is_checkpoint(d)


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint of a run (None if there is none); removes leftovers of killed saves."""
    root = run_dir / "checkpoints"
    if not root.is_dir():
        return None
    for leftover in root.glob(".step_*"):  # temporary or replaced directories of an interrupted save
        shutil.rmtree(leftover, ignore_errors=True)
    pointer = root / LATEST
    if pointer.is_file():
        named = root / pointer.read_text().strip()
        if _complete(named):
            return named
    done = [d for d in sorted(root.glob("step_*")) if _complete(d)]
    return done[-1] if done else None


def load_train_state(checkpoint: Path) -> dict[str, Any]:
    path = checkpoint / TRAIN_STATE_FILE
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as e:
        raise CheckpointError(f"{path}: missing; {checkpoint} is a model checkpoint, not a resumable one") from e
    except Exception as e:  # a truncated or foreign file: torch raises several kinds
        raise CheckpointError(f"{path}: unreadable training state ({type(e).__name__}: {e})") from e
    if not isinstance(state, dict) or state.get("format_version") != TRAIN_FORMAT_VERSION:
        version = state.get("format_version") if isinstance(state, dict) else None
        raise CheckpointError(f"{path}: training-state format {version!r} is not supported "
                              f"(this smallcode reads {TRAIN_FORMAT_VERSION})")
    return state


def saved_train_config(state: dict[str, Any]) -> dict[str, Any]:
    return json.loads(state["train_config"])
