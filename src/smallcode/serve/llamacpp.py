"""llama.cpp's ``/infill`` (llama.vscode, llama.vim): fill-in-the-middle with other files as context.

The answer is llama.cpp's: ``content``, ``tokens``, ``stop_type`` ("word", "eos" or "limit"), the
token counts and ``timings``; a stream is ``data: {...}`` events, the last with ``stop: true`` and
no ``[DONE]``. ``n_indent`` ends the completion at the first line (after the first) indented by
fewer than ``n_indent`` characters, dropping that line; a stream holds back a last line until its
indentation is known.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from smallcode.runtime.scheduler import RequestHandle
from smallcode.serve.handles import Choice, collect, guarded, merged, raise_if_failed
from smallcode.serve.protocol import InfillRequest
from smallcode.serve.responses import ERRORS, LLAMA_STOP_TYPE, error_event, sse, stream
from smallcode.serve.service import Service, current_service

router = APIRouter()


@router.post("/infill", responses=ERRORS)
async def infill(body: InfillRequest, request: Request, service: Annotated[Service, Depends(current_service)]) -> Any:
    job = service.infill_job(body)
    started = time.perf_counter()
    (handle,) = service.submit([job], service.time_limit(body.t_max_predict_ms))
    cut = _indent_stop(body.n_indent)
    if body.stream:
        return stream(_events(service, handle, body.n_indent, cut, started))
    choice = Choice()
    await guarded(request, [handle], collect(handle, choice, cut))
    raise_if_failed([choice])
    return _final(service, handle, choice, started)


def _final(service: Service, handle: RequestHandle, choice: Choice, started: float) -> dict[str, Any]:
    """The whole answer, or the last event of a stream (whose ``content`` is then what is left to show)."""
    elapsed_ms = (time.perf_counter() - started) * 1000
    return {"content": choice.text, "tokens": choice.token_ids or [], "stop": True,
            "model": service.model_name, "tokens_predicted": handle.completion_tokens,
            "tokens_evaluated": handle.prompt_tokens, "tokens_cached": handle.cached_tokens,
            "stop_type": LLAMA_STOP_TYPE.get(choice.finish or "length", "limit"),
            "truncated": False, "timings": {"prompt_n": handle.prompt_tokens - handle.cached_tokens,
                                            "cache_n": handle.cached_tokens,
                                            "predicted_n": handle.completion_tokens,
                                            "total_ms": elapsed_ms}}


async def _events(service: Service, handle: RequestHandle, n_indent: int, cut: Callable[[Choice], bool] | None,
                  started: float) -> AsyncIterator[str]:
    choice, shown = Choice(), 0
    async for _, ev in merged([handle]):
        if ev.finish_reason == "error":  # llama.cpp's streams have no [DONE]: the error ends it
            yield error_event()
            return
        choice.text += ev.text
        choice.token_ids = (choice.token_ids or []) + list(ev.token_ids)
        if cut is not None and cut(choice):
            if ev.finish_reason is None:
                handle.cancel()
            choice.finish = "stop"
        elif ev.finish_reason is not None:
            choice.finish = ev.finish_reason
        if choice.finish is not None:
            break
        safe = indent_safe(choice.text, n_indent)
        if safe > shown:
            yield sse({"index": 0, "content": choice.text[shown:safe], "tokens": list(ev.token_ids), "stop": False})
            shown = safe
    yield sse({**_final(service, handle, choice, started), "content": choice.text[shown:]})


def _indent_stop(n_indent: int) -> Callable[[Choice], bool] | None:
    """What ends a choice for ``n_indent`` (None when it is 0): True, the text cut, once a line is below it."""
    if not n_indent:
        return None

    def cut(choice: Choice) -> bool:
        at = indent_cut(choice.text, n_indent)
        if at is None:
            return False
        choice.text = choice.text[:at]
        return True

    return cut


def indent_cut(text: str, n_indent: int) -> int | None:
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


def indent_safe(text: str, n_indent: int) -> int:
    """How much of ``text`` can be shown before ``n_indent`` has judged its last line."""
    last = text.rfind("\n")
    if n_indent and last != -1 and not text[last + 1:].lstrip(" \t"):
        return last
    return len(text)
