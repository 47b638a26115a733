"""An ONNX export (``smallcode export onnx``) run by onnxruntime as a model step (``runtime.step.ModelStep``).

``OnnxModel(dir)`` answers what ``Engine`` asks of a ``SmallCodeLM`` when generating: ``config``,
``device``, ``new_cache(batch, initial_slots=..., spare=...)`` and ``model(ids, cache,
last_only=...).logits``, with no ``StepLimits``. The cache is our ``KVCache`` itself (global slots
plus a window ring, per-slot positions), so ``select``, ``stack``, ``truncate`` and the prompt cache
work unchanged and memory stays constant. Each call feeds the cache's tensors to
the graph as numpy views (no copy), gets back the new tokens' keys and values, and writes them into
the slots ``KVCache.slots`` assigns, exactly where the torch model writes them.
``smallcode.runtime.load.open_engine(dir)`` builds the engine around it, so sampling, stop sequences,
streaming and FIM are the engine's and there is no second generation loop.

Not here: training, gradients, router statistics (the graph returns logits only), devices other
than the CPU.

Shape legend: B rows, T new tokens, K key/value heads, D head width, V vocabulary.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from smallcode.config import ConfigError
from smallcode.errors import UserError
from smallcode.export import ONNX_CONFIG_FILE, ONNX_FORMAT_VERSION, ONNX_MODEL_FILE
from smallcode.model.config import ModelConfig
from smallcode.model.kv_cache import KVCache
from smallcode.model.transformer import PREFILL_CHUNK

# The export's file names and format version, written by export/onnx.py (exports sit below the runtime).
CONFIG_FILE, MODEL_FILE, FORMAT_VERSION = ONNX_CONFIG_FILE, ONNX_MODEL_FILE, ONNX_FORMAT_VERSION


class OnnxModelError(UserError, ValueError):
    """A directory that is not a usable ONNX export; the message says why."""


@dataclass
class OnnxOutput:
    logits: torch.Tensor
    """(B, T, V) next-token logits (T = 1 with ``last_only``)."""


def is_onnx_export(path: str | Path) -> bool:
    """Whether ``path`` is a directory with an export's config file; never raises."""
    return (Path(path) / CONFIG_FILE).is_file()


def read_export_config(directory: Path) -> dict[str, Any]:
    """The export's ``smallcode_onnx.json``, checked for its version and model config."""
    path = directory / CONFIG_FILE
    if not directory.is_dir():
        raise OnnxModelError(f"{directory}: not a directory (an ONNX export is a directory from smallcode export onnx)")
    if not path.is_file():
        raise OnnxModelError(f"{directory}: not an ONNX export (no {CONFIG_FILE}; smallcode export onnx writes one)")
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise OnnxModelError(f"{path}: unreadable ({e})") from e
    version = meta.get("format_version") if isinstance(meta, dict) else None
    if version != FORMAT_VERSION:
        raise OnnxModelError(f"{path}: format_version {version!r} is not supported (this smallcode reads "
                             f"{FORMAT_VERSION}; export the checkpoint again)")
    try:
        meta["model"] = ModelConfig.from_dict(meta["model"])
    except (KeyError, ConfigError, TypeError) as e:
        raise OnnxModelError(f"{path}: invalid model config ({e})") from e
    return meta


class OnnxModel:
    """The graph of an export directory in an onnxruntime session (CPU)."""

    def __init__(self, directory: str | Path, threads: int | None = None) -> None:
        import onnxruntime as ort

        self.directory = Path(directory)
        meta = read_export_config(self.directory)
        self.config: ModelConfig = meta["model"]
        self.quantize: str | None = meta.get("quantize")
        self.tokenizer_hash: str | None = meta.get("tokenizer_hash")
        path = self.directory / MODEL_FILE
        if not path.is_file():
            raise OnnxModelError(f"{path}: missing (the export is incomplete)")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types for any malformed graph
            raise OnnxModelError(f"{path}: onnxruntime cannot load it ({str(e).splitlines()[0]})") from e
        names = [i.name for i in self.session.get_inputs()]
        outputs = [o.name for o in self.session.get_outputs()]
        if names != meta.get("inputs") or len(names) != 4 + 2 * self.config.n_layers or outputs != meta.get("outputs"):
            raise OnnxModelError(f"{path}: the graph's inputs or outputs do not match {CONFIG_FILE} (another version?)")
        self._past_names = names[4:]

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def eval(self) -> OnnxModel:
        return self

    def new_cache(self, batch: int, initial_slots: int = 256, spare: int = 0) -> KVCache:
        return KVCache(self.config, batch, device="cpu", dtype=torch.float32, initial_slots=initial_slots, spare=spare)

    def __call__(self, input_ids: torch.Tensor, cache: KVCache | None = None, last_only: bool = False) -> OnnxOutput:
        """Logits for ``input_ids`` (B, T), continuing the rows of ``cache`` (None: a fresh one from position 0).

        Long inputs go through in pieces of ``min(window, PREFILL_CHUNK)``, as ``SmallCodeLM`` feeds them.
        """
        if cache is None:
            cache = self.new_cache(input_ids.shape[0], initial_slots=input_ids.shape[1])
        chunk = min(self.config.window, PREFILL_CHUNK)
        if input_ids.shape[1] <= chunk:  # every decode step
            return OnnxOutput(self._step(input_ids, cache, keep=1 if last_only else input_ids.shape[1]))
        pieces = input_ids.split(chunk, dim=1)
        logits = [self._step(p, cache, keep=1 if last_only else p.shape[1]) for p in pieces]
        return OnnxOutput(logits[-1] if last_only else torch.cat(logits, dim=1))

    def _step(self, ids_BT: torch.Tensor, cache: KVCache, keep: int) -> torch.Tensor:
        """One piece through the graph, then its keys and values into the cache.

        The bookkeeping is ``KVCache``'s (``positions``, ``slots``, ``write``, ``commit``) done in
        numpy on views of the cache's tensors: at one token per row, torch's per-call cost for
        those dozen small operations was a sixth of the step.
        """
        B, T = ids_BT.shape
        cache.reserve(T)  # may reallocate the cache: its numpy views are taken after this
        G, ring = cache.n_global, cache.ring
        k, v, slot_pos = cache.k.numpy(), cache.v.numpy(), cache.slot_pos.numpy()
        pos = cache.length.numpy()[:, None] + np.arange(T)
        if T > 1 and int((pos >= G).sum(axis=1).max()) > ring:  # as KVCache.step
            raise ValueError(f"a chunk of {T} positions does not fit a ring of {ring} slots")
        feeds = {"input_ids": ids_BT.numpy(), "position_ids": pos, "slot_positions": slot_pos,
                 "logits_to_keep": np.array(keep, dtype=np.int64)}
        for i in range(self.config.n_layers):  # views of the cache's storage, not copies
            feeds[self._past_names[2 * i]] = k[i]
            feeds[self._past_names[2 * i + 1]] = v[i]
        logits, new_k, new_v = self.session.run(None, feeds)  # new_*: (L, B, T, K, D)
        rows, slots = np.arange(B)[:, None], np.where(pos < G, pos, G + (pos - G) % ring)
        k[:, rows, :, slots] = new_k.transpose(1, 2, 0, 3, 4)  # advanced indices first: (B, T, L, K, D)
        v[:, rows, :, slots] = new_v.transpose(1, 2, 0, 3, 4)
        slot_pos[rows, slots] = pos
        cache.length = torch.from_numpy(pos[:, -1] + 1)
        return torch.from_numpy(logits)


def load_export_tokenizer(directory: str | Path, expected_hash: str | None) -> Any:
    """The export's tokenizer, refused when it is not the one the graph was exported with. An imported
    model's export holds the model's Hugging Face tokenizer files: that tokenizer, as transformers loads
    it (``formats.load_hf_tokenizer``), so the export is asked in the family's layouts."""
    from smallcode.runtime.formats import load_hf_tokenizer
    from smallcode.tokenizer import TokenizerError, load_tokenizer

    directory = Path(directory)
    try:
        tokenizer = load_tokenizer(directory)
    except TokenizerError as e:
        raise OnnxModelError(f"{directory}: the export's tokenizer cannot be loaded ({e})") from e
    if expected_hash and tokenizer.hash != expected_hash:
        raise OnnxModelError(f"{directory}: tokenizer hash {tokenizer.hash[:12]} differs from the "
                             f"{expected_hash[:12]} the model was exported with (mismatched tokenizer)")
    if not tokenizer.native:
        try:
            return load_hf_tokenizer(directory)
        except TokenizerError as e:
            raise OnnxModelError(f"{directory}: the export's tokenizer cannot be loaded ({e})") from e
    return tokenizer
