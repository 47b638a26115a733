"""The HTTP transport: any OpenAI-compatible server (``smallcode serve``, llama.cpp, Ollama, vLLM), on httpx.

Routes: :class:`~smallcode.client.base.Text` goes to ``/v1/completions``, ``Chat`` to
``/v1/chat/completions``, ``Fim`` to llama.cpp's ``/infill`` (``input_prefix``, ``input_suffix``,
``input_extra``; one sample a request) or, once a server answers that with 404 or 405, to
``/v1/completions`` with ``suffix`` (the other files first, as commented plain text: that API has no
file-separator field). The URL may end in ``/v1`` or not.

Answers are streamed (server-sent events, :mod:`smallcode.client.sse`) unless ``stream=False``; a
server that answers a streaming request with one JSON body is read as such (no time to first text).
Each choice is timed from the request: its first text (``ttft_s``) and its end. Stop sequences are
applied here as well (servers may ignore them; the API takes four).

``generate``/``agenerate`` retry what may pass (connection refused, timeouts, HTTP 429 and 5xx,
bodies or streams that are not what the API says, an error event mid-stream) with exponential
backoff, ``max_retries`` times; then a :class:`ClientError` (:class:`ClientBusy` after a 503) names
the URL and the last problem. Other 4xx are not retried, except a 400 about ``n`` (``smallcode serve``
serves at most 8 choices a request): the cap its message states (one, if it states none) is kept in
``max_n`` and every request after asks for at most that many. A server that gives fewer than ``n``
choices is asked again for the rest, with the next seeds (choice ``i`` of a request seeded ``s`` is
seeded ``s + i``, so the choices are those one request for all ``n`` would have given).
``stream``/``astream`` try once (whoever watches the text decides what to do next); leaving them
closes the connection, which is how ``smallcode serve`` learns to cancel.

Token counts come from the answer's ``usage`` (``tokens_predicted``/``tokens_evaluated`` on
``/infill``) where the server sends it; a completion's own count only when it is the answer's one choice.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from typing import Any, Literal

import httpx

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
    StopCut,
    Text,
    truncate_at_stop,
)
from smallcode.client.sse import DONE, aiter_events, iter_events
from smallcode.tokenizer.code_tokenizer import plain_file_block

SSE = "text/event-stream"


class _Retry(Exception):
    """An attempt failed in a way the next one may not (the message is the problem)."""

    def __init__(self, problem: str, busy: bool = False) -> None:
        super().__init__(problem)
        self.busy = busy


class _Missing(Exception):
    """The server has no such route (404/405): ``/infill`` falls back to ``/v1/completions``."""


class _TooMany(ClientError):
    """The server refused a request for more choices than it serves at once (a 400 about ``n``):
    ``generate`` asks for ``cap`` at a time; anywhere else it is the refusal it says."""

    def __init__(self, message: str, cap: int) -> None:
        super().__init__(message)
        self.cap = cap


class HttpClient:
    """Completions from the server at ``url`` (see the module docstring)."""

    def __init__(self, url: str, *, model: str = "default", api_key: str | None = None, max_retries: int = 4,
                 backoff_s: float = 0.5, timeout_s: float = 120.0, connect_timeout_s: float | None = None,
                 stream: bool = True, name: str | None = None) -> None:
        base = url.rstrip("/")
        self.base = base[: -len("/v1")] if base.endswith("/v1") else base
        self.model = model
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.streaming = stream
        self.name = name or self.base
        self.fim_route: Literal["infill", "completions"] | None = None
        """Which FIM route the server has, once an answer said (None: not known yet)."""
        self.max_n: int | None = None
        """Most choices the server gives per request, once a refusal said (None: not known)."""
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._timeout = httpx.Timeout(timeout_s, connect=connect_timeout_s if connect_timeout_s else timeout_s)
        self._sync: httpx.Client | None = None
        self._sync_lock = threading.Lock()  # backends call generate from several threads at once
        self._async: httpx.AsyncClient | None = None
        self._async_loop: asyncio.AbstractEventLoop | None = None

    # ------------------------------------------------------------------ requests
    def plan(self, request: Request, sampling: Sampling, n: int) -> tuple[str, dict[str, Any]]:
        """The route and JSON body of one request for ``n`` choices (``/infill`` gives one)."""
        common: dict[str, Any] = {"model": self.model, "n": n, "temperature": sampling.temperature,
                                  "top_p": sampling.top_p, "max_tokens": sampling.max_tokens}
        if sampling.seed is not None:
            common["seed"] = sampling.seed
        if sampling.stop:
            common["stop"] = list(sampling.stop)[:4]  # the API's limit; all of them are applied here
        if self.streaming:
            common["stream"] = True
        if isinstance(request, Text):
            return "/v1/completions", {**common, "prompt": request.prompt}
        if isinstance(request, Chat):
            return "/v1/chat/completions", {**common, "messages": list(request.messages)}
        if not isinstance(request, Fim):
            raise TypeError(f"a request is Text, Fim or Chat, not {type(request).__name__}")
        if self.fim_route != "completions":
            body = {"input_prefix": request.prefix, "input_suffix": request.suffix,
                    "input_extra": [{"filename": path, "text": text} for path, text in request.extra],
                    "n_predict": sampling.max_tokens, "temperature": sampling.temperature,
                    "top_p": sampling.top_p, "stop": list(sampling.stop), "cache_prompt": True}
            if sampling.seed is not None:
                body["seed"] = sampling.seed
            if self.streaming:
                body["stream"] = True
            return "/infill", body
        head = "".join(plain_file_block(path, text) for path, text in request.extra)
        return "/v1/completions", {**common, "prompt": head + request.prefix, "suffix": request.suffix}

    def _choices_asked(self, request: Request, n: int) -> int:
        if isinstance(request, Fim) and self.fim_route != "completions":
            return 1
        return n if self.max_n is None else min(n, self.max_n)

    def _fewer(self, refused: _TooMany, n: int) -> None:
        """Ask for fewer choices at once after ``refused`` (a request for ``n``); the refusal stands for one."""
        if n <= 1:
            raise refused
        self.max_n = min(n - 1, refused.cap)

    def _next(self, sampling: Sampling, done: int) -> Sampling:
        return sampling if sampling.seed is None or not done else replace(sampling, seed=sampling.seed + done)

    # ------------------------------------------------------------------ sync
    def generate(self, request: Request, sampling: Sampling = GREEDY, n: int = 1) -> list[Completion]:
        out: list[Completion] = []
        while len(out) < n:
            want = self._choices_asked(request, n - len(out))
            try:
                out += self._with_retries(request, self._next(sampling, len(out)), want)[:want]
            except _TooMany as e:
                self._fewer(e, want)
        return out

    def _with_retries(self, request: Request, sampling: Sampling, n: int) -> list[Completion]:
        problem, busy, tries, url = "", False, self.max_retries + 1, self.base
        for i in range(tries):
            if i:
                time.sleep(self.backoff_s * 2 ** (i - 1))
            try:
                path, body = self.plan(request, sampling, n)
                try:
                    return self._attempt(path, body, sampling)
                except _Missing:
                    self.fim_route = "completions"
                    path, body = self.plan(request, sampling, n)
                    try:
                        return self._attempt(path, body, sampling)
                    except _Missing:
                        raise ClientError(f"{self.base} has neither /infill nor /v1/completions") from None
            except _Retry as e:
                problem, busy, url = str(e), e.busy, self.base + path
        raise _gave_up(url, problem, busy, tries)

    def _attempt(self, path: str, body: dict[str, Any], sampling: Sampling) -> list[Completion]:
        url = self.base + path
        answer = _Answer(time.perf_counter())
        try:
            with self._client().stream("POST", url, json=body, headers=self._headers) as response:
                if response.status_code >= 400:
                    response.read()
                    _refuse(url, path, response)
                self._note_route(path)
                if _is_stream(response):
                    for payload in iter_events(response.iter_lines()):
                        answer.event(payload)
                        if answer.done:
                            break
                else:
                    answer.body(response.read())
        except httpx.HTTPError as e:
            raise _Retry(_transport_problem(e)) from e
        return answer.completions(sampling.stop)

    def stream(self, request: Request, sampling: Sampling = GREEDY) -> Iterator[Delta]:
        for _ in range(2):
            path, body = self.plan(request, sampling, 1)
            url = self.base + path
            cut, answer = StopCut(sampling.stop), _Answer(time.perf_counter())
            try:
                with self._client().stream("POST", url, json=body, headers=self._headers) as response:
                    if response.status_code >= 400:
                        response.read()
                        try:
                            _refuse(url, path, response)
                        except _Missing:
                            self.fim_route = "completions"
                            continue
                    self._note_route(path)
                    if _is_stream(response):
                        for payload in iter_events(response.iter_lines()):
                            yield from answer.deltas(payload, cut)
                            if answer.done or cut.stopped:
                                break
                    else:
                        answer.body(response.read())
                        yield from answer.deltas(None, cut)
                    yield answer.last(cut)
                    return
            except _Retry as e:
                raise _gave_up(url, str(e), e.busy, 1) from e
            except httpx.HTTPError as e:
                raise _gave_up(url, _transport_problem(e), False, 1) from e
        raise ClientError(f"{self.base} has neither /infill nor /v1/completions")

    def _client(self) -> httpx.Client:
        with self._sync_lock:
            if self._sync is None:
                self._sync = httpx.Client(timeout=self._timeout)
            return self._sync

    def close(self) -> None:
        with self._sync_lock:
            if self._sync is not None:
                self._sync.close()
                self._sync = None

    # ------------------------------------------------------------------ async
    async def agenerate(self, request: Request, sampling: Sampling = GREEDY, n: int = 1) -> list[Completion]:
        out: list[Completion] = []
        while len(out) < n:
            want = self._choices_asked(request, n - len(out))
            try:
                out += (await self._awith_retries(request, self._next(sampling, len(out)), want))[:want]
            except _TooMany as e:
                self._fewer(e, want)
        return out

    async def _awith_retries(self, request: Request, sampling: Sampling, n: int) -> list[Completion]:
        problem, busy, tries, url = "", False, self.max_retries + 1, self.base
        for i in range(tries):
            if i:
                await asyncio.sleep(self.backoff_s * 2 ** (i - 1))
            try:
                path, body = self.plan(request, sampling, n)
                try:
                    return await self._aattempt(path, body, sampling)
                except _Missing:
                    self.fim_route = "completions"
                    path, body = self.plan(request, sampling, n)
                    try:
                        return await self._aattempt(path, body, sampling)
                    except _Missing:
                        raise ClientError(f"{self.base} has neither /infill nor /v1/completions") from None
            except _Retry as e:
                problem, busy, url = str(e), e.busy, self.base + path
        raise _gave_up(url, problem, busy, tries)

    async def _aattempt(self, path: str, body: dict[str, Any], sampling: Sampling) -> list[Completion]:
        url = self.base + path
        answer = _Answer(time.perf_counter())
        try:
            async with self._aclient().stream("POST", url, json=body, headers=self._headers) as response:
                if response.status_code >= 400:
                    await response.aread()
                    _refuse(url, path, response)
                self._note_route(path)
                if _is_stream(response):
                    async for payload in aiter_events(response.aiter_lines()):
                        answer.event(payload)
                        if answer.done:
                            break
                else:
                    answer.body(await response.aread())
        except httpx.HTTPError as e:
            raise _Retry(_transport_problem(e)) from e
        return answer.completions(sampling.stop)

    async def astream(self, request: Request, sampling: Sampling = GREEDY) -> AsyncIterator[Delta]:
        for _ in range(2):
            path, body = self.plan(request, sampling, 1)
            url = self.base + path
            cut, answer = StopCut(sampling.stop), _Answer(time.perf_counter())
            try:
                async with self._aclient().stream("POST", url, json=body, headers=self._headers) as response:
                    if response.status_code >= 400:
                        await response.aread()
                        try:
                            _refuse(url, path, response)
                        except _Missing:
                            self.fim_route = "completions"
                            continue
                    self._note_route(path)
                    if _is_stream(response):
                        async for payload in aiter_events(response.aiter_lines()):
                            for delta in answer.deltas(payload, cut):
                                yield delta
                            if answer.done or cut.stopped:
                                break
                    else:
                        answer.body(await response.aread())
                        for delta in answer.deltas(None, cut):
                            yield delta
                    yield answer.last(cut)
                    return
            except _Retry as e:
                raise _gave_up(url, str(e), e.busy, 1) from e
            except httpx.HTTPError as e:
                raise _gave_up(url, _transport_problem(e), False, 1) from e
        raise ClientError(f"{self.base} has neither /infill nor /v1/completions")

    def _aclient(self) -> httpx.AsyncClient:
        # An AsyncClient's connections belong to the event loop that opened them.
        loop = asyncio.get_running_loop()
        if self._async is None or self._async_loop is not loop:
            self._async = httpx.AsyncClient(timeout=self._timeout)
            self._async_loop = loop
        return self._async

    async def aclose(self) -> None:
        if self._async is not None:
            await self._async.aclose()
            self._async = None
        self.close()

    # ------------------------------------------------------------------ helpers
    def _note_route(self, path: str) -> None:
        if path == "/infill":
            self.fim_route = "infill"


def _gave_up(url: str, problem: str, busy: bool, tries: int) -> ClientError:
    cls = ClientBusy if busy else ClientError
    if tries == 1:
        return cls(f"{url}: {problem}")
    return cls(f"{url}: gave up after {tries} attempts; last problem: {problem}")


def _is_stream(response: httpx.Response) -> bool:
    return response.headers.get("content-type", "").split(";")[0].strip().lower() == SSE


def _refuse(url: str, path: str, response: httpx.Response) -> None:
    """Raise what a status of 400 or more means: a missing ``/infill``, something to retry, or a refusal."""
    code = response.status_code
    if code in (404, 405) and path == "/infill":
        raise _Missing()
    problem = f"HTTP {code}: {_error_message(response)}"
    if code == 429 or code >= 500:
        raise _Retry(problem, busy=code == 503)
    if code == 400 and _error_param(response) == "n":
        cap = re.search(r"at most (\d+)", _error_message(response))
        raise _TooMany(f"{url}: {problem}", max(1, int(cap.group(1))) if cap else 1)
    raise ClientError(f"{url}: {problem}")  # a 4xx other than 429 will not improve


def _error_body(response: httpx.Response) -> tuple[Any, Any] | None:
    """A JSON answer's body and its ``error`` member (None when the answer is not JSON)."""
    try:
        body = response.json()
    except ValueError:
        return None
    return body, body.get("error") if isinstance(body, dict) else None


def _error_message(response: httpx.Response) -> str:
    parsed = _error_body(response)
    if parsed is None:
        return response.content[:200].decode(errors="replace")
    body, error = parsed
    return _error_text(error) if error else str(body)[:200]


def _error_param(response: httpx.Response) -> Any:
    """The ``param`` an OpenAI-style error body names (None when it names none)."""
    parsed = _error_body(response)
    error = parsed[1] if parsed is not None else None
    return error.get("param") if isinstance(error, dict) else None


def _transport_problem(e: httpx.HTTPError) -> str:
    if isinstance(e, httpx.ConnectError | httpx.ConnectTimeout):
        return f"cannot reach the endpoint ({e})"
    if isinstance(e, httpx.TimeoutException):
        return f"no answer in time ({type(e).__name__})"
    return f"the connection failed ({type(e).__name__}: {e})"


def _choice_text(choice: dict[str, Any], streamed: bool) -> Any:
    """The text a choice carries: ``text`` (completions), ``message.content`` or, streamed,
    ``delta.content`` (chat). Not checked to be a string here."""
    if "text" in choice:
        return choice["text"]
    message = choice.get("delta" if streamed else "message")
    return message.get("content") if isinstance(message, dict) else None


class _Answer:
    """The choices of one answer as they come: OpenAI chunks (``choices``, each with an ``index``) or
    llama.cpp's ``/infill`` events (``content``, ``stop``). Problems are ``_Retry``."""

    def __init__(self, t0: float) -> None:
        self.t0 = t0
        self.texts: dict[int, list[str]] = {}
        self.first: dict[int, float] = {}
        self.finished: dict[int, float] = {}
        self.reasons: dict[int, str | None] = {}
        self.prompt_tokens: int | None = None
        self.completion_tokens: int | None = None
        self.done = False
        self.streamed = True
        self.end: float | None = None

    def event(self, payload: str) -> list[tuple[int, str]]:
        """Take one event's data; the new text of each choice it carries."""
        if payload == DONE:
            self.done = True
            return []
        try:
            chunk = json.loads(payload)
        except ValueError as e:
            raise _Retry(f"the stream is not an OpenAI-style event stream (an event is not JSON: "
                         f"{payload[:80]!r})") from e
        if not isinstance(chunk, dict):
            raise _Retry(f"the stream is not an OpenAI-style event stream (an event is not a JSON object: "
                         f"{payload[:80]!r})")
        if "error" in chunk:
            raise _Retry(f"the server reported an error mid-stream: {_error_text(chunk['error'])}")
        now = time.perf_counter() - self.t0
        self._usage(chunk)
        if "choices" not in chunk and isinstance(chunk.get("content"), str):  # llama.cpp's /infill
            pieces = self._piece(0, chunk["content"], now)
            if chunk.get("stop") is True:
                self.finished.setdefault(0, now)
                self.reasons.setdefault(0, chunk.get("stop_type") if isinstance(chunk.get("stop_type"), str)
                                        else "stop")
                self.done = True
            return pieces
        choices = chunk.get("choices")
        if not isinstance(choices, list):
            raise _Retry(f"the stream is not an OpenAI-style event stream (an event has no 'choices' list: "
                         f"{payload[:80]!r})")
        out: list[tuple[int, str]] = []
        for c in choices:
            if not isinstance(c, dict) or isinstance(c.get("index", 0), bool) or not isinstance(c.get("index", 0), int):
                raise _Retry(f"the stream is not an OpenAI-style event stream (a choice is not an object with an "
                             f"integer index: {payload[:80]!r})")
            i = c.get("index", 0)
            out += self._piece(i, _choice_text(c, streamed=True), now)
            if c.get("finish_reason") is not None:
                self.finished.setdefault(i, now)
                self.reasons.setdefault(i, str(c["finish_reason"]))
        return out

    def _piece(self, i: int, piece: Any, now: float) -> list[tuple[int, str]]:
        self.texts.setdefault(i, [])
        if isinstance(piece, str) and piece:
            self.texts[i].append(piece)
            self.first.setdefault(i, now)
            return [(i, piece)]
        return []

    def _usage(self, chunk: dict[str, Any]) -> None:
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self.prompt_tokens = _count(usage.get("prompt_tokens"), self.prompt_tokens)
            self.completion_tokens = _count(usage.get("completion_tokens"), self.completion_tokens)
        self.prompt_tokens = _count(chunk.get("tokens_evaluated"), self.prompt_tokens)
        self.completion_tokens = _count(chunk.get("tokens_predicted"), self.completion_tokens)

    def body(self, raw: bytes) -> None:
        """Take a whole (not streamed) JSON answer."""
        self.streamed, self.done = False, True
        try:
            data = json.loads(raw)
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
            now = time.perf_counter() - self.t0
            self._usage(data)
            if "choices" not in data and isinstance(data.get("content"), str):  # llama.cpp's /infill
                self.texts[0] = [data["content"]]
                self.finished[0] = now
                self.reasons[0] = data.get("stop_type") if isinstance(data.get("stop_type"), str) else "stop"
                return
            if not isinstance(data.get("choices"), list):
                raise ValueError("no 'choices' list")
            for i, c in enumerate(x for x in data["choices"] if isinstance(x, dict)):
                text = _choice_text(c, streamed=False)
                if isinstance(text, str):
                    self.texts[i] = [text]
                    self.finished[i] = now
                    self.reasons[i] = c.get("finish_reason") if isinstance(c.get("finish_reason"), str) else None
        except ValueError as e:
            raise _Retry(f"answer is not an OpenAI-style JSON body ({e}): {raw[:120]!r}") from e

    def completions(self, stop: Any) -> list[Completion]:
        """Every choice, checked to be complete, in index order."""
        end = time.perf_counter() - self.t0
        if not self.texts:
            raise _Retry("the stream carried no choices" if self.streamed else "the answer has no completion text")
        if self.streamed and not self.done and len(self.finished) < len(self.texts):
            raise _Retry("the stream ended before [DONE] with a choice unfinished")
        out = []
        one = len(self.texts) == 1
        for i in sorted(self.texts):
            full = "".join(self.texts[i])
            text = truncate_at_stop(full, stop)
            seconds = self.finished.get(i, end)
            out.append(Completion(text, "stop" if len(text) < len(full) else self.reasons.get(i), seconds,
                                  self.first.get(i, seconds) if self.streamed else None, self.prompt_tokens,
                                  self.completion_tokens if one else None))
        return out

    # For one streamed completion (choice 0):
    def deltas(self, payload: str | None, cut: StopCut) -> list[Delta]:
        pieces = self.event(payload) if payload is not None else [(0, "".join(self.texts.get(0, [])))]
        out = []
        for i, piece in pieces:
            if i == 0 and not cut.stopped:
                shown = cut.push(piece)
                if shown:
                    out.append(Delta(shown, time.perf_counter() - self.t0))
        return out

    def last(self, cut: StopCut) -> Delta:
        """The final piece: what the stop sequences held back, the finish reason, the counts."""
        if not cut.stopped:
            if 0 not in self.texts:
                raise _Retry("the stream carried no choices" if self.streamed else "the answer has no completion text")
            if self.streamed and not self.done and 0 not in self.finished:
                raise _Retry("the stream ended before [DONE] with a choice unfinished")
        reason = "stop" if cut.stopped else self.reasons.get(0)
        return Delta(cut.flush(), time.perf_counter() - self.t0, reason, self.prompt_tokens,
                     self.completion_tokens if len(self.texts) == 1 else None)


def _count(value: Any, default: int | None) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _error_text(error: Any) -> str:
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return error["message"][:200]
    return str(error)[:200]
