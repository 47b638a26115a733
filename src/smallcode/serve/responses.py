"""The shapes of answers that the API families share: OpenAI's error body, token usage and
log-probabilities, and server-sent events (``data: {...}``, then ``data: [DONE]`` on the OpenAI
routes; llama.cpp's ``/infill`` stream has no ``[DONE]``).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi.responses import JSONResponse, StreamingResponse

from smallcode.runtime.scheduler import Event, RequestHandle, TokenLogprob
from smallcode.serve.handles import merged
from smallcode.serve.protocol import ChatRequest, CompletionRequest, ErrorResponse, ErrorType, FimRequest
from smallcode.serve.service import GENERATION_FAILED

# What the schema says a generating route may answer besides 200 (all in OpenAI's error shape).
ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "A malformed or unsupported request (the param names the field)."},
    401: {"model": ErrorResponse, "description": "An API key is set and the request lacks it."},
    413: {"model": ErrorResponse, "description": "The body is larger than the server's limit."},
    500: {"model": ErrorResponse, "description": "The model failed on this request; the server goes on."},
    503: {"model": ErrorResponse, "description": "Busy (queue full) or still loading; see Retry-After."},
    # Named so that FastAPI leaves out its default 422, which this server never sends (a 400 instead).
    "4XX": {"model": ErrorResponse, "description": "Any other client error (404, 405)."},
}

# OpenAI knows "stop" and "length"; llama.cpp's /infill says which kind of stop it was.
OPENAI_FINISH = {"stop": "stop", "eos": "stop", "cancelled": "stop", "length": "length", "timeout": "length"}
LLAMA_STOP_TYPE = {"stop": "word", "eos": "eos", "cancelled": "limit", "length": "limit", "timeout": "limit"}


def error_response(status: int, message: str, *, param: str | None = None, code: str | None = None,
                   type: ErrorType = "invalid_request_error", headers: dict[str, str] | None = None) -> JSONResponse:
    """OpenAI's ``{"error": {"message", "type", "param", "code"}}`` with ``status``."""
    body = {"error": {"message": message, "type": type, "param": param, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


def sse(obj: Any) -> str:
    """One server-sent event carrying ``obj`` as JSON."""
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


def error_event() -> str:
    """The event that ends a stream on whose rows the model loop failed."""
    return sse({"error": {"message": GENERATION_FAILED, "type": "server_error", "param": None,
                          "code": "generation_failed"}})


def stream(events: AsyncIterator[str]) -> StreamingResponse:
    """``events`` sent as they come, past any buffering proxy."""
    return StreamingResponse(events, media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def usage(handles: list[RequestHandle], n: int) -> dict[str, Any]:
    """OpenAI's token counts of a request whose handles are ``n`` samples per prompt, prompt-major."""
    firsts = handles[::n]  # one per distinct prompt: its n samples share the prompt
    return {
        "prompt_tokens": sum(h.prompt_tokens for h in firsts),
        "completion_tokens": sum(h.completion_tokens for h in handles),
        "total_tokens": sum(h.prompt_tokens for h in firsts) + sum(h.completion_tokens for h in handles),
        "prompt_tokens_details": {"cached_tokens": sum(h.cached_tokens for h in firsts)},
    }


def include_usage(body: CompletionRequest | ChatRequest | FimRequest) -> bool:
    return bool(body.stream_options and body.stream_options.include_usage)


def completion_logprobs(items: list[TokenLogprob], k: int, offset: int) -> dict[str, Any]:
    """The legacy completions' ``logprobs``: parallel lists, text offsets counted from ``offset``."""
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


def chat_logprobs(items: list[TokenLogprob], k: int) -> dict[str, Any]:
    """The chat completions' ``logprobs``: one entry per token, with its bytes and ``k`` alternatives."""
    def entry(token: str, logprob: float) -> dict[str, Any]:
        return {"token": token, "logprob": logprob, "bytes": list(token.encode("utf-8", "replace"))}

    return {"content": [{**entry(item.token, item.logprob), "top_logprobs": [entry(t, lp) for t, lp in item.top[:k]]}
                        for item in items]}


async def openai_stream(handles: list[RequestHandle], head: dict[str, Any], n: int, with_usage: bool,
                        opening: list[dict[str, Any]], choice: Callable[[int, Event], dict[str, Any] | None]
                        ) -> AsyncIterator[str]:
    """The server-sent events of an OpenAI route: the ``opening`` choices, then ``choice(i, event)`` for
    each event of handle ``i`` (None: nothing to send), then the usage chunk when asked for and
    ``data: [DONE]``. A failed sample ends the stream with an error event and drops the others."""
    usage_field = {"usage": None} if with_usage else {}
    for c in opening:
        yield sse({**head, "choices": [c], **usage_field})
    async for i, ev in merged(handles):
        if ev.finish_reason == "error":
            for h in handles:
                h.cancel()
            yield error_event()
            break
        c = choice(i, ev)
        if c is not None:
            yield sse({**head, "choices": [c], **usage_field})
    else:
        if with_usage:
            yield sse({**head, "choices": [], "usage": usage(handles, n)})
    yield "data: [DONE]\n\n"
