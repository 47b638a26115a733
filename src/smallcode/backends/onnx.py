"""ONNX exports (``smallcode export onnx``) as a backend: the local backend with the onnxruntime engine.

``open_engine`` gives the same ``Engine`` as a checkpoint does, so batching, stop sequences and the
fixed seed are ``LocalBackend``'s; only loading differs.
"""

from __future__ import annotations

from pathlib import Path

from smallcode.backends.base import BackendError
from smallcode.backends.local import LocalBackend


class OnnxBackend(LocalBackend):
    def __init__(self, directory: str | Path, seed: int = 0, batch_prompts: int = 8) -> None:
        from smallcode.runtime.load import open_engine
        from smallcode.runtime.onnx import OnnxModelError

        self.name = f"onnx:{directory}"
        self.seed = seed
        self.batch_prompts = batch_prompts
        try:
            self.engine = open_engine(directory)
        except (OnnxModelError, ValueError) as e:
            raise BackendError(f"{directory}: cannot load the ONNX export ({e})") from e
