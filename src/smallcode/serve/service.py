"""What the routes ask of the runtime: a parsed request becomes scheduler submissions.

A :class:`Service` holds the scheduler (``smallcode.runtime.scheduler.Scheduler``, or the Hugging
Face one, which is one too), the prompt format (``smallcode.runtime.formats.PromptFormat``), the
model's name and the :class:`Limits`. Its ``*_job`` methods check a request against the limits and
the context and lay out its prompt (a :class:`Job`); ``submit`` turns jobs into handles, one per
prompt and sample (sample i of a request seeded s draws from s + i). Everything a client can get
wrong is an :class:`APIError` here, before the scheduler sees the request.

Either the scheduler or the prompt format may be None while the model loads (``attach`` sets them);
until then every job is a 503.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass

from fastapi import Request

from smallcode.config import ConfigError
from smallcode.runtime.engine import GenerationError
from smallcode.runtime.formats import PromptFormat
from smallcode.runtime.sampling import SamplingParams
from smallcode.runtime.scheduler import MAX_LOGPROBS, QueueFull, RequestHandle, Scheduler
from smallcode.serve.protocol import (
    MAX_SEED,
    ChatRequest,
    CompletionRequest,
    ErrorType,
    FimRequest,
    InfillRequest,
    LlamaCompletionRequest,
    LlamaPrompt,
    llama_unsupported,
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


# The scheduler ends a handle with finish_reason "error" when the model loop failed on its row (the
# loop itself survives); the client gets a 500, or an error event at the end of a stream.
GENERATION_FAILED = "the model failed while generating this completion; the server keeps serving other requests"


def generation_failed() -> APIError:
    """The 500 of a request on whose rows the model loop failed."""
    return APIError(500, GENERATION_FAILED, code="generation_failed", type="server_error")


@dataclass
class Job:
    """One prompt to submit ``n`` times."""

    ids: list[int]
    params: SamplingParams
    n: int
    logprobs: int = 0


def checked_text(value: str, param: str) -> str:
    """``value``, refused when it holds lone surrogates (JSON ``\\ud800``), which are not text."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise APIError(400, f"{param} is not valid Unicode text ({e.reason} at {e.start})", param=param) from e
    return value


class Service:
    """Turns parsed requests into scheduler submissions (see the module docstring)."""

    def __init__(self, scheduler: Scheduler | None, prompt_format: PromptFormat | None, model_name: str,
                 limits: Limits) -> None:
        self.scheduler, self.prompt_format = scheduler, prompt_format
        self.model_name, self.limits = model_name, limits
        self.created = int(time.time())

    def attach(self, scheduler: Scheduler, prompt_format: PromptFormat) -> None:
        """Make the service ready (the CLI loads the model after the server is listening)."""
        self.prompt_format, self.scheduler = prompt_format, scheduler

    @property
    def ready(self) -> bool:
        return self.scheduler is not None and self.prompt_format is not None

    @property
    def max_context(self) -> int | None:
        return None if self.scheduler is None else self.scheduler.max_context

    def _loaded(self) -> PromptFormat:
        """The prompt format of a ready service; a 503 while the model loads."""
        if self.prompt_format is None or self.scheduler is None:
            raise APIError(503, "the model is still loading", code="model_loading", type="unavailable_error",
                           headers={"Retry-After": "1"})
        return self.prompt_format

    def decode(self, ids: list[int]) -> str:
        """The text of a prompt (``echo``)."""
        return self._loaded().decode(ids)

    # ------------------------------------------------------------------ checking a request
    def _stops(self, stop: str | list[str] | None) -> list[str]:
        stops = [stop] if isinstance(stop, str) else list(stop or [])
        if len(stops) > self.limits.max_stop:
            raise APIError(400, f"at most {self.limits.max_stop} stop strings, got {len(stops)}", param="stop")
        for s in stops:
            checked_text(s, "stop")
            if not s or len(s) > self.limits.max_stop_chars:
                raise APIError(400, f"stop strings must have 1 to {self.limits.max_stop_chars} characters, "
                                    f"got {len(s)}", param="stop")
        return stops

    def _params(self, ids: list[int], max_tokens: int | None, param: str, *, temperature: float, top_p: float,
                top_k: int, seed: int | None, stop: list[str], stop_loops: bool = False) -> SamplingParams:
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
                                  seed=seed, stop=stop, stop_loops=stop_loops)
        except ConfigError as e:
            raise APIError(400, str(e)) from e

    def _check_n(self, rows: int) -> None:
        if rows > self.limits.max_n:
            raise APIError(400, f"this request asks for {rows} completions (prompts times n); at most "
                                f"{self.limits.max_n} are served per request", param="n")

    def _fim(self, prefix: str, suffix: str, extra: list[tuple[str, str]] | None = None, *,
             param: str = "suffix") -> list[int]:
        try:
            return self._loaded().fim(prefix, suffix, extra or [])
        except ValueError as e:  # e.g. a Hugging Face model whose tokenizer has no FIM tokens
            raise APIError(400, str(e), param=param, code="fim_unsupported") from e

    @staticmethod
    def _supported(req: CompletionRequest | ChatRequest | FimRequest) -> None:
        if (field := unsupported(req)) is not None:
            raise APIError(400, f"{field} is not supported by this server", param=field, code="unsupported")

    # ------------------------------------------------------------------ one method per request kind
    def completion_jobs(self, req: CompletionRequest) -> list[Job]:
        """``/v1/completions``: one job per prompt."""
        fmt = self._loaded()
        self._supported(req)
        prompts = [req.prompt] if isinstance(req.prompt, str) else req.prompt
        if not prompts:
            raise APIError(400, "prompt is an empty list", param="prompt")
        self._check_n(len(prompts) * req.n)
        stops = self._stops(req.stop)
        jobs = []
        for prompt in prompts:
            if req.suffix is not None:
                ids = self._fim(checked_text(prompt, "prompt"), checked_text(req.suffix, "suffix"))
            else:
                ids = fmt.encode(checked_text(prompt, "prompt"))
            params = self._params(ids, req.max_tokens, "max_tokens", temperature=req.temperature, top_p=req.top_p,
                                  top_k=req.top_k, seed=req.seed, stop=stops)
            jobs.append(Job(ids, params, req.n, 0 if req.logprobs is None else max(1, req.logprobs)))
        return jobs

    def fim_job(self, req: FimRequest) -> Job:
        """Mistral's ``/v1/fim/completions``."""
        self._loaded()  # a 503 while loading comes before any other answer
        self._supported(req)
        self._check_n(req.n)
        if req.seed is not None and req.random_seed is not None:
            raise APIError(400, "give seed or random_seed, not both", param="random_seed")
        max_tokens = _max_tokens(req)
        ids = self._fim(checked_text(req.prompt, "prompt"), checked_text(req.suffix or "", "suffix"))
        seed = req.random_seed if req.random_seed is not None else req.seed
        params = self._params(ids, max_tokens, "max_tokens", temperature=req.temperature, top_p=req.top_p,
                              top_k=req.top_k, seed=seed, stop=self._stops(req.stop))
        return Job(ids, params, req.n)

    def chat_job(self, req: ChatRequest) -> Job:
        """``/v1/chat/completions``: the conversation with an assistant turn opened."""
        fmt = self._loaded()
        self._supported(req)
        self._check_n(req.n)
        messages = []
        for m in req.messages:
            content = m.content if isinstance(m.content, str) else "".join(p.text or "" for p in m.content or [])
            role = "system" if m.role == "developer" else m.role
            messages.append({"role": role, "content": checked_text(content, "messages")})
        try:
            ids = fmt.chat(messages)
        except (ValueError, KeyError) as e:
            raise APIError(400, f"messages: {e}", param="messages") from e
        max_tokens = _max_tokens(req)
        params = self._params(ids, max_tokens, "max_tokens", temperature=req.temperature, top_p=req.top_p,
                              top_k=req.top_k, seed=req.seed, stop=self._stops(req.stop))
        logprobs = max(1, req.top_logprobs or 0) if req.logprobs else 0
        return Job(ids, params, req.n, logprobs)

    def infill_job(self, req: InfillRequest) -> Job:
        """llama.cpp's ``/infill``: the other files, then the fill-in-the-middle prompt."""
        self._loaded()  # a 503 while loading comes before any other answer
        extra = [(checked_text(c.filename, "input_extra"), checked_text(c.text, "input_extra"))
                 for c in req.input_extra]
        prefix = checked_text(req.input_prefix, "input_prefix") + checked_text(req.prompt, "prompt")
        ids = self._fim(prefix, checked_text(req.input_suffix, "input_suffix"), extra, param="input_suffix")
        max_tokens = None if req.n_predict == -1 else req.n_predict
        if max_tokens == 0:
            raise APIError(400, "n_predict must be -1 (the server's cap) or >= 1", param="n_predict")
        params = self._params(ids, max_tokens, "n_predict", temperature=req.temperature, top_p=req.top_p,
                              top_k=req.top_k, seed=None if req.seed == -1 else req.seed, stop=self._stops(req.stop),
                              stop_loops=True)  # an editor's completion: a loop is never what it wants
        return Job(ids, params, 1)

    # ------------------------------------------------------------------ llama.cpp's token-level routes
    def loaded_scheduler(self) -> Scheduler:
        """The scheduler of a ready service; a 503 while the model loads."""
        self._loaded()
        assert self.scheduler is not None
        return self.scheduler

    @property
    def vocab_size(self) -> int:
        """How many token ids the served tokenizer has (ids at or past it are no tokens)."""
        return int(self.loaded_scheduler().engine.tokenizer.vocab_size)

    def tokenize(self, text: str, *, add_special: bool, param: str = "content") -> list[int]:
        """The ids of ``text``: as a prompt is encoded (``add_special``), or without the sequence start
        that the tokenizer puts in front of every prompt (a BOS token; smallcode's own has none)."""
        fmt = self._loaded()
        ids = fmt.encode(checked_text(text, param))
        if not add_special:
            lead = fmt.encode("")
            if lead and ids[:len(lead)] == lead:
                ids = ids[len(lead):]
        return ids

    def checked_ids(self, ids: list[int], param: str) -> list[int]:
        """``ids``, refused with a 400 naming those that are no token of the served tokenizer."""
        vocab = self.vocab_size
        bad = [i for i in ids if not 0 <= i < vocab]
        if bad:
            shown = ", ".join(str(i) for i in bad[:8]) + (", ..." if len(bad) > 8 else "")
            raise APIError(400, f"{param}: token ids out of range [0, {vocab}): {shown}", param=param,
                           code="invalid_token")
        return ids

    def detokenize(self, ids: list[int]) -> str:
        """The text of ``ids`` (``/detokenize``); ids out of range are a 400 naming them."""
        return self._loaded().decode(self.checked_ids(ids, "tokens"))

    def llama_prompts(self, prompt: LlamaPrompt) -> list[list[int]]:
        """llama.cpp's ``prompt`` shapes as token ids, one list per prompt.

        A string, a list of ids, or a list mixing ids and strings is one prompt; a list whose items are
        all strings or lists is several. Text gets the tokenizer's sequence start only when it opens the
        prompt (as in llama.cpp, where a BOS goes in front when the first element is a string); the
        pieces of a mixed prompt are encoded one by one, so text is not merged across an id.
        """
        if isinstance(prompt, str):
            return [self._mixed([prompt])]
        if not prompt:
            raise APIError(400, "prompt is an empty list", param="prompt")
        if any(isinstance(p, int) for p in prompt):
            if any(isinstance(p, list) for p in prompt):
                raise APIError(400, "prompt mixes token ids and lists at its top level: give one prompt (ids "
                                    "and strings) or a list of prompts", param="prompt")
            return [self._mixed(prompt)]  # type: ignore[arg-type]
        return [self._mixed([p] if isinstance(p, str) else p) for p in prompt]  # type: ignore[list-item]

    def _mixed(self, parts: list[int | str]) -> list[int]:
        ids: list[int] = []
        for i, part in enumerate(parts):
            if isinstance(part, str):
                ids += self.tokenize(part, add_special=i == 0, param="prompt")
            elif isinstance(part, int) and not isinstance(part, bool):
                ids.append(part)
            else:
                raise APIError(400, "prompt: a prompt is text, token ids or a list of both", param="prompt")
        if not ids:
            raise APIError(400, "the prompt is empty: there is nothing to continue", param="prompt")
        return self.checked_ids(ids, "prompt")

    def llama_completion_jobs(self, req: LlamaCompletionRequest) -> list[Job]:
        """llama.cpp's ``/completion``: one job per prompt, ``n_cmpl`` samples each.

        ``n_predict`` above the server's cap (and -1) is the cap, as llama.cpp clamps it to its ``-n``,
        and what does not fit in the context is cut (the answer says ``truncated``); 0 is one token
        that the answer drops, so that the prompt is evaluated into the prompt cache.
        """
        self._loaded()
        if (field := llama_unsupported(req)) is not None:
            raise APIError(400, f"{field} is not supported by this server at this value (it has no such sampler "
                                "or penalty)", param=field, code="unsupported")
        prompts = self.llama_prompts(req.prompt)
        self._check_n(len(prompts) * req.n_cmpl)
        stops = self._stops(req.stop)
        greedy = req.temperature <= 0
        seed = None if req.seed == -1 else req.seed % MAX_SEED
        jobs = []
        context = self.max_context
        for ids in prompts:
            n_predict: int | None = req.n_predict
            if n_predict == -1 or n_predict > self.limits.max_tokens:
                n_predict = None  # the cap, or what fits
            elif context is not None and len(ids) < context < len(ids) + n_predict:
                n_predict = context - len(ids)  # llama.cpp generates until the context is full
            params = self._params(ids, max(1, n_predict) if n_predict is not None else None, "n_predict",
                                  temperature=0.0 if greedy else req.temperature, top_p=min(1.0, req.top_p),
                                  top_k=max(0, req.top_k), seed=seed, stop=stops)
            if req.ignore_eos:
                params = params.replace(ignore_eos=True)
            jobs.append(Job(ids, params, req.n_cmpl, min(req.n_probs, MAX_LOGPROBS) if req.n_probs else 0))
        return jobs

    # ------------------------------------------------------------------ submitting
    def time_limit(self, t_max_predict_ms: int = 0) -> float:
        limit = self.limits.time_limit_s
        return min(limit, t_max_predict_ms / 1000) if t_max_predict_ms > 0 else limit

    def submit(self, jobs: list[Job], time_limit_s: float) -> list[RequestHandle]:
        """All handles of a request, prompt-major; nothing stays submitted if one submission is refused."""
        scheduler = self.scheduler
        assert scheduler is not None, "jobs come from a ready service"
        handles: list[RequestHandle] = []
        try:
            for job in jobs:
                for i in range(job.n):
                    seed = (job.params.seed + i) % MAX_SEED
                    params = SamplingParams(**{**job.params.to_dict(), "seed": seed})
                    handles.append(scheduler.submit(job.ids, params, logprobs=job.logprobs,
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


def _max_tokens(req: ChatRequest | FimRequest) -> int | None:
    """``max_tokens`` or OpenAI's newer ``max_completion_tokens``, refusing both at once."""
    if req.max_tokens is not None and req.max_completion_tokens is not None:
        raise APIError(400, "give max_tokens or max_completion_tokens, not both", param="max_tokens")
    return req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens


async def current_service(request: Request) -> Service:
    """The app's service, for the routes (a FastAPI dependency). Async on purpose: FastAPI runs a
    plain ``def`` dependency in its thread pool, a thread hop per request that the model loop's
    thread slows down (it cost a keystroke about 3 ms at p50)."""
    return request.app.state.service
