"""Consuming a request's handles: their events gathered into :class:`Choice` s, merged into one stream,
and cancelled when the client goes away.

The scheduler's ``RequestHandle`` is iterated once; leaving an iteration early cancels it, and so do
the helpers here on every way out (a failed sample, a closed stream, a dropped connection), so that
no row keeps decoding for nobody.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from fastapi import Request

from smallcode.runtime.scheduler import Event, RequestHandle, TokenLogprob
from smallcode.serve.service import generation_failed

T = TypeVar("T")


@dataclass
class Choice:
    """What one handle produced, gathered from its events."""

    text: str = ""
    token_ids: list[int] | None = None
    logprobs: list[TokenLogprob] | None = None
    finish: str | None = None

    def take(self, event: Event, handle: RequestHandle, cut: Callable[[Choice], bool] | None = None) -> bool:
        """Take in one event of ``handle``; True once the choice is finished: its request ended, or
        ``cut`` (seeing the text so far) ended it early, the request then cancelled and the finish "stop"."""
        self.text += event.text
        self.token_ids = (self.token_ids or []) + list(event.token_ids)
        if event.logprobs is not None:
            self.logprobs = (self.logprobs or []) + list(event.logprobs)
        if cut is not None and cut(self):
            if event.finish_reason is None:
                handle.cancel()
            self.finish = "stop"
        elif event.finish_reason is not None:
            self.finish = event.finish_reason
        return self.finish is not None


class ClientGone(Exception):
    """The client disconnected; its handles are cancelled."""


def raise_if_failed(choices: list[Choice]) -> None:
    """A 500 if the model loop failed on any of ``choices``."""
    if any(c.finish == "error" for c in choices):
        raise generation_failed()


async def collect(handle: RequestHandle, choice: Choice, on_text: Callable[[Choice], bool] | None = None) -> None:
    """Run ``handle`` to its end into ``choice``; ``on_text`` returning True stops it early."""
    async for event in handle:
        if choice.take(event, handle, on_text):
            return


async def collect_all(handles: list[RequestHandle]) -> list[Choice]:
    """Every handle run to its end; a 500 if the model loop failed on any of them."""
    choices = [Choice() for _ in handles]

    async def one(handle: RequestHandle, choice: Choice) -> None:
        await collect(handle, choice)
        if choice.finish == "error":  # the answer is a 500 now: the request's other samples are dropped
            for h in handles:
                h.cancel()

    await asyncio.gather(*(one(h, c) for h, c in zip(handles, choices, strict=True)))
    raise_if_failed(choices)
    return choices


async def _until_disconnect(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def guarded(request: Request, handles: list[RequestHandle], work: Awaitable[T]) -> T:
    """Await ``work``; if the client disconnects first, cancel ``handles`` and raise :class:`ClientGone`."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_until_disconnect(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            return task.result()
        raise ClientGone
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
            for h in handles:
                h.cancel()


async def merged(handles: list[RequestHandle]) -> AsyncIterator[tuple[int, Event]]:
    """Events of all handles as they come, tagged with the handle's index; cancels them all on exit."""
    queue: asyncio.Queue[tuple[int, Event | None]] = asyncio.Queue()

    async def pump(i: int, handle: RequestHandle) -> None:
        try:
            async for event in handle:
                await queue.put((i, event))
        finally:
            await queue.put((i, None))  # this handle is done

    tasks = [asyncio.ensure_future(pump(i, h)) for i, h in enumerate(handles)]
    try:
        left = len(handles)
        while left:
            i, event = await queue.get()
            if event is None:
                left -= 1
                continue
            yield i, event
        for t in tasks:  # surface a pump's exception
            t.result()
    finally:
        for h in handles:
            h.cancel()
        for t in tasks:
            t.cancel()
