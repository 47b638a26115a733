"""Where completions come from: the engine in this process, or a completion server over HTTP.

Both adapters answer ``await model.complete(request, enough)``: the text the model wrote for one
``FimRequest``, streamed, stopped as soon as ``enough(text_so_far)`` says the rest cannot change the
result. Cancelling the awaiting task stops the model within one decode step:

* ``LocalModel`` (``--model DIR``) runs ``serve.scheduler.Scheduler`` on ``open_engine(DIR)`` (the
  server's continuous batching, cancellation and prompt cache, without HTTP) and lays the prompt out
  with ``serve.formats`` (our suffix-prefix-middle layout, other files as ``<|file_sep|>`` blocks);
  leaving its event stream cancels the request's row.
* ``EndpointModel`` (``--endpoint URL``) streams llama.cpp's ``/infill`` (``input_prefix``,
  ``input_suffix``, ``input_extra``), or OpenAI's ``/v1/completions`` with ``suffix`` when the server
  has no ``/infill``; closing the stream is the cancellation (``smallcode serve`` frees the row when
  its client goes away).

Each adapter counts the requests that reached the model (``calls``): a request that is superseded or
cancelled before it gets here is never counted. A model that cannot answer (failed to load, endpoint
down or refusing) raises ``ModelError`` with a message for the user.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from smallcode.tokenizer.code_tokenizer import plain_file_block


class ModelError(RuntimeError):
    """The model cannot answer; the message says why, in words for the editor's user."""


class ModelBusy(ModelError):
    """The model's queue is full (it fell behind the keystrokes): this request gets no answer, and
    the next one will find room, since each request of a document cancels the one before."""


@dataclass(frozen=True)
class FimRequest:
    prefix: str
    suffix: str
    extra: Sequence[tuple[str, str]] = ()
    max_tokens: int = 64
    temperature: float = 0.0
    seed: int = 0
    stop: list[str] = field(default_factory=list)


class CompletionModel(Protocol):
    calls: int

    async def complete(self, request: FimRequest, enough: Callable[[str], bool]) -> str: ...

    async def close(self) -> None: ...


# ---------------------------------------------------------------------------------- in process
class LocalModel:
    """The engine in this process behind the server's scheduler (see the module docstring).

    The model is loaded in a thread of its own that has ended before requests come, as the
    scheduler asks (an OpenMP pool left by a live thread slows its decode steps down)."""

    def __init__(self, directory: Path, *, device: str = "cpu", max_batch: int = 4) -> None:
        self.directory = directory
        self.calls = 0
        self._scheduler: Any = None
        self._format: Any = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._load, args=(device, max_batch), name="smallcode-lsp-load",
                                        daemon=True)
        self._thread.start()

    def _load(self, device: str, max_batch: int) -> None:
        try:
            from smallcode.runtime.formats import prompt_format
            from smallcode.runtime.load import open_engine
            from smallcode.runtime.scheduler import Scheduler

            engine = open_engine(self.directory, device=device)
            self._format = prompt_format(engine.tokenizer)
            self._scheduler = Scheduler(engine, max_batch=max_batch, max_queue=64)
        except BaseException as e:  # noqa: BLE001 - reported to the client on each request
            self._error = e

    async def ready(self) -> None:
        """Wait for the model; ``ModelError`` if it could not be loaded."""
        if self._thread.is_alive():
            await asyncio.to_thread(self._thread.join)
        if self._error is not None:
            raise ModelError(f"the model in {self.directory} could not be loaded: {self._error}")

    @property
    def scheduler(self) -> Any:
        return self._scheduler

    async def complete(self, request: FimRequest, enough: Callable[[str], bool]) -> str:
        from smallcode.runtime.engine import GenerationError
        from smallcode.runtime.sampling import SamplingParams
        from smallcode.runtime.scheduler import QueueFull

        await self.ready()
        ids = self._format.fim(request.prefix, request.suffix, list(request.extra))
        params = SamplingParams(max_tokens=request.max_tokens, temperature=request.temperature, seed=request.seed,
                                stop=list(request.stop))
        try:
            handle = self._scheduler.submit(ids, params)
        except QueueFull as e:
            raise ModelBusy(str(e)) from e
        except GenerationError as e:
            raise ModelError(f"the model refused the request: {e}") from e
        self.calls += 1
        text = ""
        events = handle.__aiter__()
        try:
            async for event in events:
                if event.finish_reason == "error":
                    raise ModelError("the model failed while generating (see the server's log)")
                text += event.text
                if event.finish_reason is None and enough(text):
                    break
        finally:
            handle.cancel()  # a no-op once finished; otherwise the row leaves at the next step
            await events.aclose()  # type: ignore[attr-defined]
        return text

    async def close(self) -> None:
        if self._scheduler is not None:
            await asyncio.to_thread(self._scheduler.close)


# ---------------------------------------------------------------------------------- over HTTP
class EndpointModel:
    """A completion server at ``url`` (``smallcode serve``, llama.cpp's server, or any server with
    ``/v1/completions`` and ``suffix``); see the module docstring."""

    def __init__(self, url: str, *, api_key: str | None = None, connect_timeout_s: float = 3.0,
                 read_timeout_s: float = 30.0) -> None:
        import httpx

        base = url.rstrip("/")
        self.base = base[: -len("/v1")] if base.endswith("/v1") else base
        self.calls = 0
        self._route: str | None = None
        """"infill" or "completions" once known; None until the first answer says which exists."""
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(headers=headers, timeout=httpx.Timeout(read_timeout_s,
                                                                                connect=connect_timeout_s))

    async def complete(self, request: FimRequest, enough: Callable[[str], bool]) -> str:
        import httpx

        self.calls += 1
        try:
            if self._route != "completions":
                text = await self._stream("/infill", self._infill_body(request), enough, _infill_text)
                if text is not None:
                    self._route = "infill"
                    return text
                self._route = "completions"
            text = await self._stream("/v1/completions", self._completions_body(request), enough,
                                      _completions_text)
            if text is None:
                raise ModelError(f"{self.base} has neither /infill nor /v1/completions")
            return text
        except ModelError:
            raise
        except httpx.TimeoutException as e:
            raise ModelError(f"{self.base} did not answer in time ({type(e).__name__})") from e
        except httpx.HTTPError as e:
            raise ModelError(f"cannot reach {self.base}: {e}") from e

    def _infill_body(self, request: FimRequest) -> dict[str, Any]:
        return {"input_prefix": request.prefix, "input_suffix": request.suffix,
                "input_extra": [{"filename": path, "text": text} for path, text in request.extra],
                "n_predict": request.max_tokens, "temperature": request.temperature, "seed": request.seed,
                "stop": list(request.stop), "stream": True, "cache_prompt": True}

    def _completions_body(self, request: FimRequest) -> dict[str, Any]:
        # No file-separator field in this API: other files go first as commented plain text, as the
        # server's own format does for models without a separator token.
        head = "".join(plain_file_block(path, text) for path, text in request.extra)
        body: dict[str, Any] = {"prompt": head + request.prefix, "suffix": request.suffix,
                                "max_tokens": request.max_tokens, "temperature": request.temperature,
                                "seed": request.seed, "stream": True}
        if request.stop:
            body["stop"] = list(request.stop)
        return body

    async def _stream(self, route: str, body: dict[str, Any], enough: Callable[[str], bool],
                      text_of: Callable[[dict[str, Any]], str | None]) -> str | None:
        """The streamed text of one request (None when the route does not exist). Leaving early,
        by ``enough`` or by cancellation, closes the connection: the server cancels the request."""
        text = ""
        async with self._client.stream("POST", self.base + route, json=body) as response:
            if response.status_code in (404, 405):
                return None
            if response.status_code == 503:
                raise ModelBusy(f"{self.base}{route} is busy (503)")
            if response.status_code >= 400:
                await response.aread()
                raise ModelError(f"{self.base}{route} answered {response.status_code}: {_error_message(response)}")
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                try:
                    event = json.loads(data)
                except json.JSONDecodeError as e:
                    raise ModelError(f"{self.base}{route} sent an event that is not JSON: {data[:80]!r}") from e
                if "error" in event:
                    raise ModelError(f"{self.base}{route} failed: {_error_message_of(event)}")
                piece = text_of(event)
                if piece:
                    text += piece
                    if enough(text):
                        break
        return text

    async def close(self) -> None:
        await self._client.aclose()


def _infill_text(event: dict[str, Any]) -> str | None:
    content = event.get("content")
    return content if isinstance(content, str) else None


def _completions_text(event: dict[str, Any]) -> str | None:
    choices = event.get("choices") or []
    text = choices[0].get("text") if choices and isinstance(choices[0], dict) else None
    return text if isinstance(text, str) else None


def _error_message_of(body: Any) -> str:
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return error["message"]
    return str(error or body)[:200]


def _error_message(response: Any) -> str:
    try:
        return _error_message_of(response.json())
    except ValueError:
        return response.text[:200] or response.reason_phrase
