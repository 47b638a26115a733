"""Opening a model directory as an ``Engine``: the one place that tells the kinds apart.

``open_engine(path)`` takes a smallcode checkpoint (torch), a ``smallcode export onnx`` directory
(onnxruntime, CPU) or a Hugging Face model directory (transformers, ``runtime.hf``); ``runtime``
forces one. Every kind ends in the same ``Engine`` over its model step, so sampling, stop sequences,
streaming, FIM and the scheduler are shared.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from smallcode.model.checkpoint import CheckpointError, model_directory_kind
from smallcode.runtime.engine import Engine
from smallcode.runtime.hf import open_hf_engine
from smallcode.runtime.onnx import OnnxModel, is_onnx_export, load_export_tokenizer

Runtime = Literal["torch", "onnx", "hf"]
RUNTIMES: tuple[Runtime, ...] = ("torch", "onnx", "hf")


def runtime_of(path: str | Path) -> Runtime:
    """Which runtime opens ``path``: ``onnx`` for an ONNX export, ``hf`` for a Hugging Face model
    directory, else ``torch`` (whose loader says what is wrong with anything else)."""
    if is_onnx_export(path):
        return "onnx"
    try:
        if model_directory_kind(path) == "huggingface":
            return "hf"
    except CheckpointError:  # not a model directory at all: the checkpoint loader's error names the problem
        pass
    return "torch"


def open_engine(path: str | Path, *, device: str = "cpu", runtime: Runtime | None = None,
                max_context: int | None = None, threads: int | None = None) -> Engine:
    """The engine on ``path``: ``runtime`` ``torch`` (a checkpoint), ``onnx`` (an export, on the CPU)
    or ``hf`` (a transformers model directory); None: whichever ``path`` is (``runtime_of``).
    ``threads``: onnxruntime's intra-op threads (default: torch's)."""
    runtime = runtime or runtime_of(path)
    if runtime == "onnx":
        model = OnnxModel(path, threads=threads)
        return Engine(model, load_export_tokenizer(path, model.tokenizer_hash), max_context)
    if runtime == "hf":
        return open_hf_engine(path, device=device, max_context=max_context)
    if runtime != "torch":
        raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
    return Engine.from_checkpoint(path, device=device, max_context=max_context)
