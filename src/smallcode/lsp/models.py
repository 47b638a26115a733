"""Where completions come from: the engine in this process, or a completion server over HTTP.

Both adapters answer ``await model.complete(request, enough)``: the text the model wrote for one
``FimRequest``, streamed, stopped as soon as ``enough(text_so_far)`` says the rest cannot change the
result. Cancelling the awaiting task stops the model within one decode step. Both are thin adapters
over :mod:`smallcode.client`, whose ``astream`` of a ``Fim`` request does the work:

* ``LocalModel`` (``--model DIR``): the client's in-process transport (``client.local.open_local``:
  the server's scheduler, continuous batching, cancellation and prompt cache, without HTTP; the
  prompt laid out by ``runtime.formats``); leaving its stream cancels the request's row.
* ``EndpointModel`` (``--endpoint URL``): the client's HTTP transport, which streams llama.cpp's
  ``/infill`` or, when the server has none, OpenAI's ``/v1/completions`` with ``suffix``; closing the
  stream is the cancellation (``smallcode serve`` frees the row when its client goes away). No
  retries: the next keystroke asks again.

Each adapter counts the requests that reached the model (``calls``): a request that is superseded or
cancelled before it gets here is never counted. A model that cannot answer (failed to load, endpoint
down or refusing) raises ``ClientError`` with a message for the user;
a full queue raises ``ClientBusy``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from smallcode.client import Client, ClientError, Fim, Sampling

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FimRequest:
    prefix: str
    suffix: str
    extra: Sequence[tuple[str, str]] = ()
    max_tokens: int = 64
    temperature: float = 0.0
    seed: int = 0
    stop: list[str] = field(default_factory=list)
    stop_loops: bool = True
    """End a completion that repeats itself after one copy (in process; ``/infill`` does it itself)."""


class CompletionModel(Protocol):
    calls: int

    async def complete(self, request: FimRequest, enough: Callable[[str], bool]) -> str: ...

    async def close(self) -> None: ...


async def _complete(client: Client, request: FimRequest, enough: Callable[[str], bool],
                    on_sent: Callable[[], None]) -> str:
    """The streamed text of ``request`` until it ends or ``enough`` says so (the stream is then
    closed: the model stops). ``on_sent`` is called once the request is with the model."""
    sampling = Sampling(max_tokens=request.max_tokens, temperature=request.temperature, seed=request.seed,
                        stop=tuple(request.stop), stop_loops=request.stop_loops)
    text, sent = "", False
    async with aclosing(client.astream(Fim(request.prefix, request.suffix, request.extra), sampling)) as deltas:
        try:
            async for delta in deltas:
                if not sent:
                    sent = True
                    on_sent()
                text += delta.text
                if delta.finish_reason is None and enough(text):
                    break
        except asyncio.CancelledError:
            if not sent:  # cancelled while waiting for its first text: it had been submitted
                on_sent()
            raise
    return text


# ---------------------------------------------------------------------------------- in process
class LocalModel:
    """The engine in this process behind the server's scheduler (see the module docstring).

    The model is loaded in a thread of its own, started here: ``smallcode lsp`` makes this object
    before it reads the editor's first message, so the load runs while the editor initialises, and
    a completion asked before it is done waits for the rest (``ready``). The thread has ended
    before requests reach the scheduler, as the scheduler asks (an OpenMP pool left by a live
    thread slows its decode steps down)."""

    def __init__(self, directory: Path, *, device: str = "cpu", max_batch: int = 4, speculate: Any = None) -> None:
        self.directory = directory
        self.calls = 0
        self._client: Any = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._load, args=(device, max_batch, speculate),
                                        name="smallcode-lsp-load", daemon=True)
        self._thread.start()

    def _load(self, device: str, max_batch: int, speculate: Any) -> None:
        from smallcode.client.local import open_local

        started = time.monotonic()
        try:
            self._client = open_local(self.directory, device=device, max_batch=max_batch, max_queue=64,
                                      name=str(self.directory), speculate=speculate)
        except BaseException as e:  # noqa: BLE001 - reported to the client on each request
            self._error = e
            return
        log.info("model %s loaded in %.1f s", self.directory, time.monotonic() - started)

    async def ready(self) -> None:
        """Wait for the model; ``ClientError`` if it could not be loaded."""
        if self._thread.is_alive():
            await asyncio.to_thread(self._thread.join)
        if self._error is not None:
            raise ClientError(f"the model in {self.directory} could not be loaded: {self._error}")

    @property
    def scheduler(self) -> Any:
        return self._client.scheduler if self._client is not None else None

    async def complete(self, request: FimRequest, enough: Callable[[str], bool]) -> str:
        await self.ready()

        def sent() -> None:
            self.calls += 1

        return await _complete(self._client, request, enough, sent)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()


# ---------------------------------------------------------------------------------- over HTTP
class EndpointModel:
    """A completion server at ``url`` (``smallcode serve``, llama.cpp's server, or any server with
    ``/v1/completions`` and ``suffix``); see the module docstring."""

    def __init__(self, url: str, *, api_key: str | None = None, connect_timeout_s: float = 3.0,
                 read_timeout_s: float = 30.0) -> None:
        from smallcode.client.http import HttpClient

        self.client = HttpClient(url, api_key=api_key, max_retries=0, timeout_s=read_timeout_s,
                                 connect_timeout_s=connect_timeout_s)
        self.base = self.client.base
        self.calls = 0

    async def complete(self, request: FimRequest, enough: Callable[[str], bool]) -> str:
        self.calls += 1
        return await _complete(self.client, request, enough, lambda: None)

    async def close(self) -> None:
        await self.client.aclose()
