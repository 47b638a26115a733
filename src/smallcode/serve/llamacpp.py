"""llama.cpp's server routes: ``/completion``, ``/infill``, ``/tokenize``, ``/detokenize``, ``/props``
and ``/slots`` (Continue's and Tabby's llama.cpp providers, llama.vscode, llama.vim).

Answers have llama.cpp's shapes: ``content``, ``tokens``, ``stop_type`` ("word", "eos" or "limit"),
``stopping_word``, the token counts, ``generation_settings`` and ``timings``; a stream is
``data: {...}`` events, the last with ``stop: true`` and no ``[DONE]``. ``n_indent`` ends the
completion at the first line (after the first) indented by fewer than ``n_indent`` characters,
dropping that line; a stream holds back a last line until its indentation is known.

``n_probs`` gives llama.cpp's ``completion_probabilities``: per token its ``id``, ``token`` (the
piece's text, up to an incomplete UTF-8 character), ``bytes`` and ``logprob`` (of the model's
distribution before temperature and filtering, as llama.cpp reports it), and ``top_logprobs``, the
``n_probs`` most likely tokens alike, with the ids the scheduler reports (``TokenLogprob.top_ids``).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

import smallcode
from smallcode.runtime.formats import token_spelling
from smallcode.runtime.sampling import SamplingParams
from smallcode.runtime.scheduler import RequestHandle, TokenLogprob
from smallcode.serve.handles import Choice, collect, guarded, merged, raise_if_failed
from smallcode.serve.protocol import DetokenizeRequest, InfillRequest, LlamaCompletionRequest, TokenizeRequest
from smallcode.serve.responses import ERRORS, LLAMA_STOP_TYPE, error_event, sse, stream
from smallcode.serve.service import APIError, Job, Service, current_service

router = APIRouter()

ServiceDep = Annotated[Service, Depends(current_service)]


@router.post("/infill", responses=ERRORS)
async def infill(body: InfillRequest, request: Request, service: ServiceDep) -> Any:
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
        if choice.take(ev, handle, cut):
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


# ---------------------------------------------------------------------- /completion
@dataclass
class _Run:
    """One handle of a ``/completion`` request and what the answer needs of it."""

    index: int
    job: Job
    handle: RequestHandle
    choice: Choice = field(default_factory=Choice)
    first_at: float | None = None
    """When its first event came: the prompt was in (``timings``' prompt / predicted split)."""
    ended_at: float | None = None


@router.post("/completion", responses=ERRORS)
@router.post("/completions", responses=ERRORS, include_in_schema=False)
async def completion(body: LlamaCompletionRequest, request: Request, service: ServiceDep) -> Any:
    """llama.cpp's native completion: one answer per prompt and sample (a list when there are several)."""
    jobs = service.llama_completion_jobs(body)
    started = time.perf_counter()
    handles = service.submit(jobs, service.time_limit(body.t_max_predict_ms))
    job_of = [job for job in jobs for _ in range(job.n)]
    runs = [_Run(i, job, h) for i, (job, h) in enumerate(zip(job_of, handles, strict=True))]
    cut = _indent_stop(body.n_indent)
    if body.stream:
        return stream(_completion_events(service, body, runs, cut, started))

    async def run_all() -> None:
        async def one(run: _Run) -> None:
            def seen(choice: Choice) -> bool:
                if run.first_at is None:
                    run.first_at = time.perf_counter()
                return cut is not None and cut(choice)

            await collect(run.handle, run.choice, seen)
            run.ended_at = time.perf_counter()
            if run.choice.finish == "error":
                for h in handles:
                    h.cancel()

        await asyncio.gather(*(one(r) for r in runs))

    await guarded(request, handles, run_all())
    raise_if_failed([r.choice for r in runs])
    answers = [_fields(_completion_final(service, body, r, started, streamed=False), body.response_fields)
               for r in runs]
    return answers[0] if len(answers) == 1 else answers


def _completion_final(service: Service, body: LlamaCompletionRequest, run: _Run, started: float, *,
                      streamed: bool) -> dict[str, Any]:
    """The whole answer of one run, or the last event of its stream (``content`` and ``tokens`` are then
    set by the caller to what is left to send)."""
    choice, handle = run.choice, run.handle
    evaluate_only = body.n_predict == 0
    text = "" if evaluate_only else choice.text
    tokens = [] if evaluate_only else list(choice.token_ids or [])
    stop_type = "limit" if evaluate_only else LLAMA_STOP_TYPE.get(choice.finish or "length", "limit")
    out: dict[str, Any] = {
        "index": run.index, "content": text, "tokens": tokens, "id_slot": -1, "stop": True,
        "model": service.model_name, "tokens_predicted": 0 if evaluate_only else handle.completion_tokens,
        "tokens_evaluated": handle.prompt_tokens,
        "generation_settings": generation_settings(service, run.job.params, n_probs=run.job.logprobs,
                                                   stream=body.stream),
        "prompt": service.decode(run.job.ids), "has_new_line": "\n" in text,
        "truncated": _truncated(service, handle, stop_type),
        "stop_type": stop_type, "stopping_word": _stopping_word(service, choice, body) if stop_type == "word" else "",
        "tokens_cached": handle.cached_tokens, "timings": _timings(run, started),
    }
    if evaluate_only:
        out["generation_settings"]["n_predict"] = 0
    if run.job.logprobs and not streamed and not evaluate_only:
        out["completion_probabilities"] = completion_probabilities(service, tokens, choice.logprobs or [])
    return out


async def _completion_events(service: Service, body: LlamaCompletionRequest, runs: list[_Run],
                             cut: Callable[[Choice], bool] | None, started: float) -> AsyncIterator[str]:
    shown = [0] * len(runs)
    sent_tokens = [0] * len(runs)
    sent_probs = [0] * len(runs)
    done = [False] * len(runs)
    evaluate_only = body.n_predict == 0
    async for i, ev in merged([r.handle for r in runs]):
        run, choice = runs[i], runs[i].choice
        if done[i]:
            continue
        if ev.finish_reason == "error":  # llama.cpp's streams have no [DONE]: the error ends it
            yield error_event()
            return
        if run.first_at is None:
            run.first_at = time.perf_counter()
        if choice.take(ev, run.handle, cut):
            run.ended_at = time.perf_counter()
            done[i] = True
            final = _completion_final(service, body, run, started, streamed=True)
            tokens = choice.token_ids or []
            final["content"] = "" if evaluate_only else choice.text[shown[i]:]
            final["tokens"] = [] if evaluate_only else tokens[sent_tokens[i]:]
            if run.job.logprobs and not evaluate_only:
                final["completion_probabilities"] = completion_probabilities(
                    service, tokens[sent_probs[i]:], (choice.logprobs or [])[sent_probs[i]:])
            yield sse(_fields(final, body.response_fields))
            continue
        if evaluate_only:
            continue
        safe = indent_safe(choice.text, body.n_indent)
        if safe <= shown[i]:
            continue
        tokens = choice.token_ids or []
        event: dict[str, Any] = {"index": run.index, "content": choice.text[shown[i]:safe],
                                 "tokens": tokens[sent_tokens[i]:], "stop": False, "id_slot": -1,
                                 "tokens_predicted": run.handle.completion_tokens,
                                 "tokens_evaluated": run.handle.prompt_tokens}
        if run.job.logprobs:
            event["completion_probabilities"] = completion_probabilities(
                service, tokens[sent_probs[i]:], (choice.logprobs or [])[sent_probs[i]:])
            sent_probs[i] = len(tokens)
        shown[i], sent_tokens[i] = safe, len(tokens)
        yield sse(event)


def _truncated(service: Service, handle: RequestHandle, stop_type: str) -> bool:
    """llama.cpp's ``truncated``: the generation ran into the end of the context."""
    context = service.max_context
    return stop_type == "limit" and context is not None and handle.prompt_tokens + handle.completion_tokens >= context


def _stopping_word(service: Service, choice: Choice, body: LlamaCompletionRequest) -> str:
    """The stop string that ended ``choice`` (its text stops before it; its tokens hold it), else ""."""
    stops = [body.stop] if isinstance(body.stop, str) else body.stop
    full = service.decode(choice.token_ids or [])
    if not full.startswith(choice.text):
        return ""
    rest = full[len(choice.text):]
    return next((s for s in stops if rest.startswith(s)), "")


def _timings(run: _Run, started: float) -> dict[str, Any]:
    """llama.cpp's ``timings``: the prompt until the first token, the rest for the predicted tokens."""
    first = run.first_at or time.perf_counter()
    end = run.ended_at or first
    prompt_n = run.handle.prompt_tokens - run.handle.cached_tokens
    predicted_n = run.handle.completion_tokens
    prompt_ms, predicted_ms = (first - started) * 1000, (end - first) * 1000
    return {"cache_n": run.handle.cached_tokens, "prompt_n": prompt_n, "prompt_ms": prompt_ms,
            "prompt_per_token_ms": prompt_ms / prompt_n if prompt_n else 0.0,
            "prompt_per_second": prompt_n / prompt_ms * 1000 if prompt_ms > 0 else 0.0,
            "predicted_n": predicted_n, "predicted_ms": predicted_ms,
            "predicted_per_token_ms": predicted_ms / predicted_n if predicted_n else 0.0,
            "predicted_per_second": predicted_n / predicted_ms * 1000 if predicted_ms > 0 else 0.0}


def _fields(answer: dict[str, Any], fields: list[str] | None) -> dict[str, Any]:
    """llama.cpp's ``response_fields``: only the named fields; ``a/b`` is field ``b`` of ``a``, kept
    under the key ``a/b``; a name that is not there is left out."""
    if not fields:
        return answer
    out: dict[str, Any] = {}
    for path in fields:
        value: Any = answer
        for key in path.split("/"):
            if not isinstance(value, dict) or key not in value:
                break
            value = value[key]
        else:
            out[path] = value
    return out


SAMPLERS = ["temperature", "top_k", "top_p"]
"""The sampler chain of this server, in its order (llama.cpp's ``samplers`` names)."""


def generation_settings(service: Service, params: SamplingParams, *, n_probs: int, stream: bool) -> dict[str, Any]:
    """llama.cpp's ``generation_settings`` of a request's effective parameters (``/props``: the defaults)."""
    return {"n_ctx": service.max_context, "model": service.model_name, "n_predict": params.max_tokens,
            "max_tokens": params.max_tokens, "seed": params.seed if params.seed is not None else -1,
            "temperature": params.temperature, "top_k": params.top_k, "top_p": params.top_p, "min_p": 0.0,
            "typical_p": 1.0, "dynatemp_range": 0.0, "xtc_probability": 0.0, "mirostat": 0,
            "repeat_last_n": 0, "repeat_penalty": 1.0, "presence_penalty": 0.0, "frequency_penalty": 0.0,
            "dry_multiplier": 0.0, "stop": list(params.stop), "n_keep": 0, "n_discard": 0,
            "ignore_eos": params.ignore_eos, "stream": stream, "n_probs": n_probs, "min_keep": 0,
            "grammar": "", "samplers": SAMPLERS, "post_sampling_probs": False, "lora": []}


# ---------------------------------------------------------------------- tokens, pieces and bytes
def _byte_level_table() -> dict[str, int]:
    """Byte-level BPE's spelling of bytes (GPT-2's): printable Latin-1 bytes stand for themselves, the
    other 68 bytes for the characters from U+0100 on, in byte order."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("\xa1"), ord("\xac") + 1), *range(ord("\xae"), 256)]
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[chr(b)] = b
        else:
            table[chr(256 + extra)] = b
            extra += 1
    return table


_BYTE_LEVEL = _byte_level_table()
_BYTE_TOKEN = re.compile(r"<0x([0-9A-Fa-f]{2})>")


def token_bytes(service: Service, token: int) -> bytes:
    """The bytes of one token: its text as the scheduler decodes a token (a SentencePiece word start
    keeps its space), or, when that is not whole UTF-8 (a piece of a multi-byte character decodes
    to U+FFFD), its spelling in the vocabulary (byte-level BPE, or ``<0xNN>``)."""
    tokenizer = service.loaded_scheduler().engine.tokenizer
    text = tokenizer.decode([token])
    if "\ufffd" not in text:
        return text.encode("utf-8")
    spelled = token_spelling(tokenizer, token)
    if spelled:
        if match := _BYTE_TOKEN.fullmatch(spelled):
            return bytes([int(match.group(1), 16)])
        if all(c in _BYTE_LEVEL for c in spelled):
            return bytes(_BYTE_LEVEL[c] for c in spelled)
    return text.encode("utf-8")


def piece(raw: bytes) -> str | list[int]:
    """llama.cpp's piece: the text when ``raw`` is valid UTF-8, else the list of its bytes."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return list(raw)


def _utf8_prefix(raw: bytes) -> str:
    """The text of ``raw`` up to its first byte that does not complete valid UTF-8 (llama.cpp's ``token``)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return raw[:e.start].decode("utf-8")


def completion_probabilities(service: Service, tokens: list[int], items: list[TokenLogprob]) -> list[dict[str, Any]]:
    """llama.cpp's ``completion_probabilities`` of ``tokens`` (one ``TokenLogprob`` each)."""
    def entry(token: int, logprob: float) -> dict[str, Any]:
        raw = token_bytes(service, token) if token >= 0 else b""
        return {"id": token, "token": _utf8_prefix(raw), "bytes": list(raw), "logprob": logprob}

    return [{**entry(token, item.logprob),
             "top_logprobs": [entry(alt, logprob) for alt, (_, logprob) in zip(item.top_ids, item.top, strict=True)]}
            for token, item in zip(tokens, items, strict=False)]


@router.post("/tokenize", responses=ERRORS)
async def tokenize(body: TokenizeRequest, service: ServiceDep) -> dict[str, Any]:
    """llama.cpp's ``/tokenize``: ``{"tokens": [ids]}``, or ``[{"id", "piece"}]`` with ``with_pieces``."""
    ids = service.tokenize(body.content, add_special=body.add_special)
    if not body.with_pieces:
        return {"tokens": ids}
    return {"tokens": [{"id": i, "piece": piece(token_bytes(service, i))} for i in ids]}


@router.post("/detokenize", responses=ERRORS)
async def detokenize(body: DetokenizeRequest, service: ServiceDep) -> dict[str, str]:
    """llama.cpp's ``/detokenize``: ``{"content": text}``; ids out of range are a 400 naming them."""
    return {"content": service.detokenize(body.tokens)}


# ---------------------------------------------------------------------- /props and /slots
DEFAULTS = LlamaCompletionRequest(prompt="")
"""``/completion``'s defaults, as ``/props`` shows them."""


def _default_params(service: Service) -> SamplingParams:
    return SamplingParams(max_tokens=service.limits.max_tokens, temperature=DEFAULTS.temperature,
                          top_k=DEFAULTS.top_k, top_p=DEFAULTS.top_p)


def _slot(service: Service, index: int, params: SamplingParams, *, processing: bool, prompt_tokens: int = 0,
          decoded: int = 0, state: str = "idle") -> dict[str, Any]:
    settings = generation_settings(service, params, n_probs=0, stream=False)
    return {"id": index, "id_task": -1, "n_ctx": service.max_context, "speculative": False,
            "is_processing": processing, "state": state, "n_prompt_tokens": prompt_tokens,
            "params": {k: v for k, v in settings.items() if k not in ("n_ctx", "model")},
            "next_token": {"has_next_token": processing, "has_new_line": False,
                           "n_remain": params.max_tokens - decoded if processing else -1, "n_decoded": decoded}}


def _chat_template(service: Service) -> str:
    """The tokenizer's Jinja chat template (a transformers tokenizer's, or the one smallcode's own
    exports with), or "" when it has none."""
    tokenizer = service.loaded_scheduler().engine.tokenizer
    inner = getattr(tokenizer, "tokenizer", None)
    if inner is not None:
        return str(getattr(inner, "chat_template", None) or "")
    try:
        return str(tokenizer.hf_config().get("chat_template") or "")
    except Exception:  # a foreign tokenizer without our config: no template to show
        return ""


@router.get("/props", responses=ERRORS)
async def props(service: ServiceDep) -> dict[str, Any]:
    """llama.cpp's ``GET /props``: the defaults of ``/completion``, the slots, the model, the template."""
    scheduler = service.loaded_scheduler()
    return {"default_generation_settings": _slot(service, 0, _default_params(service), processing=False),
            "total_slots": scheduler.max_batch, "model_path": service.model_name,
            "model_alias": service.model_name, "chat_template": _chat_template(service),
            "chat_template_caps": {}, "modalities": {"vision": False, "audio": False},
            "build_info": f"smallcode {smallcode.__version__}", "is_sleeping": False}


@router.post("/props", responses=ERRORS, include_in_schema=False)
async def set_props() -> None:
    raise APIError(501, "POST /props is not supported: this server's properties are set by its command line",
                   code="not_supported")


@router.get("/slots", responses=ERRORS)
async def slots(request: Request, service: ServiceDep) -> list[dict[str, Any]]:
    """llama.cpp's ``GET /slots``, read-only: one entry per running request, then the idle slots up to
    the batch size. ``?fail_on_no_slot=1`` answers 503 when no slot is idle, as llama.cpp does."""
    scheduler = service.loaded_scheduler()
    running = scheduler.slots()
    out = [_slot(service, i, view.params, processing=True, prompt_tokens=view.prompt_tokens,
                 decoded=view.completion_tokens, state=view.state) for i, view in enumerate(running)]
    idle = _default_params(service)
    out += [_slot(service, i, idle, processing=False) for i in range(len(out), scheduler.max_batch)]
    if request.query_params.get("fail_on_no_slot") in ("1", "true") and len(running) >= scheduler.max_batch:
        raise APIError(503, "no slot is available", code="no_slot_available", type="unavailable_error",
                       headers={"Retry-After": "1"})
    return out


@router.post("/slots/{id_slot}", responses=ERRORS, include_in_schema=False)
@router.post("/slots", responses=ERRORS, include_in_schema=False)
async def slot_action(request: Request) -> None:
    action = request.query_params.get("action", "")
    if action in ("save", "restore", "erase"):
        raise APIError(501, f"slot action {action!r} is not supported: slots here are rows of one batch, and the "
                            "prompt cache is shared and kept by itself", param="action", code="not_supported")
    raise APIError(400, f"unknown slot action {action!r}; llama.cpp's are save, restore and erase (none is "
                        "supported here)", param="action")
