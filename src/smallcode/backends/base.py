"""The ``Backend`` protocol that everything needing completions takes, and helpers every backend uses.

Deliberately tiny: a name and one batched ``generate``; a backend that times its own requests also
offers ``generate_timed`` (:class:`TimedBackend`). Nothing about tasks, prompts formats or scoring
lives here. The backends are adapters over :mod:`smallcode.client`, whose one error type a backend
raises (``BackendError`` is its old name) and whose stop handling it uses (``truncate_at_stop``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from smallcode.client.base import ClientError, truncate_at_stop

# The stop sequences of the Codex paper for function completion: a new top-level statement ends
# the function the model was asked to write.
DEFAULT_STOP: tuple[str, ...] = ("\nclass", "\ndef", "\n#", "\nif", "\nprint")


BackendError = ClientError
"""A backend that cannot produce completions (down, misconfigured, answering garbage): the client's
one error type, under the name eval's code has always caught."""

__all__ = ["DEFAULT_STOP", "Backend", "BackendError", "Timed", "TimedBackend", "truncate_at_stop"]


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

