"""The HTTP server: OpenAI's completions and chat API, llama.cpp's ``/infill``, health, models, metrics.

``create_app(scheduler, prompt_format, model_name=..., api_key=..., limits=...)`` builds a FastAPI
app around a scheduler (``serve.scheduler.Scheduler`` or the Hugging Face one) and a prompt format
(``serve.formats``); both are injected, so tests and the CLI build them as they like, and either may
be attached later (``app.state.service.attach``) while ``/health`` answers ``loading``.

Routes are thin: they parse the body (``serve.protocol``), and a :class:`Service` turns it into
scheduler submissions (one per prompt and sample; sample i of a request seeded s draws from s + i)
and their events into OpenAI's or llama.cpp's JSON, or into server-sent events (``data: {...}``,
then ``data: [DONE]`` on the OpenAI routes). Everything a client can get wrong is refused before the
scheduler sees it: body size (413), types and ranges (400), the caps of :class:`Limits`, prompts
longer than the context (400 with the numbers), a full queue (503 with ``Retry-After``). Every 4xx
and 5xx body is OpenAI's ``{"error": {"message", "type", "param", "code"}}``.

A client that goes away (a closed stream, or a dropped connection while a non-streaming answer is
being made) cancels its handles, so the scheduler frees their rows. With an API key, every route but
``/health`` needs ``Authorization: Bearer KEY`` (compared in constant time).

It does not batch, cache or sample (the scheduler does), nor lay out prompts (the prompt format does).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import math
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from smallcode.config import ConfigError
from smallcode.runtime.engine import GenerationError
from smallcode.runtime.sampling import SamplingParams
from smallcode.runtime.scheduler import QueueFull
from smallcode.serve.protocol import (
    MAX_SEED,
    ChatRequest,
    CompletionRequest,
    ErrorResponse,
    ErrorType,
    FimRequest,
    InfillRequest,
    unsupported,
)


@dataclass
class Limits:
    """What one request may ask for; anything beyond is refused with a 4xx before any model work."""

    max_body_bytes: int = 8 * 2**20
    """Largest request body (413 beyond)."""
    max_tokens: int = 2048
    """Most new tokens per completion; also what an absent ``max_tokens`` / ``n_predict: -1`` means."""
    max_n: int = 8
    """Most completions per request (prompts times ``n``)."""
    max_stop: int = 8
    """Most stop strings per request."""
    max_stop_chars: int = 256
    """Longest stop string, in characters."""
    time_limit_s: float = 300.0
    """Longest generation of one request (``t_max_predict_ms`` can shorten it)."""


class APIError(Exception):
    """A request refused with an HTTP status; rendered in OpenAI's error shape."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 type: ErrorType = "invalid_request_error", headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type = status, message, param, code, type
        self.headers = headers or {}


def error_response(status: int, message: str, *, param: str | None = None, code: str | None = None,
                   type: ErrorType = "invalid_request_error", headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"error": {"message": message, "type": type, "param": param, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


# What the schema says a generating route may answer besides 200 (all in OpenAI's error shape).
_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "A malformed or unsupported request (the param names the field)."},
    401: {"model": ErrorResponse, "description": "An API key is set and the request lacks it."},
    413: {"model": ErrorResponse, "description": "The body is larger than the server's limit."},
    500: {"model": ErrorResponse, "description": "The model failed on this request; the server goes on."},
    503: {"model": ErrorResponse, "description": "Busy (queue full) or still loading; see Retry-After."},
    # Named so that FastAPI leaves out its default 422, which this server never sends (a 400 instead).
    "4XX": {"model": ErrorResponse, "description": "Any other client error (404, 405)."},
}

# OpenAI knows "stop" and "length"; llama.cpp's /infill says which kind of stop it was.
_OPENAI_FINISH = {"stop": "stop", "eos": "stop", "cancelled": "stop", "length": "length", "timeout": "length"}
_LLAMA_STOP_TYPE = {"stop": "word", "eos": "eos", "cancelled": "limit", "length": "limit", "timeout": "limit"}


@dataclass
class _Job:
    """One prompt to submit ``n`` times."""

    ids: list[int]
    params: SamplingParams
    n: int
    logprobs: int = 0


@dataclass
class _Choice:
    text: str = ""
    token_ids: list[int] | None = None
    logprobs: list[Any] | None = None
    finish: str | None = None


class _ClientGone(Exception):
    """The client disconnected; its handles are cancelled."""


# The scheduler ends a handle with finish_reason "error" when the model loop failed on its row (the
# loop itself survives); the client gets a 500, or an error event at the end of a stream.
_LOOP_ERROR = "the model failed while generating this completion; the server keeps serving other requests"


def _loop_error() -> APIError:
    return APIError(500, _LOOP_ERROR, code="generation_failed", type="server_error")


def _error_event() -> str:
    return _sse({"error": {"message": _LOOP_ERROR, "type": "server_error", "param": None,
                           "code": "generation_failed"}})


def _raise_if_failed(choices: list[_Choice]) -> None:
    if any(c.finish == "error" for c in choices):
        raise _loop_error()


class Service:
    """Turns parsed requests into scheduler submissions and their events into responses."""

    def __init__(self, scheduler: Any, prompt_format: Any, model_name: str, limits: Limits) -> None:
        self.scheduler, self.prompt_format = scheduler, prompt_format
        self.model_name, self.limits = model_name, limits
        self.created = int(time.time())

    def attach(self, scheduler: Any, prompt_format: Any) -> None:
        """Make the service ready (the CLI loads the model after the server is listening)."""
        self.prompt_format, self.scheduler = prompt_format, scheduler

    @property
    def ready(self) -> bool:
        return self.scheduler is not None and self.prompt_format is not None

    @property
    def max_context(self) -> int | None:
        engine = getattr(self.scheduler, "engine", None)
        return getattr(self.scheduler, "max_context", None) or getattr(engine, "max_context", None)

    # ------------------------------------------------------------------ building submissions
    def _require_ready(self) -> None:
        if not self.ready:
            raise APIError(503, "the model is still loading", code="model_loading", type="unavailable_error",
                           headers={"Retry-After": "1"})

    def _encode(self, text: str, param: str) -> list[int]:
        return self.prompt_format.encode(_text(text, param))

    def _stops(self, stop: str | list[str] | None) -> list[str]:
        stops = [stop] if isinstance(stop, str) else list(stop or [])
        if len(stops) > self.limits.max_stop:
            raise APIError(400, f"at most {self.limits.max_stop} stop strings, got {len(stops)}", param="stop")
        for s in stops:
            _text(s, "stop")
            if not s or len(s) > self.limits.max_stop_chars:
                raise APIError(400, f"stop strings must have 1 to {self.limits.max_stop_chars} characters, "
                                    f"got {len(s)}", param="stop")
        return stops

    def _params(self, ids: list[int], max_tokens: int | None, param: str, *, temperature: float, top_p: float,
                top_k: int, seed: int | None, stop: list[str]) -> SamplingParams:
        if not ids:
            raise APIError(400, "the prompt is empty: there is nothing to continue", param="prompt")
        context = self.max_context
        if context is not None and len(ids) >= context:
            raise APIError(400, f"the prompt has {len(ids)} tokens but this model's context is {context} "
                                "tokens (the prompt and the completion must fit in it)",
                           param="prompt", code="context_length_exceeded")
        cap = self.limits.max_tokens
        if max_tokens is not None and max_tokens > cap:
            raise APIError(400, f"{param} is {max_tokens}, more than this server's limit of {cap}", param=param)
        if max_tokens is None:  # as much as fits, up to the cap
            max_tokens = cap if context is None else max(1, min(cap, context - len(ids)))
        if seed is None:
            seed = random.randrange(2**31)
        try:
            return SamplingParams(max_tokens=max_tokens, temperature=temperature, top_p=top_p, top_k=top_k,
                                  seed=seed, stop=stop)
        except ConfigError as e:
            raise APIError(400, str(e)) from e

    def _check_n(self, rows: int) -> None:
        if rows > self.limits.max_n:
            raise APIError(400, f"this request asks for {rows} completions (prompts times n); at most "
                                f"{self.limits.max_n} are served per request", param="n")

    def completion_jobs(self, req: CompletionRequest) -> list[_Job]:
        self._require_ready()
        if (field := unsupported(req)) is not None:
            raise APIError(400, f"{field} is not supported by this server", param=field, code="unsupported")
        prompts = [req.prompt] if isinstance(req.prompt, str) else req.prompt
        if not prompts:
            raise APIError(400, "prompt is an empty list", param="prompt")
        self._check_n(len(prompts) * req.n)
        stops = self._stops(req.stop)
        jobs = []
        for prompt in prompts:
            if req.suffix is not None:
                ids = self._fim(_text(prompt, "prompt"), _text(req.suffix, "suffix"))
            else:
                ids = self._encode(prompt, "prompt")
            params = self._params(ids, req.max_tokens, "max_tokens", temperature=req.temperature, top_p=req.top_p,
                                  top_k=req.top_k, seed=req.seed, stop=stops)
            jobs.append(_Job(ids, params, req.n, 0 if req.logprobs is None else max(1, req.logprobs)))
        return jobs

    def _fim(self, prefix: str, suffix: str, extra: list[tuple[str, str]] | None = None, *,
             param: str = "suffix") -> list[int]:
        try:
            return self.prompt_format.fim(prefix, suffix, extra or [])
        except ValueError as e:  # e.g. a Hugging Face model whose tokenizer has no FIM tokens
            raise APIError(400, str(e), param=param, code="fim_unsupported") from e

    def fim_job(self, req: FimRequest) -> _Job:
        self._require_ready()
        if (field := unsupported(req)) is not None:
            raise APIError(400, f"{field} is not supported by this server", param=field, code="unsupported")
        self._check_n(req.n)
        if req.seed is not None and req.random_seed is not None:
            raise APIError(400, "give seed or random_seed, not both", param="random_seed")
        if req.max_tokens is not None and req.max_completion_tokens is not None:
            raise APIError(400, "give max_tokens or max_completion_tokens, not both", param="max_tokens")
        max_tokens = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
        ids = self._fim(_text(req.prompt, "prompt"), _text(req.suffix or "", "suffix"))
        seed = req.random_seed if req.random_seed is not None else req.seed
        params = self._params(ids, max_tokens, "max_tokens", temperature=req.temperature, top_p=req.top_p,
                              top_k=req.top_k, seed=seed, stop=self._stops(req.stop))
        return _Job(ids, params, req.n)

    def chat_job(self, req: ChatRequest) -> _Job:
        self._require_ready()
        if (field := unsupported(req)) is not None:
            raise APIError(400, f"{field} is not supported by this server", param=field, code="unsupported")
        self._check_n(req.n)
        messages = []
        for m in req.messages:
            content = m.content if isinstance(m.content, str) else "".join(p.text or "" for p in m.content or [])
            role = "system" if m.role == "developer" else m.role
            messages.append({"role": role, "content": _text(content, "messages")})
        try:
            ids = self.prompt_format.chat(messages)
        except (ValueError, KeyError) as e:
            raise APIError(400, f"messages: {e}", param="messages") from e
        if req.max_tokens is not None and req.max_completion_tokens is not None:
            raise APIError(400, "give max_tokens or max_completion_tokens, not both", param="max_tokens")
        max_tokens = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
        params = self._params(ids, max_tokens, "max_tokens", temperature=req.temperature, top_p=req.top_p,
                              top_k=req.top_k, seed=req.seed, stop=self._stops(req.stop))
        logprobs = max(1, req.top_logprobs or 0) if req.logprobs else 0
        return _Job(ids, params, req.n, logprobs)

    def infill_job(self, req: InfillRequest) -> _Job:
        self._require_ready()
        extra = [(_text(c.filename, "input_extra"), _text(c.text, "input_extra")) for c in req.input_extra]
        prefix = _text(req.input_prefix, "input_prefix") + _text(req.prompt, "prompt")
        ids = self._fim(prefix, _text(req.input_suffix, "input_suffix"), extra, param="input_suffix")
        max_tokens = None if req.n_predict == -1 else req.n_predict
        if max_tokens == 0:
            raise APIError(400, "n_predict must be -1 (the server's cap) or >= 1", param="n_predict")
        params = self._params(ids, max_tokens, "n_predict", temperature=req.temperature, top_p=req.top_p,
                              top_k=req.top_k, seed=None if req.seed == -1 else req.seed, stop=self._stops(req.stop))
        return _Job(ids, params, 1)

    def time_limit(self, t_max_predict_ms: int = 0) -> float:
        limit = self.limits.time_limit_s
        return min(limit, t_max_predict_ms / 1000) if t_max_predict_ms > 0 else limit

    def submit(self, jobs: list[_Job], time_limit_s: float) -> list[Any]:
        """All handles of a request, prompt-major; nothing stays submitted if one submission is refused."""
        handles: list[Any] = []
        try:
            for job in jobs:
                for i in range(job.n):
                    seed = (job.params.seed + i) % MAX_SEED
                    params = SamplingParams(**{**job.params.to_dict(), "seed": seed})
                    handles.append(self.scheduler.submit(job.ids, params, logprobs=job.logprobs,
                                                         time_limit_s=time_limit_s))
        except BaseException as e:
            for h in handles:
                h.cancel()
            if isinstance(e, QueueFull):
                retry = str(max(1, math.ceil(e.retry_after_s)))
                raise APIError(503, "the server is busy: its queue is full", code="queue_full",
                               type="unavailable_error", headers={"Retry-After": retry}) from e
            if isinstance(e, GenerationError):
                raise APIError(400, str(e), param="prompt") from e
            raise
        return handles


def _text(value: str, param: str) -> str:
    """``value``, refused when it holds lone surrogates (JSON ``\\ud800``), which are not text."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise APIError(400, f"{param} is not valid Unicode text ({e.reason} at {e.start})", param=param) from e
    return value


# ---------------------------------------------------------------------- consuming handles
async def _collect(handle: Any, choice: _Choice, on_text: Callable[[_Choice], bool] | None = None) -> None:
    """Run ``handle`` to its end into ``choice``; ``on_text`` returning True stops it early."""
    async for event in handle:
        choice.text += event.text
        choice.token_ids = (choice.token_ids or []) + list(event.token_ids)
        if event.logprobs is not None:
            choice.logprobs = (choice.logprobs or []) + list(event.logprobs)
        if on_text is not None and on_text(choice):
            if event.finish_reason is None:
                handle.cancel()
            choice.finish = "stop"
            return
        if event.finish_reason is not None:
            choice.finish = event.finish_reason
            return


async def _collect_all(handles: list[Any]) -> list[_Choice]:
    """Every handle run to its end; a 500 if the model loop failed on any of them."""
    choices = [_Choice() for _ in handles]

    async def one(handle: Any, choice: _Choice) -> None:
        await _collect(handle, choice)
        if choice.finish == "error":  # the answer is a 500 now: the request's other samples are dropped
            for h in handles:
                h.cancel()

    await asyncio.gather(*(one(h, c) for h, c in zip(handles, choices, strict=True)))
    _raise_if_failed(choices)
    return choices


async def _until_disconnect(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _guarded(request: Request, handles: list[Any], work: Awaitable[Any]) -> Any:
    """Await ``work``; if the client disconnects first, cancel ``handles`` and raise :class:`_ClientGone`."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_until_disconnect(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            return task.result()
        raise _ClientGone
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
            for h in handles:
                h.cancel()


async def _merged(handles: list[Any]) -> AsyncIterator[tuple[int, Any]]:
    """Events of all handles as they come, tagged with the handle's index; cancels them all on exit."""
    queue: asyncio.Queue[tuple[int, Any]] = asyncio.Queue()
    done = object()

    async def pump(i: int, handle: Any) -> None:
        try:
            async for event in handle:
                await queue.put((i, event))
        finally:
            await queue.put((i, done))

    tasks = [asyncio.ensure_future(pump(i, h)) for i, h in enumerate(handles)]
    try:
        left = len(handles)
        while left:
            i, event = await queue.get()
            if event is done:
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


def _include_usage(body: Any) -> bool:
    return bool(body.stream_options and body.stream_options.include_usage)


def _sse(obj: Any) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


async def _openai_stream(handles: list[Any], head: dict[str, Any], n: int, include_usage: bool,
                         opening: list[dict[str, Any]], choice: Callable[[int, Any], dict[str, Any] | None]
                         ) -> AsyncIterator[str]:
    """The server-sent events of an OpenAI route: the ``opening`` choices, then ``choice(i, event)`` for
    each event of handle ``i`` (None: nothing to send), then the usage chunk when asked for and
    ``data: [DONE]``. A failed sample ends the stream with an error event and drops the others."""
    usage_field = {"usage": None} if include_usage else {}
    for c in opening:
        yield _sse({**head, "choices": [c], **usage_field})
    async for i, ev in _merged(handles):
        if ev.finish_reason == "error":
            for h in handles:
                h.cancel()
            yield _error_event()
            break
        c = choice(i, ev)
        if c is not None:
            yield _sse({**head, "choices": [c], **usage_field})
    else:
        if include_usage:
            yield _sse({**head, "choices": [], "usage": _usage(handles, n)})
    yield "data: [DONE]\n\n"


def _usage(handles: list[Any], n: int) -> dict[str, Any]:
    firsts = handles[::n]  # one per distinct prompt: its n samples share the prompt
    return {
        "prompt_tokens": sum(h.prompt_tokens for h in firsts),
        "completion_tokens": sum(h.completion_tokens for h in handles),
        "total_tokens": sum(h.prompt_tokens for h in firsts) + sum(h.completion_tokens for h in handles),
        "prompt_tokens_details": {"cached_tokens": sum(h.cached_tokens for h in firsts)},
    }


def _completion_logprobs(items: list[Any], k: int, offset: int) -> dict[str, Any]:
    offsets, pos = [], offset
    for item in items:
        offsets.append(pos)
        pos += len(item.token)
    return {
        "tokens": [item.token for item in items],
        "token_logprobs": [item.logprob for item in items],
        "top_logprobs": [_by_text(item.top[:k]) for item in items],
        "text_offset": offsets,
    }


def _by_text(top: list[tuple[str, float]]) -> dict[str, float]:
    """OpenAI's ``{text: logprob}``; tokens that decode alike (pieces of one UTF-8 character) keep the
    best one's logprob, so the chosen token's entry is never overwritten by a less likely one."""
    out: dict[str, float] = {}
    for text, logprob in top:
        out.setdefault(text, logprob)
    return out


def _chat_logprobs(items: list[Any], k: int) -> dict[str, Any]:
    def entry(token: str, logprob: float) -> dict[str, Any]:
        return {"token": token, "logprob": logprob, "bytes": list(token.encode("utf-8", "replace"))}

    return {"content": [{**entry(item.token, item.logprob), "top_logprobs": [entry(t, lp) for t, lp in item.top[:k]]}
                        for item in items]}


def _indent_cut(text: str, n_indent: int) -> int | None:
    """Where llama.cpp's ``n_indent`` ends ``text``: the newline before the first line (after the
    first) whose indentation, decided by a non-blank character, is below ``n_indent``."""
    start = text.find("\n")
    while start != -1:
        line_end = text.find("\n", start + 1)
        line = text[start + 1:] if line_end == -1 else text[start + 1:line_end]
        stripped = line.lstrip(" \t")
        if stripped and len(line) - len(stripped) < n_indent:
            return start
        start = line_end
    return None


def _indent_safe(text: str, n_indent: int) -> int:
    """How much of ``text`` can be shown before ``n_indent`` has judged its last line."""
    last = text.rfind("\n")
    if n_indent and last != -1 and not text[last + 1:].lstrip(" \t"):
        return last
    return len(text)


# ---------------------------------------------------------------------- the app
def create_app(scheduler: Any, prompt_format: Any, *, model_name: str = "smallcode", api_key: str | None = None,
               limits: Limits | None = None, registry: Any = None) -> FastAPI:
    """The server around ``scheduler`` and ``prompt_format`` (None while loading: see ``Service.attach``).

    ``registry``: the prometheus ``CollectorRegistry`` that ``/metrics`` shows (default: the
    scheduler's metrics' registry).
    """
    limits = limits or Limits()
    service = Service(scheduler, prompt_format, model_name, limits)
    app = FastAPI(title="smallcode serve", version="1", description="OpenAI-compatible completions, chat and "
                  "llama.cpp's /infill on a local smallcode model.")
    app.state.service = service
    app.add_middleware(_Gate, api_key=api_key, max_body_bytes=limits.max_body_bytes)

    @app.exception_handler(APIError)
    async def _api_error(request: Request, e: APIError) -> JSONResponse:
        return error_response(e.status, e.message, param=e.param, code=e.code, type=e.type, headers=e.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, e: RequestValidationError) -> JSONResponse:
        errors = e.errors()
        first = errors[0] if errors else {}
        if first.get("type") == "json_invalid":
            return error_response(400, "the body is not valid JSON", code="json_invalid")
        loc = [str(x) for x in first.get("loc", ()) if x != "body"]
        message = first.get("msg", "invalid request")
        return error_response(400, f"{'.'.join(loc) + ': ' if loc else ''}{message}",
                              param=loc[0] if loc else None, code=first.get("type"))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, e: StarletteHTTPException) -> JSONResponse:
        return error_response(e.status_code, str(e.detail), headers=getattr(e, "headers", None))

    @app.exception_handler(Exception)
    async def _crash(request: Request, e: Exception) -> JSONResponse:
        return error_response(500, f"internal error: {type(e).__name__}", type="server_error")

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok" if service.ready else "loading"}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": service.model_name, "object": "model", "created": service.created,
                                            "owned_by": "smallcode"}]}

    @app.get("/metrics")
    async def metrics() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        reg = registry or getattr(getattr(service.scheduler, "metrics", None), "registry", None)
        return Response(generate_latest(reg) if reg is not None else b"", media_type=CONTENT_TYPE_LATEST)

    @app.post("/v1/completions", responses=_ERRORS)
    async def completions(body: CompletionRequest, request: Request) -> Any:
        jobs = service.completion_jobs(body)
        handles = service.submit(jobs, service.time_limit())
        rid, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
        k = body.logprobs or 0
        echo = [service.prompt_format.decode(j.ids) if body.echo else "" for j in jobs for _ in range(body.n)]
        head = {"id": rid, "object": "text_completion", "created": created, "model": service.model_name}
        if body.stream:
            offsets = [len(t) for t in echo]

            def choice(i: int, ev: Any) -> dict[str, Any] | None:
                lp = None
                if ev.logprobs is not None and body.logprobs is not None:
                    lp = _completion_logprobs(ev.logprobs, k, offsets[i])
                offsets[i] += len(ev.text)
                finish = _OPENAI_FINISH.get(ev.finish_reason) if ev.finish_reason else None
                if not (ev.text or finish or lp):
                    return None
                return {"index": i, "text": ev.text, "logprobs": lp, "finish_reason": finish}

            opening = [{"index": i, "text": text, "logprobs": None, "finish_reason": None}
                       for i, text in enumerate(echo) if text]
            return _stream(_openai_stream(handles, head, body.n, _include_usage(body), opening, choice))
        choices = await _guarded(request, handles, _collect_all(handles))
        out = []
        for i, c in enumerate(choices):
            lp = None
            if body.logprobs is not None:
                lp = _completion_logprobs(c.logprobs or [], k, len(echo[i]))
            out.append({"index": i, "text": echo[i] + c.text, "logprobs": lp,
                        "finish_reason": _OPENAI_FINISH.get(c.finish or "length")})
        return {**head, "choices": out, "usage": _usage(handles, body.n)}

    @app.post("/v1/chat/completions", responses=_ERRORS)
    async def chat(body: ChatRequest, request: Request) -> Any:
        return await chat_shaped(service.chat_job(body), body, request, logprobs=body.logprobs,
                                 k=body.top_logprobs or 0)

    @app.post("/v1/fim/completions", responses=_ERRORS)
    async def fim(body: FimRequest, request: Request) -> Any:
        return await chat_shaped(service.fim_job(body), body, request, logprobs=False, k=0)

    async def chat_shaped(job: _Job, body: ChatRequest | FimRequest, request: Request, *, logprobs: bool,
                          k: int) -> Any:
        """A chat completion's answer (or its stream) to ``job``: chat, and Mistral's FIM route."""
        handles = service.submit([job], service.time_limit())
        rid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        head = {"id": rid, "created": created, "model": service.model_name}
        if body.stream:

            def choice(i: int, ev: Any) -> dict[str, Any] | None:
                lp = _chat_logprobs(ev.logprobs, k) if ev.logprobs is not None and logprobs else None
                finish = _OPENAI_FINISH.get(ev.finish_reason) if ev.finish_reason else None
                if not (ev.text or finish or lp):
                    return None
                delta = {"content": ev.text} if ev.text else {}
                return {"index": i, "delta": delta, "logprobs": lp, "finish_reason": finish}

            opening = [{"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                        "finish_reason": None} for i in range(len(handles))]
            chunk = {**head, "object": "chat.completion.chunk"}
            return _stream(_openai_stream(handles, chunk, body.n, _include_usage(body), opening, choice))
        choices = await _guarded(request, handles, _collect_all(handles))
        out = [{"index": i, "message": {"role": "assistant", "content": c.text},
                "logprobs": _chat_logprobs(c.logprobs or [], k) if logprobs else None,
                "finish_reason": _OPENAI_FINISH.get(c.finish or "length")} for i, c in enumerate(choices)]
        return {**head, "object": "chat.completion", "choices": out, "usage": _usage(handles, body.n)}

    @app.post("/infill", responses=_ERRORS)
    async def infill(body: InfillRequest, request: Request) -> Any:
        job = service.infill_job(body)
        started = time.perf_counter()
        (handle,) = service.submit([job], service.time_limit(body.t_max_predict_ms))

        def final(choice: _Choice) -> dict[str, Any]:
            elapsed_ms = (time.perf_counter() - started) * 1000
            return {"content": choice.text, "tokens": choice.token_ids or [], "stop": True,
                    "model": service.model_name, "tokens_predicted": handle.completion_tokens,
                    "tokens_evaluated": handle.prompt_tokens, "tokens_cached": handle.cached_tokens,
                    "stop_type": _LLAMA_STOP_TYPE.get(choice.finish or "length", "limit"),
                    "truncated": False, "timings": {"prompt_n": handle.prompt_tokens - handle.cached_tokens,
                                                    "cache_n": handle.cached_tokens,
                                                    "predicted_n": handle.completion_tokens,
                                                    "total_ms": elapsed_ms}}

        cut_at = (lambda c: (i := _indent_cut(c.text, body.n_indent)) is not None and _truncate(c, i)) \
            if body.n_indent else None
        if body.stream:

            async def events() -> AsyncIterator[str]:
                choice, shown = _Choice(), 0
                async for _, ev in _merged([handle]):
                    if ev.finish_reason == "error":  # llama.cpp's streams have no [DONE]: the error ends it
                        yield _error_event()
                        return
                    choice.text += ev.text
                    choice.token_ids = (choice.token_ids or []) + list(ev.token_ids)
                    if cut_at is not None and cut_at(choice):
                        if ev.finish_reason is None:
                            handle.cancel()
                        choice.finish = "stop"
                    elif ev.finish_reason is not None:
                        choice.finish = ev.finish_reason
                    if choice.finish is not None:
                        break
                    safe = _indent_safe(choice.text, body.n_indent)
                    if safe > shown:
                        yield _sse({"index": 0, "content": choice.text[shown:safe], "tokens": list(ev.token_ids),
                                    "stop": False})
                        shown = safe
                yield _sse({**final(choice), "content": choice.text[shown:]})

            return _stream(events())
        choice = _Choice()
        await _guarded(request, [handle], _collect(handle, choice, cut_at))
        _raise_if_failed([choice])
        return final(choice)

    return app


def _truncate(choice: _Choice, at: int) -> bool:
    choice.text = choice.text[:at]
    return True


def _stream(events: AsyncIterator[str]) -> StreamingResponse:
    return StreamingResponse(events, media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


class _Gate:
    """ASGI middleware in front of every route: the API key (all but ``/health``), then the body size.

    The body is read here, up to the limit, and replayed to the app; a larger one is a 413 without
    being read further. Every body is read as JSON whatever its declared type, as llama.cpp's server
    reads it: ``curl -d '{...}'`` declares a form, and refusing it would help nobody.
    """

    def __init__(self, app: Any, *, api_key: str | None, max_body_bytes: int) -> None:
        self.app, self.max_body_bytes = app, max_body_bytes
        self.key = f"Bearer {api_key}".encode() if api_key else None

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        if self.key is not None and scope.get("path") != "/health":
            given = headers.get(b"authorization", b"")
            if not hmac.compare_digest(given, self.key):
                response = error_response(401, "a valid API key is needed: send Authorization: Bearer KEY",
                                          code="invalid_api_key", type="authentication_error",
                                          headers={"WWW-Authenticate": "Bearer"})
                return await response(scope, receive, send)
        too_large = error_response(413, f"the request body is larger than {self.max_body_bytes} bytes",
                                   code="body_too_large")
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_body_bytes):
            return await too_large(scope, receive, send)
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # disconnected before the body was complete
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > self.max_body_bytes:
                return await too_large(scope, receive, send)
        body, replayed = b"".join(chunks), False
        if body and scope.get("method") == "POST" and b"json" not in headers.get(b"content-type", b""):
            kept = [(k, v) for k, v in scope.get("headers") or [] if k != b"content-type"]
            scope = {**scope, "headers": [*kept, (b"content-type", b"application/json")]}

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)
