"""The one runtime under every model consumer (the CLI, the server, the LSP, the agent, the eval).

Modules, from the model up:

* ``step``: the model step protocol (``ModelStep``, ``StepCache``, ``StepLimits``, ``Tokenizer``):
  what the engine and the scheduler ask of a model, its key/value cache and its tokenizer.
* ``cpu_decode``: the CPU decode modules ``Engine`` swaps into a ``SmallCodeLM`` (``few_rows.c``).
* ``onnx``: ``OnnxModel``, an ONNX export run by onnxruntime as a model step.
* ``hf``: ``HFStep``, a transformers causal LM as a model step; ``open_hf``.
* ``sampling``: ``SamplingParams`` and the choice of the next token from logits.
* ``formats``: prompt layouts (plain, fill-in-the-middle with context files, chat): ``PromptFormat``,
  ``prompt_format``, ``hf_prompt_format``, ``HFTokenizer``.
* ``engine``: ``Engine`` (prefill, batched decoding, stops, streaming, FIM) and its step-level
  pieces ``Prefill``, ``PromptCache``, ``Row``; ``GenerationError``.
* ``scheduler``: ``Scheduler``, continuous batching over an engine (no HTTP), ``RequestHandle``,
  ``Event``, ``QueueFull``.
* ``metrics``: ``Metrics``, the scheduler's Prometheus counters.
* ``load``: ``open_engine(path)``, the engine on a checkpoint, an ONNX export or an HF directory.

Importing this package loads neither onnxruntime, transformers nor prometheus_client (the
scheduler's metrics, a ``serve`` extra): ``Scheduler``, ``RequestHandle``, ``Event``, ``QueueFull``
and ``Metrics`` are imported when first named, and ``open_engine`` loads a runtime when asked.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from smallcode.runtime.engine import Completion, Engine, GenerationError, Prefill, PromptCache, Row
from smallcode.runtime.formats import FormatError, HFTokenizer, PromptFormat, hf_prompt_format, prompt_format
from smallcode.runtime.load import open_engine
from smallcode.runtime.sampling import SamplingParams
from smallcode.runtime.step import ModelStep, StepCache, StepLimits, Tokenizer

if TYPE_CHECKING:
    from smallcode.runtime.metrics import Metrics
    from smallcode.runtime.scheduler import Event, QueueFull, RequestHandle, Scheduler

_LATER = {"Event": "scheduler", "QueueFull": "scheduler", "RequestHandle": "scheduler", "Scheduler": "scheduler",
          "Metrics": "metrics"}

__all__ = ["Completion", "Engine", "Event", "FormatError", "GenerationError", "HFTokenizer", "Metrics",
           "ModelStep", "Prefill", "PromptCache", "PromptFormat", "QueueFull", "RequestHandle", "Row",
           "SamplingParams", "Scheduler", "StepCache", "StepLimits", "Tokenizer", "hf_prompt_format",
           "open_engine", "prompt_format"]


def __getattr__(name: str) -> Any:
    module = _LATER.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"smallcode.runtime.{module}"), name)
