"""Model checkpoints: a directory with ``config.json``, ``model.safetensors`` and ``tokenizer.json``.

Writes go to a temporary sibling directory that is renamed into place, so a crash never leaves a
half-written checkpoint under the final name. Loading checks everything it reads and names the
file and the problem: a missing file, a truncated or corrupt tensor file, a format version this
code does not know, tensors missing, extra or of the wrong shape. Training state (optimizer, step,
RNG, data position) is the trainer's and lives beside these files; it is not handled here.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from smallcode.config import ConfigError
from smallcode.model.config import ModelConfig
from smallcode.model.transformer import SmallCodeLM

FORMAT_VERSION = 1
CONFIG_FILE, WEIGHTS_FILE, TOKENIZER_FILE = "config.json", "model.safetensors", "tokenizer.json"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read; the message names the file and what is wrong."""


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_replace_dir(tmp: Path, target: Path) -> None:
    """Move the finished directory ``tmp`` to ``target``, replacing an older one if present."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.rename(target, old)
    os.rename(tmp, target)
    _fsync_dir(target.parent)
    if old is not None:
        shutil.rmtree(old)


def save_checkpoint(model: SmallCodeLM, directory: str | Path, tokenizer_file: str | Path | None = None,
                    extra: dict | None = None, write_extra: Callable[[Path], None] | None = None,
                    state: dict[str, torch.Tensor] | None = None) -> Path:
    """Write ``model`` (and a copy of ``tokenizer_file``) to ``directory`` atomically.

    ``write_extra(tmp_dir)`` may add files (the trainer's optimizer and RNG state) before the
    directory is renamed into place, so they appear together with the weights or not at all.
    ``state`` replaces ``model.state_dict()`` when the weights live elsewhere (gathered from FSDP
    shards); ``model`` then only supplies the config.
    """
    target = Path(directory)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        state = {k: v.detach().contiguous().cpu() for k, v in (state or model.state_dict()).items()}
        if model.config.tie_embeddings:
            state.pop("lm_head.weight")  # the same tensor as embed.weight
        save_file(state, tmp / WEIGHTS_FILE, metadata={"format_version": str(FORMAT_VERSION)})
        meta = {"format_version": FORMAT_VERSION, "model": model.config.to_dict(), **(extra or {})}
        (tmp / CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        if tokenizer_file is not None:
            shutil.copyfile(tokenizer_file, tmp / TOKENIZER_FILE)
        if write_extra is not None:
            write_extra(tmp)
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        atomic_replace_dir(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def read_config(directory: str | Path) -> tuple[ModelConfig, dict]:
    """The model config and the whole ``config.json`` of a checkpoint directory."""
    path = Path(directory) / CONFIG_FILE
    if not Path(directory).is_dir():
        raise CheckpointError(f"{directory}: not a checkpoint directory (does not exist)")
    if not path.is_file():
        raise CheckpointError(f"{path}: missing (a checkpoint needs {CONFIG_FILE} and {WEIGHTS_FILE})")
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from e
    version = meta.get("format_version") if isinstance(meta, dict) else None
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: format_version {version!r} is not supported (this smallcode reads {FORMAT_VERSION})")
    try:
        return ModelConfig.from_dict(meta["model"]), meta
    except (KeyError, ConfigError, TypeError) as e:
        raise CheckpointError(f"{path}: invalid model config ({e})") from e


def load_checkpoint(directory: str | Path, device: str | torch.device = "cpu") -> SmallCodeLM:
    """Build the model of a checkpoint directory and load its weights, checking every tensor."""
    config, _ = read_config(directory)
    path = Path(directory) / WEIGHTS_FILE
    if not path.is_file():
        raise CheckpointError(f"{path}: missing")
    try:
        state = load_file(path, device=str(device))
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{path}: unreadable or truncated safetensors file ({e})") from e
    with torch.device("meta"):
        model = SmallCodeLM(config)
    expected = {k: v for k, v in model.state_dict().items()}
    if config.tie_embeddings:
        expected.pop("lm_head.weight")
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"{path}: tensors do not match the config in {CONFIG_FILE}: "
                              f"missing {missing[:5]}, unexpected {unexpected[:5]}")
    for k, v in expected.items():
        if state[k].shape != v.shape:
            raise CheckpointError(f"{path}: tensor {k!r} has shape {tuple(state[k].shape)}, "
                                  f"the config needs {tuple(v.shape)}")
    model = model.to_empty(device=device)
    # Copy into freshly allocated parameters rather than adopting the loaded buffers: their memory
    # alignment can steer BLAS to other kernels, and the loaded model must compute bit-identically.
    model.load_state_dict(state, strict=not config.tie_embeddings)
    if config.tie_embeddings:
        model.lm_head.weight = model.embed.weight
    model.rope = model.rope.__class__(config.hd, config.rope_base, config.max_seq_len).to(device)
    return model
