"""Opening a model directory as an ``Engine``: the one place that tells the kinds apart.

``open_engine(path)`` takes a smallcode checkpoint (torch) or a ``smallcode export onnx`` directory
(onnxruntime, CPU); ``runtime`` forces one. Every kind ends in the same ``Engine``, so sampling, stop
sequences, streaming, FIM and the scheduler are shared.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from smallcode.runtime.engine import Engine
from smallcode.runtime.onnx import OnnxModel, is_onnx_export, load_export_tokenizer

Runtime = Literal["torch", "onnx"]


def open_engine(path: str | Path, *, device: str = "cpu", runtime: Runtime | None = None,
                max_context: int | None = None, threads: int | None = None) -> Engine:
    """The engine on ``path``: ``runtime`` ``torch`` (a checkpoint) or ``onnx`` (an export, on the CPU);
    None: whichever ``path`` is. ``threads``: onnxruntime's intra-op threads (default: torch's)."""
    if runtime == "onnx" or (runtime is None and is_onnx_export(path)):
        model = OnnxModel(path, threads=threads)
        return Engine(model, load_export_tokenizer(path, model.tokenizer_hash), max_context)  # type: ignore[arg-type]
    return Engine.from_checkpoint(path, device=device, max_context=max_context)
