"""What the engine and the scheduler ask of a model and its key/value cache: the model step protocol.

A ``ModelStep`` turns token ids into next-token logits, continuing the rows of a cache it made:

* ``config``: ``vocab_size`` (ids at or above it are refused), ``window`` and ``max_seq_len`` (the
  engine's default context: a windowed model's memory does not grow, a full-attention one stops at
  what it was trained on);
* ``device``: where the ids and the samplers' generators go;
* ``new_cache(batch, initial_slots=, spare=)``: an empty cache of ``batch`` rows, sized for
  ``initial_slots`` positions, with ``spare`` positions it can go back by (``StepCache.truncate``);
* ``step(input_ids, cache, last_only=)``, i.e. calling it: feed (B, T) ids after the cache's rows
  and return an object whose ``logits`` are (B, T, V), or (B, 1, V) with ``last_only``.

A ``StepCache`` is what the engine moves rows with: ``batch``, ``select`` (rows in a new order,
repeats allowed), ``clone``, ``can_truncate``/``truncate`` (back to fewer positions), ``rewind`` (rows back by
different numbers of positions, in place: speculative decoding), ``nbytes`` and
``stack`` (rows of several caches in one; called on any one of them, see ``stack_caches``).

A step may also declare ``limits`` (a ``StepLimits``): how many rows one cache may hold, whether its
caches may be kept in a ``PromptCache``, whether a prompt may be fed in pieces, whether it may
speculate. Without it, none of these is limited. The engine and the scheduler respect the limits and
know nothing else about the model behind a step.

Implementations: ``SmallCodeLM`` with ``smallcode.model.kv_cache.KVCache`` (after
``cpu_decode.prepare_for_decoding``, which ``Engine`` does), ``runtime.onnx.OnnxModel`` (the same
cache) and ``runtime.hf.HFStep`` (a transformers model, one row at a time, no prompt cache).
A ``Tokenizer`` is what the engine asks of a tokenizer: ``CodeTokenizer`` and ``formats.HFTokenizer``.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import torch

C = TypeVar("C", bound="StepCache")


@dataclass(frozen=True)
class StepLimits:
    """What a model step cannot do; the defaults limit nothing."""

    max_rows: int | None = None
    """Most rows one cache may hold (a scheduler runs at most this many requests at once); None: any."""
    prompt_cache: bool = True
    """Whether its caches may be kept and reused across requests (``clone``, ``truncate``)."""
    prefill_pieces: bool = True
    """Whether a prompt may be fed in several calls; False: the whole prompt in one call, as
    transformers' ``generate`` feeds it (its greedy tokens then stay exactly ``generate``'s)."""
    speculation: bool = True
    """Whether speculative decoding may run on it: several tokens per row in one call, then ``rewind``."""


NO_LIMITS = StepLimits()


class StepConfig(Protocol):
    @property
    def vocab_size(self) -> int: ...
    @property
    def window(self) -> int: ...
    @property
    def max_seq_len(self) -> int: ...


class StepOutput(Protocol):
    @property
    def logits(self) -> torch.Tensor:
        """(B, T, V) next-token logits (T = 1 with ``last_only``)."""
        ...


class StepCache(Protocol):
    @property
    def batch(self) -> int: ...
    def select(self: C, rows: torch.Tensor | list[int]) -> C: ...
    def clone(self: C) -> C: ...
    def can_truncate(self, length: int) -> bool: ...
    def truncate(self: C, length: int) -> C: ...
    def rewind(self, drop: list[int]) -> None:
        """Forget the last ``drop[b]`` positions of row b, in place (speculative decoding's rollback)."""
        ...
    def nbytes(self) -> int: ...
    def stack(self, caches: list[Any]) -> Any:
        """Rows of ``caches`` (of this cache's kind) in one cache; may be a static method."""
        ...


class ModelStep(Protocol):
    @property
    def config(self) -> StepConfig: ...
    @property
    def device(self) -> torch.device: ...
    def new_cache(self, batch: int, initial_slots: int = 256, spare: int = 0) -> Any: ...
    def __call__(self, input_ids: torch.Tensor, cache: Any = None, last_only: bool = False) -> StepOutput: ...


class Tokenizer(Protocol):
    """What ``Engine``, ``Row.push`` and the scheduler ask of a tokenizer."""

    @property
    def vocab_size(self) -> int: ...
    @property
    def stop_ids(self) -> Collection[int]: ...
    def encode(self, text: str) -> list[int]: ...
    def decode(self, ids: Sequence[int]) -> str: ...


def step_limits(model: object) -> StepLimits:
    """The limits ``model`` declares (its ``limits`` attribute), or none."""
    limits = getattr(model, "limits", None)
    return limits if isinstance(limits, StepLimits) else NO_LIMITS


def stack_caches(caches: list[C]) -> C:
    """One cache holding the rows of ``caches``, in order."""
    if len(caches) == 1:
        return caches[0]
    return caches[0].stack(caches)  # type: ignore[no-any-return]
