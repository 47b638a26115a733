"""What every transport shares: the requests, the sampling settings, the answers, the one error type.

A request is one of three kinds:

* :class:`Text`: a plain prompt to continue (``/v1/completions``);
* :class:`Fim`: fill in the middle between ``prefix`` and ``suffix``, after other files given as
  ``(path, text)`` pairs (llama.cpp's ``/infill``, or ``/v1/completions`` with ``suffix``);
* :class:`Chat`: a conversation answered by an assistant turn (``/v1/chat/completions``).

A :class:`Client` answers any of them with ``n`` :class:`Completion` s (``generate``, or ``agenerate``
from async code), or one completion's text as it comes (``stream`` / ``astream``: :class:`Delta`
pieces; leaving the iteration early stops the model). Stop sequences are applied here too, since a
server may ignore them (:func:`truncate_at_stop`, :class:`StopCut`).

Everything that goes wrong is a :class:`ClientError`; :class:`ClientBusy` when the model's queue is
full (the in-process scheduler's ``QueueFull``, an HTTP 503), which a later request may not meet.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from smallcode.errors import UserError


class ClientError(UserError, RuntimeError):
    """The model cannot answer (failed to load, endpoint down or refusing, a request it cannot serve,
    a garbled answer); the message says why, naming the model or URL."""


class ClientBusy(ClientError):
    """The model's queue is full (scheduler ``QueueFull``, HTTP 503): this request gets no answer."""


@dataclass(frozen=True)
class Text:
    """A plain prompt to continue."""

    prompt: str


@dataclass(frozen=True)
class Fim:
    """The text between ``prefix`` and ``suffix``, after the files in ``extra`` (``(path, text)`` pairs)."""

    prefix: str
    suffix: str = ""
    extra: Sequence[tuple[str, str]] = ()


@dataclass(frozen=True)
class Chat:
    """A conversation (``[{"role", "content"}, ...]``) to answer with an assistant turn."""

    messages: Sequence[dict[str, str]]


Request = Text | Fim | Chat


@dataclass(frozen=True)
class Sampling:
    """How each completion is sampled. ``seed`` is the first sample's; sample ``i`` of ``n`` uses
    ``seed + i`` (None: the model draws one)."""

    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: Sequence[str] = field(default_factory=tuple)
    """Text that ends a completion (not part of it)."""
    stop_loops: bool = False
    """End a completion that repeats itself (``SamplingParams.stop_loops``): in process; a smallcode
    server's ``/infill`` does it by itself, other routes and servers ignore it."""


GREEDY = Sampling()
"""The default: greedy, 256 tokens at most, no stop sequences."""


@dataclass(frozen=True)
class Completion:
    """One finished completion and what its request took."""

    text: str
    finish_reason: str | None
    """"stop", "length", "eos", ... as the model said; None when it did not say."""
    seconds: float
    """Wall time from sending the request to this completion's last text."""
    ttft_s: float | None
    """Wall time to its first text; None when the answer was not streamed."""
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    """Token counts where the model reported them (None: unknown)."""


@dataclass(frozen=True)
class Delta:
    """A piece of one streamed completion; the last piece has a ``finish_reason`` and the counts known."""

    text: str
    seconds: float
    """Wall time from sending the request to this piece."""
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


@runtime_checkable
class Client(Protocol):
    name: str

    def generate(self, request: Request, sampling: Sampling = GREEDY, n: int = 1) -> list[Completion]:
        """``n`` completions of ``request``."""
        ...

    async def agenerate(self, request: Request, sampling: Sampling = GREEDY, n: int = 1) -> list[Completion]:
        """``generate`` for async code; cancelling the awaiting task stops the model."""
        ...

    def stream(self, request: Request, sampling: Sampling = GREEDY) -> Iterator[Delta]:
        """One completion as it is written; leaving the iteration stops it."""
        ...

    def astream(self, request: Request, sampling: Sampling = GREEDY) -> AsyncIterator[Delta]:
        """``stream`` for async code (an async generator: close it, or cancel its task, to stop)."""
        ...

    def close(self) -> None: ...

    async def aclose(self) -> None: ...


def truncate_at_stop(text: str, stop: Sequence[str]) -> str:
    """Cut ``text`` at the earliest occurrence of any stop sequence (servers may ignore ``stop``)."""
    cut = len(text)
    for s in stop:
        if s:
            i = text.find(s)
            if i != -1:
                cut = min(cut, i)
    return text[:cut]


class StopCut:
    """Stop sequences over a stream of text pieces: ``push`` gives what may be shown now, holding
    back a tail that a stop sequence may still claim; ``stopped`` once one was found."""

    def __init__(self, stop: Sequence[str]) -> None:
        self.stop = [s for s in stop if s]
        self.text = ""
        self.shown = 0
        self.stopped = False

    def push(self, piece: str) -> str:
        self.text += piece
        cut = truncate_at_stop(self.text, self.stop)
        if len(cut) < len(self.text):
            self.text, self.stopped = cut, True
            return self.flush()
        safe = len(self.text)
        for k in range(min(safe, max((len(s) for s in self.stop), default=0)), 0, -1):
            if any(s.startswith(self.text[safe - k:]) for s in self.stop):
                safe -= k
                break
        out, self.shown = self.text[self.shown:safe], max(self.shown, safe)
        return out

    def flush(self) -> str:
        """What is held back, now that nothing more comes."""
        out, self.shown = self.text[self.shown:], len(self.text)
        return out
