"""Continuous batching: one model loop, many requests, each streamed as it decodes (no HTTP here).

``Scheduler.submit`` checks a request, queues it and returns a ``RequestHandle`` at once; a single
thread owns the model and, each iteration:

1. drops the rows whose client cancelled or whose time limit passed (decoding or still prefilling)
   and finishes their handles;
2. admits waiting requests while fewer than ``max_batch`` rows are running;
3. feeds one prefill piece (``prefill_chunk`` tokens) of the prefilling request with the fewest
   prompt tokens left to feed (counting what the ``PromptCache`` holds), so that a keystroke, which
   has a few tokens to feed, does not wait behind cold prompts of a thousand; a request overtaken
   ``MAX_PASSED_OVER`` times by younger ones goes next whatever its length, so none starves. A request whose prompt
   is in samples its first token and joins the decode batch (its cache stacked onto the batch's);
4. runs one decode step for every decoding row, each row with its own sampling parameters and
   ``torch.Generator``; rows that finish leave the batch at once.

A request's generator is seeded as ``Engine.generate`` seeds its first row (``params.seed``), so a
request's output is the one ``Engine.generate(prompt, params)`` gives alone, whatever else shares
the batch (up to float summation order; the tests check equality). The ``n`` samples of one API
request are ``n`` submits with seeds ``seed + i``; the second and later ones find the whole prompt
in the prompt cache and skip its prefill.

Events reach consumers through a per-handle queue: a blocking iterator for threads, an async
iterator that the loop thread wakes with ``call_soon_threadsafe`` (no thread parked per waiting
stream). An unexpected exception in the loop ends the requests it touched with finish reason
``"error"``; the loop goes on serving.

The scheduler knows the model only through the engine's step (``smallcode.runtime.step``) and
respects its ``StepLimits``: at most ``max_rows`` requests run at once (a transformers ``HFStep``:
one), a step whose caches cannot be kept gets no prompt cache, and one that takes a prompt in one
call gets it in one piece.

Threads and OpenMP: build the engine in a thread that has ended by the time requests come (as
``smallcode serve`` does, loading in a loader thread), or in no other thread than this loop. An
OpenMP thread pool that another live thread left behind (the main thread, having built the model)
makes the loop's multi-threaded regions wake their workers the slow way: decode steps of ``nano``
took 3.5 ms instead of 1.8 ms on two cores.

With an engine that speculates (``Engine(speculation=...)``), each decode step is the engine's
``advance``: rows with a guess get it verified in the same model call, so rows accept different
numbers of tokens in one step (each token still reaches the handle as its own event); prompt reuse
and cancellation are unchanged. ``Metrics`` counts tokens proposed and accepted.

What this does not do: preemption (a running row keeps its cache until it ends) or priorities.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import torch

from smallcode.errors import UserError
from smallcode.runtime.engine import Engine, GenerationError, Prefill, PromptCache, Row
from smallcode.runtime.metrics import Metrics
from smallcode.runtime.sampling import SamplingParams, choose
from smallcode.runtime.speculative import SpecRow
from smallcode.runtime.step import StepCache, stack_caches

log = logging.getLogger(__name__)

MAX_LOGPROBS = 20
"""Most alternatives per token a request may ask for."""
MAX_PASSED_OVER = 8
"""Prefill pieces of younger, shorter requests a prefilling request lets go first before it goes itself."""


class QueueFull(UserError, RuntimeError):
    """``submit`` found every row busy and ``max_queue`` requests waiting (or the scheduler closed);
    try again later."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
        """A hint for the 503's Retry-After header."""


@dataclass
class TokenLogprob:
    token: str
    """The token's text."""
    logprob: float
    top: list[tuple[str, float]]
    """Up to k most likely (text, logprob), best first."""
    top_ids: list[int] = field(default_factory=list)
    """The token ids of ``top``, in its order (texts may be shared: the pieces of one character)."""


@dataclass
class Event:
    text: str
    """New text that may be shown (text a stop sequence may still claim is held back)."""
    token_ids: list[int]
    """Tokens sampled since the last event (end-of-text is not one of them)."""
    logprobs: list[TokenLogprob] | None
    """One per token in ``token_ids`` when asked for, else None."""
    finish_reason: str | None = None
    """None while running; then "stop", "eos", "length", "cancelled", "timeout" or "error"."""


class RequestHandle:
    """The client side of one submitted request: its events, its token counts, and ``cancel``.

    Iterate it (``for`` or ``async for``) once; iteration ends after the event that carries a
    ``finish_reason``. Leaving an iteration before that cancels the request: nobody would read what
    it produces.
    """

    def __init__(self, prompt_tokens: int, wake: threading.Condition) -> None:
        self.prompt_tokens = prompt_tokens
        self.completion_tokens = 0
        self.cached_tokens = 0
        """Prompt tokens taken from the prompt cache instead of being prefilled."""
        self.finish_reason: str | None = None
        self._wake = wake
        self._cond = threading.Condition()
        self._events: deque[Event] = deque()
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []
        self._cancelled = False

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    def cancel(self) -> None:
        """Ask the loop to drop this request; it ends with "cancelled" within one step (no-op once finished)."""
        self._cancelled = True
        with self._wake:  # an idle loop must look again, e.g. at a request still waiting for a row
            self._wake.notify_all()

    def __iter__(self) -> Iterator[Event]:
        finished = False
        try:
            while True:
                with self._cond:
                    while not self._events:
                        self._cond.wait()
                    event = self._events.popleft()
                finished = event.finish_reason is not None
                yield event
                if finished:
                    return
        finally:
            if not finished:
                self.cancel()

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._aiter()

    async def _aiter(self) -> AsyncIterator[Event]:
        ready = asyncio.Event()
        waiter = (asyncio.get_running_loop(), ready)
        with self._cond:
            self._waiters.append(waiter)
        finished = False
        try:
            while True:
                with self._cond:
                    event = self._events.popleft() if self._events else None
                    if event is None:  # cleared under the lock, so a later _emit's set() is not lost
                        ready.clear()
                if event is None:
                    await ready.wait()
                    continue
                finished = event.finish_reason is not None
                yield event
                if finished:
                    return
        finally:
            with self._cond:
                self._waiters.remove(waiter)
            if not finished:
                self.cancel()

    def _emit(self, event: Event) -> None:
        """Called by the loop thread: queue ``event`` and wake whoever is waiting for it."""
        if event.finish_reason is not None:
            self.finish_reason = event.finish_reason
        with self._cond:
            self._events.append(event)
            self._cond.notify_all()
            waiters = list(self._waiters)
        for loop, ready in waiters:
            try:
                loop.call_soon_threadsafe(ready.set)
            except RuntimeError:  # that consumer's event loop is closed; nobody is left to wake
                pass


@dataclass(eq=False)
class _Request:
    handle: RequestHandle
    ids: list[int]
    params: SamplingParams
    logprobs: int
    generator: torch.Generator
    submitted: float
    deadline: float | None
    row: Row
    prefill: Prefill | None = None
    next_token: int = 0
    """The last sampled token, fed to the model by the next decode step."""
    last_token_at: float | None = None
    left: int | None = None
    """Prompt tokens still to feed, estimated before its prefill starts (exact after)."""
    passed_over: int = 0
    spec: SpecRow | None = None
    """Its speculation state while decoding, when the engine speculates."""


@dataclass(frozen=True)
class SlotView:
    """What ``Scheduler.slots`` shows of one running request (a copy: it does not change later)."""

    prompt_tokens: int
    completion_tokens: int
    state: str
    """"prefilling" (its prompt is going in) or "decoding"."""
    params: SamplingParams


class Scheduler:
    """Continuous batching over one ``Engine`` (see the module docstring). Thread-safe ``submit``."""

    def __init__(self, engine: Engine, *, max_batch: int = 16, max_queue: int = 64, prompt_cache_mb: float = 256,
                 prefill_chunk: int = 256, batching: bool = True, metrics: Metrics | None = None) -> None:
        for name, value in (("max_batch", max_batch), ("prefill_chunk", prefill_chunk)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if not isinstance(max_queue, int) or max_queue < 0:
            raise ValueError(f"max_queue must be an integer >= 0, got {max_queue!r}")
        if not prompt_cache_mb >= 0:
            raise ValueError(f"prompt_cache_mb must be >= 0, got {prompt_cache_mb!r}")
        self.engine = engine
        self.metrics = metrics if metrics is not None else Metrics()
        self.max_context = engine.max_context
        limits = engine.limits
        self.max_batch = max_batch if batching else 1  # the one-request-at-a-time baseline
        if limits.max_rows is not None:
            self.max_batch = min(self.max_batch, limits.max_rows)
        self.max_queue = max_queue
        self.prefill_chunk = prefill_chunk
        self.prompt_cache = PromptCache(int(prompt_cache_mb * 2**20) if limits.prompt_cache else 0)
        self._reuse = self.prompt_cache if limits.prompt_cache else None
        """The prompt cache Prefill may read and fill: none for a step whose caches cannot be kept."""
        self._chunk = prefill_chunk if limits.prefill_pieces else None
        self._lock = threading.Condition()
        """Guards ``_waiting`` and ``_closed``; the loop waits on it when there is nothing to do."""
        self._waiting: deque[_Request] = deque()
        self._closed = False
        # Owned by the loop thread alone:
        self._prefilling: list[_Request] = []
        self._decoding: list[_Request] = []
        """Rows of ``_cache``, in order."""
        self._cache: StepCache | None = None
        self._rows = 0
        """Running requests as of the last admission (exact or an overestimate): ``submit``'s view."""
        self._request_s = 1.0
        """Running average of a request's duration, for the Retry-After hint."""
        self._thread = threading.Thread(target=self._loop, name="smallcode-scheduler", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ client side
    def submit(self, ids: list[int], params: SamplingParams, *, logprobs: int = 0,
               time_limit_s: float | None = None) -> RequestHandle:
        """Queue a request; ``GenerationError`` for a bad one, ``QueueFull`` when the queue is full."""
        if not isinstance(params, SamplingParams):
            raise GenerationError(f"params must be SamplingParams, got {type(params).__name__}")
        if not isinstance(ids, list):
            raise GenerationError(f"the prompt must be a list of token ids, got {type(ids).__name__}")
        self.engine.check([ids], params)
        if isinstance(logprobs, bool) or not isinstance(logprobs, int) or not 0 <= logprobs <= MAX_LOGPROBS:
            raise GenerationError(f"logprobs must be an integer in [0, {MAX_LOGPROBS}], got {logprobs!r}")
        if time_limit_s is not None and not time_limit_s > 0:
            raise GenerationError(f"time_limit_s must be > 0, got {time_limit_s!r}")
        seed = params.seed if params.seed is not None else random.randrange(2**31)
        now = time.monotonic()
        handle = RequestHandle(len(ids), self._lock)
        request = _Request(handle, list(ids), params, logprobs,
                           torch.Generator(device=self.engine.device).manual_seed(seed), now,
                           None if time_limit_s is None else now + time_limit_s, Row(len(ids), params))
        with self._lock:
            if self._closed:
                raise QueueFull("the scheduler is closed (shutting down)", retry_after_s=1.0)
            # Rows not yet taken count as room: a burst of max_batch submits into an idle server fits.
            if len(self._waiting) + self._rows >= self.max_batch + self.max_queue:
                self.metrics.requests.labels(outcome="rejected").inc()
                waits = (len(self._waiting) + 1) / self.max_batch
                raise QueueFull(f"{self._rows} requests are running and {len(self._waiting)} waiting",
                                retry_after_s=round(min(60.0, max(1.0, waits * self._request_s)), 1))
            self._waiting.append(request)
            self.metrics.queue_depth.set(len(self._waiting))
            self._lock.notify_all()
        return handle

    def close(self) -> None:
        """Stop the loop; requests not finished yet end with "cancelled". Idempotent."""
        with self._lock:
            self._closed = True
            self._lock.notify_all()
        if self._thread is not threading.current_thread():
            self._thread.join()

    # ------------------------------------------------------------------ the model loop
    def _loop(self) -> None:
        with torch.inference_mode():
            while True:
                with self._lock:
                    while not (self._closed or self._waiting or self._prefilling or self._decoding):
                        self._lock.wait()
                    if self._closed:
                        break
                    self._admit(time.monotonic())
                try:
                    self._step()
                except Exception:  # a bug must not take the server down: end what it touched, go on
                    log.exception("the scheduler's model loop failed; its running requests end with 'error'")
                    for request in self._prefilling + self._decoding:
                        self._finish(request, "error")
                    self._prefilling, self._decoding, self._cache = [], [], None
                self._rows = len(self._prefilling) + len(self._decoding)  # only this thread writes it
                self.metrics.batch_size.set(self._rows)
            self._shutdown()

    def _admit(self, now: float) -> None:
        """Under the lock: drop waiting requests that are cancelled or out of time, admit while rows are free."""
        if any(self._over(r, now) for r in self._waiting):
            still = deque(r for r in self._waiting if not self._end_if_over(r, now))
            self._waiting = still
        while self._waiting and len(self._prefilling) + len(self._decoding) < self.max_batch:
            self._prefilling.append(self._waiting.popleft())
        self._rows = len(self._prefilling) + len(self._decoding)
        self.metrics.queue_depth.set(len(self._waiting))

    def _step(self) -> None:
        now = time.monotonic()
        self._prefilling = [r for r in self._prefilling if not self._end_if_over(r, now)]
        gone = [i for i, r in enumerate(self._decoding) if self._end_if_over(r, now)]
        if gone:
            self._remove(gone)
        if self._prefilling:
            request = self._next_prefill()
            try:
                if self._prefill_piece(request):
                    self._prefilling.remove(request)
                    self._start_decoding(request)
            except Exception:  # this prompt's problem; the decode batch is untouched (it joins last)
                log.exception("prefill failed")
                if request in self._prefilling:
                    self._prefilling.remove(request)
                self._finish(request, "error")
        if self._decoding:
            self._decode()

    def _next_prefill(self) -> _Request:
        """Shortest remaining prefill first (ties: the oldest), unless one has waited long enough."""
        waiting = self._prefilling
        if len(waiting) == 1:
            return waiting[0]
        starved = [r for r in waiting if r.passed_over >= MAX_PASSED_OVER]
        if starved:
            chosen = starved[0]
        else:
            for r in waiting:
                if r.prefill is not None:
                    r.left = len(r.ids) - r.prefill.pos
                elif r.left is None:  # once: a lookup per request per step would cost more than it saves
                    r.left = len(r.ids) - self.prompt_cache.reusable(r.ids)
            chosen = min(waiting, key=lambda r: r.left)  # type: ignore[arg-type, return-value]
        # Only the older requests it overtook were passed over: equal cold prompts stay first come,
        # first served (each then starts decoding as early as it can), instead of taking turns.
        for r in waiting:
            if r is chosen:
                chosen.passed_over = 0
                break
            r.passed_over += 1
        return chosen

    def _over(self, request: _Request, now: float) -> bool:
        return request.handle.cancelled or (request.deadline is not None and now >= request.deadline)

    def _end_if_over(self, request: _Request, now: float) -> bool:
        if request.handle.cancelled:
            self.metrics.cancellations.inc()
            self._finish(request, "cancelled")
            return True
        if request.deadline is not None and now >= request.deadline:
            self._finish(request, "timeout", request.row.release(everything=True))
            return True
        return False

    def _prefill_piece(self, request: _Request) -> bool:
        """Feed one piece of ``request``'s prompt; True once all of it is in."""
        prefill = request.prefill
        if prefill is None:
            prefill = request.prefill = Prefill(self.engine, request.ids, extra_slots=request.params.max_tokens,
                                                chunk=self._chunk, prompt_cache=self._reuse)
            m = self.metrics
            m.prompt_tokens.inc(len(request.ids))
            request.handle.cached_tokens = prefill.cached_tokens
            if prefill.cached_tokens:
                m.cache_hits.inc()
                m.cached_tokens.inc(prefill.cached_tokens)
            else:
                m.cache_misses.inc()
        if not prefill.done:
            prefill.step()
            self.metrics.prefill_steps.inc()
            self.metrics.cache_bytes.set(self.prompt_cache.nbytes)
        return prefill.done

    def _start_decoding(self, request: _Request) -> None:
        """The prompt is in: sample the first token from its logits and join the decode batch."""
        prefill = request.prefill
        assert prefill is not None and prefill.logits is not None
        request.prefill = None
        tokens, logp = choose(prefill.logits, [request.params], [request.generator], logprobs=request.logprobs > 0)
        token = int(tokens[0])
        if self._take(request, token, None if logp is None else logp[0]):
            return
        request.next_token = token
        request.spec = self.engine.spec_row(request.ids, request.params)
        if request.spec is not None:
            request.spec.extend([token])
        self._cache = prefill.cache if self._cache is None else stack_caches([self._cache, prefill.cache])
        self._decoding.append(request)

    def _decode(self) -> None:
        """One step for every decoding row (one token each, or several where a guess was accepted);
        finished rows leave the batch."""
        assert self._cache is not None
        rows, m = self._decoding, self.metrics
        steps = self.engine.advance(self._cache, [r.next_token for r in rows], [r.params for r in rows],
                                    [r.generator for r in rows],
                                    [r.spec for r in rows] if self.engine.speculator is not None else None,
                                    logprobs=any(r.logprobs for r in rows))
        m.decode_steps.inc()
        finished = []
        for i, (request, step) in enumerate(zip(rows, steps, strict=True)):
            request.next_token = step.tokens[-1]
            if step.proposed:
                m.spec_proposed.inc(step.proposed)
                m.spec_accepted.inc(step.accepted)
            for j, token in enumerate(step.tokens):
                if self._take(request, token, None if step.logprobs is None else step.logprobs[j]):
                    finished.append(i)
                    break
        if finished:
            self._remove(finished)

    def _remove(self, indices: list[int]) -> None:
        """Take rows out of the decode batch (their handles are already finished)."""
        drop = set(indices)
        keep = [i for i in range(len(self._decoding)) if i not in drop]
        self._decoding = [self._decoding[i] for i in keep]
        self._cache = self._cache.select(keep) if keep and self._cache is not None else None

    def _take(self, request: _Request, token: int, logp_V: torch.Tensor | None) -> bool:
        """Hand a sampled token to the request's row and its handle; True when the request finished."""
        row, handle, m = request.row, request.handle, self.metrics
        before = len(row.ids)
        text = row.push(token, self.engine.tokenizer)
        new_ids = row.ids[before:]  # empty for end-of-text
        now = time.monotonic()
        if request.last_token_at is None:
            m.time_to_first_token.observe(now - request.submitted)
        else:
            m.time_per_token.observe(now - request.last_token_at)
        request.last_token_at = now
        handle.completion_tokens = len(row.ids)
        m.completion_tokens.inc(len(new_ids))
        logprobs = None
        if request.logprobs:
            assert logp_V is not None
            logprobs = [self._logprob(t, logp_V, request.logprobs) for t in new_ids]
        if row.finish is not None:
            self._finish(request, row.finish, text, new_ids, logprobs)
            return True
        handle._emit(Event(text, new_ids, logprobs))
        return False

    def _logprob(self, token: int, logp_V: torch.Tensor, k: int) -> TokenLogprob:
        decode = self.engine.tokenizer.decode
        values, ids = logp_V.topk(min(k, logp_V.shape[-1]))
        kept = [(i, v) for i, v in zip(ids.tolist(), values.tolist(), strict=True) if v != float("-inf")]
        return TokenLogprob(decode([token]), float(logp_V[token]), [(decode([i]), v) for i, v in kept],
                            [i for i, _ in kept])

    def _finish(self, request: _Request, reason: str, text: str = "", token_ids: list[int] | None = None,
                logprobs: list[TokenLogprob] | None = None) -> None:
        if request.handle.finish_reason is not None:  # already ended (an error after its last token)
            return
        if request.logprobs and logprobs is None:
            logprobs = []
        request.prefill = None
        request.handle._emit(Event(text, token_ids or [], logprobs, reason))
        self.metrics.requests.labels(outcome=reason).inc()
        # An average over recent requests, only used to size the Retry-After hint.
        self._request_s = 0.9 * self._request_s + 0.1 * (time.monotonic() - request.submitted)

    def _shutdown(self) -> None:
        with self._lock:
            pending = list(self._waiting) + self._prefilling + self._decoding
            self._waiting.clear()
        for request in pending:
            self._finish(request, "cancelled")
        self._prefilling, self._decoding, self._cache = [], [], None
        self.metrics.queue_depth.set(0)
        self.metrics.batch_size.set(0)

    def slots(self) -> list[SlotView]:
        """The running requests (at most ``max_batch``); callable from any thread.

        The loop thread owns the lists and changes them meanwhile: they are copied (one attribute
        read and one list copy each, atomic under the GIL), and each view's state is read from its
        own token count (a request decodes from its first token on), so a view is consistent even
        when its request moved on between the copy and the read. A request moving from prefilling
        to decoding between the two copies is shown once, or, for that instant, not at all: a
        monitoring view, not a count to rely on.
        """
        requests = list(self._prefilling) + list(self._decoding)
        seen: set[int] = set()
        views = []
        for r in requests:
            if id(r) in seen or r.handle.finish_reason is not None:
                continue
            seen.add(id(r))
            done = r.handle.completion_tokens
            views.append(SlotView(r.handle.prompt_tokens, done, "decoding" if done else "prefilling", r.params))
        return views
