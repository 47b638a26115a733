"""Opening a model directory as an ``Engine``: the one place that tells the kinds apart.

``open_engine(path)`` takes a smallcode checkpoint (torch), a ``smallcode export onnx`` directory
(onnxruntime, CPU) or a Hugging Face model directory. A Hugging Face model of a family smallcode can
import (``smallcode.export.hf_import.is_importable``: Llama, Mistral, Qwen2, ...) is imported in memory
(``load_hf_as_smallcode``) and runs on our own engine, so it gets continuous batching and prompt reuse,
with the model's own tokenizer (``formats.load_hf_tokenizer``: its family's layouts, token ids equal to
``AutoTokenizer``'s); any other one runs on transformers (``runtime.hf``, one request at a time).
``runtime`` forces one: ``torch`` (ours: a checkpoint, or an importable Hugging Face directory), ``onnx``,
``hf`` (transformers, even for an importable family). Every kind ends in the same ``Engine`` over its
model step, so sampling, stop sequences, streaming, FIM and the scheduler are shared.

``speculate`` (``"ngram"``, ``"draft:DIR"`` or a ``speculative.Speculation``) turns speculative
decoding on; a draft model is opened here the same way (any kind but transformers' one-row step).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch

from smallcode.export import hf_import
from smallcode.model.checkpoint import CheckpointError, model_directory_kind
from smallcode.runtime.engine import Engine
from smallcode.runtime.formats import load_hf_tokenizer
from smallcode.runtime.hf import open_hf_engine
from smallcode.runtime.onnx import OnnxModel, is_onnx_export, load_export_tokenizer
from smallcode.runtime.speculative import Speculation

Runtime = Literal["torch", "onnx", "hf"]
RUNTIMES: tuple[Runtime, ...] = ("torch", "onnx", "hf")


def runtime_of(path: str | Path) -> Runtime:
    """Which runtime opens ``path``: ``onnx`` for an ONNX export, ``hf`` for a Hugging Face model
    directory smallcode cannot import, else ``torch`` (a checkpoint, an importable Hugging Face
    directory, or anything else, whose loader says what is wrong with it)."""
    if is_onnx_export(path):
        return "onnx"
    try:
        if model_directory_kind(path) == "huggingface":
            return "torch" if hf_import.is_importable(path) else "hf"
    except CheckpointError:  # not a model directory at all: the checkpoint loader's error names the problem
        pass
    return "torch"


def open_imported(path: str | Path, *, device: str = "cpu", max_context: int | None = None) -> Engine:
    """Our engine on the Hugging Face model in ``path``, imported in memory (float32 on the CPU, the
    weights' dtype elsewhere), with the model's own tokenizer. A model smallcode cannot import is an
    ``HFImportError`` naming what is missing (runtime ``hf`` serves it on transformers)."""
    tokenizer = load_hf_tokenizer(path)
    model = hf_import.load_hf_as_smallcode(path, device=device, dtype=torch.float32 if device == "cpu" else None)
    return Engine(model, tokenizer, max_context)


def open_engine(path: str | Path, *, device: str = "cpu", runtime: Runtime | None = None,
                max_context: int | None = None, threads: int | None = None,
                speculate: str | Speculation | None = None) -> Engine:
    """The engine on ``path``: ``runtime`` ``torch`` (a checkpoint, or a Hugging Face directory smallcode
    imports in memory), ``onnx`` (an export, on the CPU) or ``hf`` (a transformers model directory, on
    transformers); None: whichever ``path`` is (``runtime_of``). ``threads``: onnxruntime's intra-op
    threads (default: torch's). ``speculate``: speculative decoding, ``"ngram"`` or ``"draft:DIR"``."""
    engine = _open(path, device=device, runtime=runtime, max_context=max_context, threads=threads)
    if speculate is None:
        return engine
    settings = Speculation.parse(speculate) if isinstance(speculate, str) else speculate
    draft = None
    if settings.draft is not None:
        draft = _open(settings.draft, device=device, runtime=None, max_context=max_context, threads=threads)
    return engine.speculate(settings, draft)


def _open(path: str | Path, *, device: str, runtime: Runtime | None, max_context: int | None,
          threads: int | None) -> Engine:
    runtime = runtime or runtime_of(path)
    if runtime == "onnx":
        model = OnnxModel(path, threads=threads)
        return Engine(model, load_export_tokenizer(path, model.tokenizer_hash), max_context)
    if runtime == "hf":
        return open_hf_engine(path, device=device, max_context=max_context)
    if runtime != "torch":
        raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
    try:
        hugging_face = model_directory_kind(path) == "huggingface"
    except CheckpointError:  # the checkpoint loader names what is wrong
        hugging_face = False
    if hugging_face:
        return open_imported(path, device=device, max_context=max_context)
    return Engine.from_checkpoint(path, device=device, max_context=max_context)
