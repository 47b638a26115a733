"""The in-process transport: the runtime's scheduler and prompt format, no HTTP.

``open_local(path)`` opens a smallcode checkpoint, an ONNX export or a Hugging Face directory
(``runtime.load.open_engine``) and puts the batching ``Scheduler`` in front of it;
``LocalClient.from_engine(engine)`` does the same for an ``Engine`` already built. The model is
loaded in a thread of its own that has ended before requests come, as the scheduler asks (an
OpenMP pool left by a live thread slows its decode steps down).

Each sample is one ``Scheduler.submit`` (sample ``i`` seeded ``seed + i``, as the server does), so a
completion is the one ``Engine.generate`` gives for the same prompt, settings and seed; the prompt
is laid out by the ``PromptFormat`` (FIM: our suffix-prefix-middle layout, other files as file-
separator blocks; chat: the tokenizer's template). Leaving a stream, or cancelling the task that
awaits ``agenerate``/``astream``, cancels the request: its row leaves the batch at the next step.
Token counts are exact; times are measured here, from the submit.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from smallcode.client.base import (
    GREEDY,
    Chat,
    ClientBusy,
    ClientError,
    Completion,
    Delta,
    Fim,
    Request,
    Sampling,
    Text,
)
from smallcode.errors import UserError

T = TypeVar("T")


class LocalClient:
    """A ``Scheduler`` and its ``PromptFormat`` as a :class:`~smallcode.client.base.Client`."""

    def __init__(self, scheduler: Any, prompt_format: Any, *, name: str = "local") -> None:
        self.scheduler = scheduler
        self.prompt_format = prompt_format
        self.name = name

    @classmethod
    def from_engine(cls, engine: Any, *, name: str = "local", **scheduler_options: Any) -> LocalClient:
        """The engine behind a new ``Scheduler`` (``scheduler_options``: its keyword arguments)."""
        from smallcode.runtime.formats import prompt_format
        from smallcode.runtime.scheduler import Scheduler

        return cls(Scheduler(engine, **scheduler_options), prompt_format(engine.tokenizer), name=name)

    @property
    def engine(self) -> Any:
        return self.scheduler.engine

    @property
    def max_context(self) -> int:
        return self.scheduler.max_context

    # ------------------------------------------------------------------ requests
    def encode(self, request: Request) -> list[int]:
        """The prompt's token ids; :class:`ClientError` for a request this model's format cannot express."""
        fmt = self.prompt_format
        try:
            if isinstance(request, Text):
                if not request.prompt:
                    raise ClientError("empty prompt: there is nothing to continue")
                return fmt.encode(request.prompt)
            if isinstance(request, Fim):
                return fmt.fim(request.prefix, request.suffix, list(request.extra))
            if isinstance(request, Chat):
                return fmt.chat(list(request.messages))
        except ClientError:
            raise
        except (ValueError, KeyError, TypeError) as e:  # FormatError, a bad message, no chat template
            raise ClientError(f"{self.name}: {e}") from e
        raise TypeError(f"a request is Text, Fim or Chat, not {type(request).__name__}")

    def _submit(self, ids: list[int], sampling: Sampling, i: int = 0) -> Any:
        from smallcode.runtime.engine import GenerationError
        from smallcode.runtime.sampling import SamplingParams
        from smallcode.runtime.scheduler import QueueFull

        try:
            params = SamplingParams(max_tokens=sampling.max_tokens, temperature=sampling.temperature,
                                    top_p=sampling.top_p, seed=None if sampling.seed is None else sampling.seed + i,
                                    stop=[s for s in sampling.stop if s], stop_loops=sampling.stop_loops)
            return self.scheduler.submit(ids, params)
        except QueueFull as e:
            raise ClientBusy(f"{self.name} is busy: {e}") from e
        except (GenerationError, ValueError) as e:  # ConfigError of a bad setting too
            raise ClientError(f"{self.name}: {e}") from e

    def _submit_all(self, request: Request, sampling: Sampling, n: int) -> list[Any]:
        if n < 1:
            raise ClientError(f"n must be >= 1, got {n}")
        ids = self.encode(request)
        handles: list[Any] = []
        try:
            for i in range(n):
                handles.append(self._submit(ids, sampling, i))
        except BaseException:
            for h in handles:
                h.cancel()
            raise
        return handles

    async def astream(self, request: Request, sampling: Sampling = GREEDY) -> AsyncIterator[Delta]:
        t0 = time.perf_counter()
        (handle,) = self._submit_all(request, sampling, 1)
        events = handle.__aiter__()
        try:
            async for event in events:
                delta = self._delta(handle, event, t0)
                if delta.text or delta.finish_reason is not None:
                    yield delta
        finally:
            handle.cancel()  # a no-op once finished; otherwise the row leaves at the next step
            await events.aclose()

    def stream(self, request: Request, sampling: Sampling = GREEDY) -> Iterator[Delta]:
        t0 = time.perf_counter()
        (handle,) = self._submit_all(request, sampling, 1)
        events = iter(handle)
        try:
            for event in events:
                delta = self._delta(handle, event, t0)
                if delta.text or delta.finish_reason is not None:
                    yield delta
        finally:
            handle.cancel()
            events.close()  # type: ignore[attr-defined]

    def _delta(self, handle: Any, event: Any, t0: float) -> Delta:
        if event.finish_reason == "error":
            raise ClientError(f"{self.name}: the model failed while generating (see the log)")
        if event.finish_reason is None:
            return Delta(event.text, time.perf_counter() - t0)
        return Delta(event.text, time.perf_counter() - t0, event.finish_reason, handle.prompt_tokens,
                     handle.completion_tokens)

    async def agenerate(self, request: Request, sampling: Sampling = GREEDY, n: int = 1) -> list[Completion]:
        t0 = time.perf_counter()
        handles = self._submit_all(request, sampling, n)
        try:
            return list(await asyncio.gather(*(self._collect(h, t0) for h in handles)))
        finally:
            for h in handles:  # cancelled or failed: nobody reads the others
                h.cancel()

    async def _collect(self, handle: Any, t0: float) -> Completion:
        text, first = "", None
        events = handle.__aiter__()
        try:
            async for event in events:
                delta = self._delta(handle, event, t0)
                if delta.text and first is None:
                    first = delta.seconds
                text += delta.text
                if delta.finish_reason is not None:
                    return Completion(text, delta.finish_reason, delta.seconds,
                                      first if first is not None else delta.seconds,
                                      delta.prompt_tokens, delta.completion_tokens)
        finally:
            await events.aclose()
        raise ClientError(f"{self.name}: the request ended without finishing")  # the iterator always finishes

    def generate(self, request: Request, sampling: Sampling = GREEDY, n: int = 1) -> list[Completion]:
        return run_sync(self.agenerate(request, sampling, n))

    def close(self) -> None:
        """Stop the scheduler (requests not finished end "cancelled"). Idempotent."""
        self.scheduler.close()

    async def aclose(self) -> None:
        await asyncio.to_thread(self.scheduler.close)


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to its end from sync code: on a fresh event loop, in a worker thread when this
    thread already runs one (``asyncio.run`` refuses a nested loop)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def open_local(path: str | Path, *, device: str = "cpu", runtime: str | None = None, max_batch: int = 16,
               max_queue: int = 64, metrics: Any = None, name: str | None = None,
               speculate: Any = None) -> LocalClient:
    """The model in ``path`` (a smallcode checkpoint, an ONNX export or a Hugging Face directory;
    ``runtime`` "torch", "onnx" or "hf" forces one) behind a new scheduler, loaded in a
    thread that has ended when this returns; ``speculate`` (``"ngram"``, ``"draft:DIR"`` or a
    ``Speculation``) turns speculative decoding on. :class:`ClientError` when it cannot be loaded."""
    out: list[LocalClient] = []
    failure: list[BaseException] = []

    def load() -> None:
        try:
            out.append(_load(Path(path), device, runtime, max_batch, max_queue, metrics, name, speculate))
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            failure.append(e)

    thread = threading.Thread(target=load, name="smallcode-client-load", daemon=True)
    thread.start()
    thread.join()
    if failure:
        e = failure[0]
        if isinstance(e, UserError | OSError) and not isinstance(e, ClientError):  # the files, not the code
            raise ClientError(f"{path}: cannot load the model ({e})") from e
        raise e  # a ClientError already, or a bug: it keeps its traceback
    return out[0]


def _load(path: Path, device: str, runtime: str | None, max_batch: int, max_queue: int, metrics: Any,
          name: str | None, speculate: Any) -> LocalClient:
    from smallcode.runtime.load import open_engine, runtime_of
    from smallcode.runtime.scheduler import Scheduler

    runtime = runtime or runtime_of(path)
    engine = open_engine(path, device=device, runtime=runtime, speculate=speculate)  # type: ignore[arg-type]
    scheduler = Scheduler(engine, max_batch=max_batch, max_queue=max_queue, metrics=metrics)
    prefix = {"torch": "smallcode", "onnx": "onnx", "hf": "hf"}[runtime]
    return LocalClient(scheduler, engine.prompt_format, name=name or f"{prefix}:{path}")
