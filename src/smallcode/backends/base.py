"""The ``Backend`` protocol that everything needing completions takes, and helpers every backend uses.

Deliberately tiny: a name and one batched ``generate``; a backend that times its own requests also
offers ``generate_timed`` (:class:`TimedBackend`). Nothing about tasks, prompts formats or scoring
lives here. The backends are adapters over :mod:`smallcode.client`, whose one error type a backend
raises (``smallcode.client.ClientError``) and whose stop handling it uses (``truncate_at_stop``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

from smallcode.client.base import ClientError, truncate_at_stop
from smallcode.export import ONNX_CONFIG_FILE

__all__ = ["Backend", "Timed", "TimedBackend", "truncate_at_stop"]


@runtime_checkable
class Backend(Protocol):
    name: str
    """Human-readable identity recorded in run outputs (model path, endpoint URL + model)."""

    def generate(
        self,
        prompts: list[str],
        n: int,
        temperature: float,
        top_p: float,
        max_tokens: int,
        stop: list[str],
    ) -> list[list[str]]:
        """``n`` completions for each prompt (same order), each cut at the first stop sequence."""
        ...


@dataclass(frozen=True)
class Timed:
    """One completion and how long its own request took (from sending it to the last text)."""

    text: str
    seconds: float
    """Wall time of the request that produced this completion, to its last piece of text."""
    ttft_s: float | None
    """Wall time to the first piece of this completion's text; None when the answer was not streamed."""


@runtime_checkable
class TimedBackend(Backend, Protocol):
    """A backend that times each completion's own request (an endpoint answering one prompt per request)."""

    def generate_timed(
        self,
        prompts: list[str],
        n: int,
        temperature: float,
        top_p: float,
        max_tokens: int,
        stop: list[str],
    ) -> list[list[Timed]]:
        """What ``generate`` returns, each completion with its timing."""
        ...


BackendKind = Literal["smallcode", "onnx", "huggingface", "endpoint", "samples"]

KIND_WHAT = {
    "smallcode": "a smallcode checkpoint directory",
    "onnx": "an ONNX export directory (smallcode export onnx)",
    "huggingface": "a Hugging Face model directory",
    "endpoint": "an http(s) URL of an OpenAI-compatible endpoint",
    "samples": "a samples file (JSONL with task_id and completion)",
}


def backend_kind(spec: str | Path) -> BackendKind:
    """What ``spec`` names (see the module docstring); raises :class:`ClientError` when it is none of them."""
    text = str(spec)
    if text.startswith(("http://", "https://")):
        return "endpoint"
    path = Path(spec)
    if path.is_dir() and (path / ONNX_CONFIG_FILE).is_file():
        return "onnx"
    if path.is_dir():
        from smallcode.model.checkpoint import CheckpointError, model_directory_kind

        try:
            return model_directory_kind(path)
        except CheckpointError as e:
            raise ClientError(str(e)) from e
    if path.is_file():
        return "samples"
    raise ClientError(f"{spec}: no such file or directory, and not an http(s) URL (a backend is "
                       f"{', '.join(KIND_WHAT.values())})")
