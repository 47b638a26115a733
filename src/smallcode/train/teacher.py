"""Distillation teachers: a smallcode checkpoint or a Hugging Face model directory, read from a local path.

``load_teacher(path, vocab_size, tokenizer_hash)`` returns a :class:`Teacher` whose ``logits(input_ids)``
gives (B, T, V) float32 next-token logits under ``no_grad`` in eval mode, plus ``hash`` (a stable identity:
sha256 over the model config and the weight files, computed by :func:`teacher_hash` without loading the
model) and ``vocab_size``.

A teacher must share the student's tokenizer, and what can be checked is checked before any weight is
loaded:

* smallcode checkpoint: the model's ``vocab_size`` must equal the student's, and the checkpoint's
  ``tokenizer.json`` must hash to ``tokenizer_hash`` (when one is given; a checkpoint without a tokenizer
  is then refused, since nothing shows it shares ours).
* Hugging Face directory: ``config.vocab_size`` must equal the student's. Any difference is refused, a
  larger padded embedding included. The directory's own tokenizer files are *not* compared with
  ``tokenizer_hash``: Hugging Face re-serialises tokenizers, so equal vocabularies can hash differently;
  whoever names an HF teacher vouches that it uses our token ids.

Nothing here downloads (``local_files_only``) or trains; the teacher is frozen.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from smallcode.errors import UserError
from smallcode.model.checkpoint import (
    CONFIG_FILE,
    TOKENIZER_FILE,
    WEIGHTS_FILE,
    Checkpoint,
    CheckpointError,
    ModelDirectoryKind,
    model_directory_kind,
)

CHUNK_BYTES = 1 << 20
_HF_WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin")


class TeacherError(UserError, ValueError):
    """A teacher that cannot be used; the message names the path and what is wrong."""


Source = ModelDirectoryKind


class Teacher:
    """A frozen model that gives next-token logits for the student's token ids."""

    def __init__(self, model: torch.nn.Module, source: Source, hash: str, vocab_size: int,
                 device: str | torch.device) -> None:
        self.model = model.eval().requires_grad_(False)
        self.source: Source = source
        self.hash = hash
        self.vocab_size = vocab_size
        self.device = torch.device(device)

    @torch.no_grad()
    def logits(self, input_ids_BT: torch.Tensor) -> torch.Tensor:
        """(B, T, V) float32 logits on the teacher's device; both model kinds return ``.logits``."""
        logits_BTV = self.model(input_ids_BT.to(self.device)).logits
        if logits_BTV.shape[-1] != self.vocab_size:
            raise TeacherError(f"teacher gave {logits_BTV.shape[-1]} logits per token, expected {self.vocab_size}")
        return logits_BTV.float()


def _source(path: Path) -> tuple[Source, dict[str, Any]]:
    """Which kind of directory ``path`` is, and its parsed ``config.json``."""
    try:
        source = model_directory_kind(path)
    except CheckpointError as e:
        raise TeacherError(str(e)) from e
    return source, json.loads((path / CONFIG_FILE).read_text())


def _weight_files(path: Path, source: Source) -> list[Path]:
    if source == "smallcode":
        files = [path / WEIGHTS_FILE]
    else:
        files = sorted({f for pattern in _HF_WEIGHT_PATTERNS for f in path.glob(pattern)})
    files = [f for f in files if f.is_file()]
    if not files:
        looked = WEIGHTS_FILE if source == "smallcode" else ", ".join(_HF_WEIGHT_PATTERNS)
        raise TeacherError(f"{path}: no weight files found (looked for {looked})")
    return files


def teacher_hash(path: str | Path) -> str:
    """sha256 over the model config (canonical JSON) and every weight file's name and bytes.

    The same weights and architecture give the same hash wherever the directory lives. Fields that
    do not change the function (a checkpoint's training extras, the transformers version) are left out.
    """
    path = Path(path)
    source, meta = _source(path)
    config = meta["model"] if source == "smallcode" else {k: v for k, v in meta.items() if k != "transformers_version"}
    h = hashlib.sha256(source.encode() + b"\0" + json.dumps(config, sort_keys=True, separators=(",", ":")).encode())
    for f in _weight_files(path, source):
        h.update(b"\0" + f.name.encode() + b"\0")
        with open(f, "rb") as fh:
            while block := fh.read(CHUNK_BYTES):
                h.update(block)
    return h.hexdigest()


def _vocab_mismatch(path: Path, theirs: int, ours: int) -> TeacherError:
    return TeacherError(
        f"{path}: teacher vocabulary has {theirs} tokens but the student's has {ours}; "
        "a teacher must share the student's tokenizer"
    )


def _load_smallcode(path: Path, vocab_size: int, tokenizer_hash: str | None, device: str | torch.device
                    ) -> torch.nn.Module:
    checkpoint = Checkpoint.open(path)
    config = checkpoint.config
    if config.vocab_size != vocab_size:
        raise _vocab_mismatch(path, config.vocab_size, vocab_size)
    if tokenizer_hash is not None:
        if checkpoint.tokenizer_file is None:
            raise TeacherError(f"{path}: no {TOKENIZER_FILE}, so nothing shows the teacher shares the student's "
                               f"tokenizer {tokenizer_hash[:16]}")
        theirs = checkpoint.load_tokenizer().hash
        if theirs != tokenizer_hash:
            raise TeacherError(f"{path}: teacher tokenizer {theirs[:16]} differs from the student's "
                               f"{tokenizer_hash[:16]}; a teacher must share the student's tokenizer")
    return checkpoint.load_model(device=device)


def _load_huggingface(path: Path, vocab_size: int, device: str | torch.device) -> torch.nn.Module:
    from transformers import AutoConfig, AutoModelForCausalLM

    from smallcode.export.hf import trusted_remote_code

    trust = trusted_remote_code(path)
    config = AutoConfig.from_pretrained(path, local_files_only=True, trust_remote_code=trust)
    theirs = getattr(config, "vocab_size", None)
    if theirs != vocab_size:
        raise _vocab_mismatch(path, theirs, vocab_size)
    return AutoModelForCausalLM.from_pretrained(path, local_files_only=True, trust_remote_code=trust).to(device)


def load_teacher(path: str | Path, vocab_size: int, tokenizer_hash: str | None = None,
                 device: str | torch.device = "cpu") -> Teacher:
    """Load a frozen teacher from a smallcode checkpoint or a Hugging Face directory (checks in the module doc)."""
    path = Path(path)
    source, _ = _source(path)
    identity = teacher_hash(path)
    if source == "smallcode":
        model = _load_smallcode(path, vocab_size, tokenizer_hash, device)
    else:
        model = _load_huggingface(path, vocab_size, device)
    return Teacher(model, source, identity, vocab_size, device)
