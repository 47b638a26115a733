"""A Hugging Face causal LM as a model step (``smallcode.runtime.step.ModelStep``).

``HFStep(model)`` wraps an ``AutoModelForCausalLM``: each call feeds ids after the row's
transformers key/value cache (an ``HFCache``) and returns the logits, so an HF model directory is
``Engine(HFStep(model), HFTokenizer(hf_prompt_format(tokenizer)))`` and the plain ``Scheduler``
serves it: the queue, handles, events, cancellation, time limits, logprobs, metrics, token choice
(``sampling.choose``), stops, end-of-sequence, ``max_tokens`` and the streaming hold-back
(``Row.push``) are the engine's and the scheduler's own.

The step declares its limits (``StepLimits``): one row at a time, no prompt cache across requests,
and each prompt in one forward pass, then one token per call over the cache. A request's tokens are
therefore what ``model.generate`` gives for the same settings (greedy: the same ids).

``load_hf_tokenizer(path)`` is the tokenizer part alone (an imported smallcode checkpoint's engine
uses it over our own model). ``open_hf_engine(path, device=...)`` loads a transformers model directory
(``AutoModelForCausalLM`` and that tokenizer, local files only) as that engine; ``runtime.load.open_engine``
calls it for a Hugging Face directory whose family smallcode cannot import (or with ``runtime="hf"``).
``open_hf(path, device=..., max_batch=..., max_queue=..., metrics=...)`` returns the scheduler on it and
its ``HFFormat``.

Not here: batching several requests, a prompt cache across requests, or quantisation; the
smallcode engine does all three on our own models.
"""

from __future__ import annotations

import copy
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from smallcode.errors import UserError
from smallcode.runtime.engine import Engine
from smallcode.runtime.formats import HFFormat, HFTokenizer, generation_eos, load_hf_tokenizer
from smallcode.runtime.step import StepLimits
from smallcode.tokenizer import TokenizerError

if TYPE_CHECKING:
    from smallcode.runtime.metrics import Metrics
    from smallcode.runtime.scheduler import Scheduler

__all__ = ["DEFAULT_CONTEXT", "HFCache", "HFConfig", "HFModelError", "HFOutput", "HFStep", "HFTokenizer",
           "generation_eos", "load_hf_tokenizer", "open_hf", "open_hf_engine"]

# Context length assumed when a model's config does not say (transformers' own common default).
DEFAULT_CONTEXT = 2048


@dataclass(frozen=True)
class HFConfig:
    """What the engine reads of a model's config (``step.StepConfig``); a transformers model attends
    to its whole context, so its window is its context."""

    vocab_size: int
    window: int
    max_seq_len: int


@dataclass
class HFOutput:
    logits: torch.Tensor
    """(1, T, V) float32 next-token logits (T = 1 with ``last_only``)."""


class HFCache:
    """One row's transformers key/value cache behind ``step.StepCache``. It cannot be cut back or
    share a batch (``HFStep.limits`` says so); ``select`` and ``stack`` take its one row as it is."""

    batch = 1

    def __init__(self) -> None:
        self.past: Any = None
        """Transformers' cache object, None until the first call."""

    def select(self, rows: torch.Tensor | list[int]) -> HFCache:
        if [int(r) for r in rows] != [0]:
            raise ValueError("a transformers model's cache holds one row")
        return self

    def clone(self) -> HFCache:
        return copy.deepcopy(self)

    def can_truncate(self, length: int) -> bool:
        return False

    def truncate(self, length: int) -> HFCache:
        raise ValueError("a transformers model's cache is not cut back here (no prompt cache)")

    def nbytes(self) -> int:
        layers = getattr(self.past, "layers", None) or []
        tensors = [t for layer in layers for t in (getattr(layer, "keys", None), getattr(layer, "values", None))]
        return sum(t.nelement() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))

    @staticmethod
    def stack(caches: list[HFCache]) -> HFCache:
        if len(caches) != 1:
            raise ValueError("a transformers model's cache holds one row")
        return caches[0]


class HFStep:
    """A transformers causal LM as a model step: one row at a time, a prompt in one pass (see the
    module docstring). Holds no request state, so several engines may share one."""

    limits = StepLimits(max_rows=1, prompt_cache=False, prefill_pieces=False, speculation=False)

    def __init__(self, model: Any, max_context: int | None = None) -> None:
        self.model = model.eval()
        context = max_context or getattr(model.config, "max_position_embeddings", None) or DEFAULT_CONTEXT
        self.config = HFConfig(model.config.vocab_size, context, context)
        # transformers 5 renamed ``past_key_values`` to ``cache`` (argument and output); remote code may
        # still use the old name.
        forward_args = inspect.signature(model.forward).parameters
        self._cache_arg = "cache" if "cache" in forward_args else "past_key_values"
        self._keep_last = "logits_to_keep" in forward_args

    @property
    def device(self) -> torch.device:
        return self.model.device

    def new_cache(self, batch: int, initial_slots: int = 256, spare: int = 0) -> HFCache:
        if batch != 1:
            raise ValueError(f"a transformers model's cache holds one row, not {batch}")
        return HFCache()

    def __call__(self, input_ids: torch.Tensor, cache: HFCache | None = None, last_only: bool = False) -> HFOutput:
        """Logits for ``input_ids`` (1, T) after the row in ``cache`` (None: from position 0)."""
        cache = cache if cache is not None else HFCache()
        keep = {"logits_to_keep": 1} if last_only and self._keep_last else {}
        out = self.model(input_ids=input_ids, use_cache=True, **{self._cache_arg: cache.past}, **keep)
        cache.past = getattr(out, self._cache_arg)
        logits = out.logits[:, -1:] if last_only else out.logits
        return HFOutput(logits.float())


class HFModelError(UserError, ValueError):
    """A directory that transformers cannot load as a causal LM; the message says why."""


def open_hf_engine(path: str | Path, *, device: str = "cpu", max_context: int | None = None) -> Engine:
    """The engine on the transformers model in ``path`` (an ``HFStep`` and an ``HFTokenizer``)."""
    return _load(path, device, max_context)[0]


def open_hf(path: str | Path, *, device: str = "cpu", max_batch: int = 1, max_queue: int = 64,
            metrics: Metrics | None = None) -> tuple[Scheduler, HFFormat]:
    """Load the transformers model in ``path`` and serve it: the scheduler and its prompt format.
    ``max_batch`` is accepted for the common signature; the step runs one request at a time."""
    from smallcode.runtime.scheduler import Scheduler  # its metrics need prometheus_client (the serve extra)

    engine, fmt = _load(path, device, None)
    return Scheduler(engine, max_batch=max_batch, max_queue=max_queue, metrics=metrics), fmt


def _load(path: str | Path, device: str, max_context: int | None) -> tuple[Engine, HFFormat]:
    from transformers import AutoModelForCausalLM

    from smallcode.export.hf import trusted_remote_code

    path = Path(path)
    trust = trusted_remote_code(path)
    try:
        tokenizer = load_hf_tokenizer(path, trust_remote_code=trust)
    except TokenizerError as e:
        raise HFModelError(str(e)) from e  # it names the directory and the problem
    try:
        # Half precision is slow on a CPU; elsewhere keep the dtype the weights were saved in.
        model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, trust_remote_code=trust,
                                                     dtype=torch.float32 if device == "cpu" else "auto")
    except (OSError, ValueError) as e:
        raise HFModelError(f"{path}: cannot load a Hugging Face causal LM ({e})") from e
    model.to(device)
    return Engine(HFStep(model, max_context), tokenizer), tokenizer.format
