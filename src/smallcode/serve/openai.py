"""OpenAI's routes: ``/v1/completions``, ``/v1/chat/completions`` and ``/v1/models``.

Answers have OpenAI's shapes: ``text_completion`` and ``chat.completion`` objects, or their chunks
as server-sent events ending in ``data: [DONE]`` (a usage chunk before it when
``stream_options.include_usage`` asks). :func:`chat_completion` is also Mistral's FIM answer.
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from smallcode.runtime.scheduler import Event
from smallcode.serve.handles import collect_all, guarded
from smallcode.serve.protocol import ChatRequest, CompletionRequest, FimRequest
from smallcode.serve.responses import (
    ERRORS,
    OPENAI_FINISH,
    chat_logprobs,
    completion_logprobs,
    include_usage,
    openai_stream,
    stream,
    usage,
)
from smallcode.serve.service import Job, Service, current_service

router = APIRouter()

ServiceDep = Annotated[Service, Depends(current_service)]


@router.get("/v1/models")
async def models(service: ServiceDep) -> dict[str, Any]:
    return {"object": "list", "data": [{"id": service.model_name, "object": "model", "created": service.created,
                                        "owned_by": "smallcode"}]}


@router.post("/v1/completions", responses=ERRORS)
async def completions(body: CompletionRequest, request: Request, service: ServiceDep) -> Any:
    jobs = service.completion_jobs(body)
    handles = service.submit(jobs, service.time_limit())
    rid, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
    k = body.logprobs or 0
    echo = [service.decode(j.ids) if body.echo else "" for j in jobs for _ in range(body.n)]
    head = {"id": rid, "object": "text_completion", "created": created, "model": service.model_name}
    if body.stream:
        offsets = [len(t) for t in echo]  # where each choice's next text starts, for text_offset

        def choice(i: int, ev: Event) -> dict[str, Any] | None:
            lp = None
            if ev.logprobs is not None and body.logprobs is not None:
                lp = completion_logprobs(ev.logprobs, k, offsets[i])
            offsets[i] += len(ev.text)
            finish = OPENAI_FINISH.get(ev.finish_reason) if ev.finish_reason else None
            if not (ev.text or finish or lp):
                return None
            return {"index": i, "text": ev.text, "logprobs": lp, "finish_reason": finish}

        opening = [{"index": i, "text": text, "logprobs": None, "finish_reason": None}
                   for i, text in enumerate(echo) if text]
        return stream(openai_stream(handles, head, body.n, include_usage(body), opening, choice))
    choices = await guarded(request, handles, collect_all(handles))
    out = []
    for i, c in enumerate(choices):
        lp = None
        if body.logprobs is not None:
            lp = completion_logprobs(c.logprobs or [], k, len(echo[i]))
        out.append({"index": i, "text": echo[i] + c.text, "logprobs": lp,
                    "finish_reason": OPENAI_FINISH.get(c.finish or "length")})
    return {**head, "choices": out, "usage": usage(handles, body.n)}


@router.post("/v1/chat/completions", responses=ERRORS)
async def chat(body: ChatRequest, request: Request, service: ServiceDep) -> Any:
    return await chat_completion(service, service.chat_job(body), body, request, logprobs=body.logprobs,
                                 k=body.top_logprobs or 0)


async def chat_completion(service: Service, job: Job, body: ChatRequest | FimRequest, request: Request, *,
                          logprobs: bool, k: int) -> Any:
    """A chat completion's answer (or its stream) to ``job``: chat, and Mistral's FIM route."""
    handles = service.submit([job], service.time_limit())
    rid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
    head = {"id": rid, "created": created, "model": service.model_name}
    if body.stream:

        def choice(i: int, ev: Event) -> dict[str, Any] | None:
            lp = chat_logprobs(ev.logprobs, k) if ev.logprobs is not None and logprobs else None
            finish = OPENAI_FINISH.get(ev.finish_reason) if ev.finish_reason else None
            if not (ev.text or finish or lp):
                return None
            delta = {"content": ev.text} if ev.text else {}
            return {"index": i, "delta": delta, "logprobs": lp, "finish_reason": finish}

        opening = [{"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                    "finish_reason": None} for i in range(len(handles))]
        chunk = {**head, "object": "chat.completion.chunk"}
        return stream(openai_stream(handles, chunk, body.n, include_usage(body), opening, choice))
    choices = await guarded(request, handles, collect_all(handles))
    out = [{"index": i, "message": {"role": "assistant", "content": c.text},
            "logprobs": chat_logprobs(c.logprobs or [], k) if logprobs else None,
            "finish_reason": OPENAI_FINISH.get(c.finish or "length")} for i, c in enumerate(choices)]
    return {**head, "object": "chat.completion", "choices": out, "usage": usage(handles, body.n)}
