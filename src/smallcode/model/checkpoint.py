"""Model checkpoints: a directory with ``config.json``, ``model.safetensors`` and (optionally) ``tokenizer.json``.

An imported model's checkpoint also holds its Hugging Face tokenizer's other files
(``HF_TOKENIZER_FILES``: ``tokenizer_config.json`` and the rest), unchanged; ``save_checkpoint`` copies
those it finds beside the tokenizer file it is given, so a checkpoint trained, pruned or upcycled from
an imported one keeps them, and ``Checkpoint.load_tokenizer`` loads either kind.

``save_checkpoint`` writes one; :class:`Checkpoint` reads one: ``Checkpoint.open(dir)`` checks
``config.json`` (format version, model config) and gives the config and the other recorded fields,
the paths of the files, the weights (checked against the config), the model and the tokenizer.
``model_directory_kind`` tells a smallcode checkpoint from a Hugging Face model directory by its
``config.json``. The file names and the format version are defined here and nowhere else.

Writes go through ``smallcode.fileio.atomic_dir``, so a crash never leaves a half-written checkpoint
under the final name. Every read error is a :class:`CheckpointError` naming the file and the
problem: a missing file, a truncated or corrupt tensor file, a format version this code does not
know, tensors missing, extra or of the wrong shape, a tokenizer other than the one recorded.
Training state (optimizer, step, RNG, data position) is the trainer's and lives beside these files;
it is not handled here, and neither are Hugging Face weights (``smallcode.export.hf``).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from smallcode.config import ConfigError
from smallcode.errors import UserError
from smallcode.fileio import as_created, atomic_dir
from smallcode.model.config import ModelConfig
from smallcode.model.transformer import SmallCodeLM
from smallcode.tokenizer.code_tokenizer import SIDECAR_FILES, TOKENIZER_FILE

if TYPE_CHECKING:
    from smallcode.tokenizer import CodeTokenizer

FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
HF_TOKENIZER_FILES: tuple[str, ...] = SIDECAR_FILES
"""A Hugging Face tokenizer's files beside ``tokenizer.json`` (an imported model's), copied with it."""

__all__ = ["CONFIG_FILE", "FORMAT_VERSION", "HF_TOKENIZER_FILES", "TOKENIZER_FILE", "WEIGHTS_FILE", "Checkpoint",
           "CheckpointError", "ModelDirectoryKind", "copy_hf_tokenizer_files", "model_directory_kind",
           "save_checkpoint"]

ModelDirectoryKind = Literal["smallcode", "huggingface"]


class CheckpointError(UserError, RuntimeError):
    """A checkpoint that cannot be read; the message names the file and what is wrong."""


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from e


def _kind(meta: Any) -> ModelDirectoryKind | None:
    if isinstance(meta, dict) and "format_version" in meta and "model" in meta:
        return "smallcode"
    if isinstance(meta, dict) and "model_type" in meta:
        return "huggingface"
    return None


def model_directory_kind(path: str | Path) -> ModelDirectoryKind:
    """Whether ``path`` holds a smallcode checkpoint or a Hugging Face model, judged by its ``config.json``.

    A smallcode ``config.json`` has ``format_version`` and ``model``; a Hugging Face one names its
    ``model_type``. Anything else is a :class:`CheckpointError` saying what is missing. The weights
    are not looked at.
    """
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"{path}: not a directory (a model is a smallcode checkpoint or a Hugging Face "
                              "model directory)")
    config = path / CONFIG_FILE
    if not config.is_file():
        raise CheckpointError(f"{path}: no {CONFIG_FILE} (a model is a smallcode checkpoint or a Hugging Face "
                              "model directory)")
    meta = _read_json(config)
    kind = _kind(meta)
    if kind is None:
        if not isinstance(meta, dict):
            lacks = f"a JSON {type(meta).__name__}, not an object"
        else:  # say which fields are missing: a user may have edited or truncated the file
            lacks = "no " + ", ".join(k for k in ("format_version", "model", "model_type") if k not in meta)
        raise CheckpointError(f"{config}: neither a smallcode checkpoint config nor a Hugging Face config "
                              f"({lacks}; a smallcode one has format_version and model, a Hugging Face one "
                              "model_type)")
    return kind


@dataclass(frozen=True)
class Checkpoint:
    """An opened checkpoint directory whose ``config.json`` has been read and checked.

    Opening reads no weights; ``weights``, ``load_model`` and ``load_tokenizer`` read (and check)
    the other files when asked.
    """

    directory: Path
    config: ModelConfig
    meta: dict[str, Any]
    """The whole ``config.json``: format version, model config and whatever the writer added."""

    @classmethod
    def open(cls, directory: str | Path) -> Checkpoint:
        """Read and check ``directory/config.json``; raises :class:`CheckpointError` naming the problem."""
        directory = Path(directory)
        path = directory / CONFIG_FILE
        if not directory.is_dir():
            raise CheckpointError(f"{directory}: not a checkpoint directory (does not exist)")
        if not path.is_file():
            raise CheckpointError(f"{path}: missing (a checkpoint needs {CONFIG_FILE} and {WEIGHTS_FILE})")
        meta = _read_json(path)
        version = meta.get("format_version") if isinstance(meta, dict) else None
        if version != FORMAT_VERSION:
            raise CheckpointError(
                f"{path}: format_version {version!r} is not supported (this smallcode reads {FORMAT_VERSION})")
        try:
            config = ModelConfig.from_dict(meta["model"])
        except (KeyError, ConfigError, TypeError) as e:
            raise CheckpointError(f"{path}: invalid model config ({e})") from e
        return cls(directory, config, meta)

    @staticmethod
    def is_checkpoint(path: str | Path) -> bool:
        """A directory whose ``config.json`` is a smallcode one and that holds the weights file; never raises."""
        path = Path(path)
        try:
            return model_directory_kind(path) == "smallcode" and (path / WEIGHTS_FILE).is_file()
        except (CheckpointError, OSError):
            return False

    @property
    def config_file(self) -> Path:
        return self.directory / CONFIG_FILE

    @property
    def weights_file(self) -> Path:
        return self.directory / WEIGHTS_FILE

    @property
    def tokenizer_file(self) -> Path | None:
        """The checkpoint's copy of its tokenizer, or None when it was saved without one."""
        path = self.directory / TOKENIZER_FILE
        return path if path.is_file() else None

    @property
    def extra(self) -> dict[str, Any]:
        """What the writer recorded besides the format and the model (``train_step``, ``tokenizer_hash``, ...)."""
        return {k: v for k, v in self.meta.items() if k not in ("format_version", "model")}

    def weights(self, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
        """The full state dict, each tensor checked against the config by name and shape.

        With tied embeddings the file stores ``embed.weight`` once; the returned dict has it under
        ``lm_head.weight`` too, so it loads into a model as is.
        """
        path = self.weights_file
        if not path.is_file():
            raise CheckpointError(f"{path}: missing")
        try:
            state = load_file(path, device=str(device))
        except (SafetensorError, OSError) as e:
            raise CheckpointError(f"{path}: unreadable or truncated safetensors file ({e})") from e
        with torch.device("meta"):
            expected = dict(SmallCodeLM(self.config).state_dict())
        if self.config.tie_embeddings:
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
        if self.config.tie_embeddings:
            state["lm_head.weight"] = state["embed.weight"]
        return state

    def load_model(self, device: str | torch.device = "cpu", dtype: torch.dtype | None = None) -> SmallCodeLM:
        """Build the model of this checkpoint and load its checked weights (``dtype`` None: as stored)."""
        state = self.weights(device)
        with torch.device("meta"):
            model = SmallCodeLM(self.config)
        model = model.to_empty(device=device)
        # Copy into freshly allocated parameters rather than adopting the loaded buffers: their memory
        # alignment can steer BLAS to other kernels, and the loaded model must compute bit-identically.
        model.load_state_dict(state)
        if self.config.tie_embeddings:
            model.lm_head.weight = model.embed.weight
        model.rope = model.rope.for_config(self.config, device)
        return model if dtype is None else model.to(dtype)

    def load_tokenizer(self) -> CodeTokenizer:
        """The checkpoint's tokenizer, refused if missing, unreadable or not the one ``tokenizer_hash`` records
        (an imported model's: a foreign ``CodeTokenizer``, ``native`` False, read with its sidecar files)."""
        from smallcode.tokenizer import TokenizerError, load_tokenizer

        if self.tokenizer_file is None:
            raise CheckpointError(f"{self.directory / TOKENIZER_FILE}: missing (the checkpoint was saved "
                                  "without its tokenizer)")
        try:
            tokenizer = load_tokenizer(self.tokenizer_file)
        except TokenizerError as e:
            raise CheckpointError(f"{self.directory}: the checkpoint's tokenizer cannot be loaded ({e})") from e
        recorded = self.meta.get("tokenizer_hash")
        if recorded and recorded != tokenizer.hash:
            raise CheckpointError(f"{self.tokenizer_file}: hash {tokenizer.hash[:12]} differs from the "
                                  f"{recorded[:12]} the model was trained with")
        return tokenizer


def copy_hf_tokenizer_files(src: Path, dst: Path, skip: tuple[str, ...] = ()) -> None:
    """Copy the ``HF_TOKENIZER_FILES`` that ``src`` holds into ``dst``, unchanged (but those in ``skip``):
    the one way an imported model's tokenizer files travel (checkpoints, exports, the recipe)."""
    for name in HF_TOKENIZER_FILES:
        if name not in skip and (src / name).is_file():
            shutil.copyfile(src / name, dst / name)


def save_checkpoint(model: SmallCodeLM, directory: str | Path, tokenizer_file: str | Path | None = None,
                    extra: dict[str, Any] | None = None, write_extra: Callable[[Path], None] | None = None,
                    state: dict[str, torch.Tensor] | None = None) -> Path:
    """Write ``model`` (and a copy of ``tokenizer_file``) to ``directory`` atomically; returns ``directory``.

    The ``HF_TOKENIZER_FILES`` found beside ``tokenizer_file`` are copied with it.

    ``extra`` adds fields to ``config.json``. ``write_extra(tmp_dir)`` may add files (the trainer's
    optimizer and RNG state) before the directory is renamed into place, so they appear together
    with the weights or not at all. ``state`` replaces ``model.state_dict()`` when the weights live
    elsewhere (gathered from FSDP shards); ``model`` then only supplies the config.
    """
    target = Path(directory)
    with atomic_dir(target) as tmp:
        tensors = {k: v.detach().contiguous().cpu() for k, v in (state or model.state_dict()).items()}
        if model.config.tie_embeddings:
            tensors.pop("lm_head.weight")  # the same tensor as embed.weight
        save_file(tensors, tmp / WEIGHTS_FILE, metadata={"format_version": str(FORMAT_VERSION)})
        as_created(tmp / WEIGHTS_FILE)  # safetensors writes it 0600: weights are no secret
        meta = {"format_version": FORMAT_VERSION, "model": model.config.to_dict(), **(extra or {})}
        (tmp / CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        if tokenizer_file is not None:
            shutil.copyfile(tokenizer_file, tmp / TOKENIZER_FILE)
            copy_hf_tokenizer_files(Path(tokenizer_file).parent, tmp)
        if write_extra is not None:
            write_extra(tmp)
    return target
