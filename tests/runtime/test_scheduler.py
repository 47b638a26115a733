"""The serving scheduler against the engine alone: continuous batching gives each request what
``Engine.generate`` gives it alone; prompt reuse is exact; cancellation, time limits, the queue
bound, logprobs, errors in the loop and close() behave as documented (checked through the metrics)."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import torch

from factories import make_model, wait_for  # type: ignore[import-not-found]
from smallcode.model import SmallCodeLM
from smallcode.runtime import Engine, SamplingParams
from smallcode.runtime.engine import Completion, GenerationError
from smallcode.runtime.scheduler import Event, QueueFull, RequestHandle, Scheduler
from smallcode.tokenizer import CodeTokenizer

CODE = [
    "def add(a, b):\n    return",
    "import json\n",
    "class Decoder:\n    def __init__(self",
    "for key, value in items:\n",
    "    if not isinstance(obj, dict):\n        raise",
    "def encode(self, o):\n    \"\"\"Return a JSON string",
]


@pytest.fixture(scope="module")
def tokenizer(tiny_tokenizer: CodeTokenizer) -> CodeTokenizer:
    return tiny_tokenizer


def make_engine(tokenizer: CodeTokenizer, **overrides: object) -> Engine:
    # peaked logits (factories.make_model), so float summation order never flips a token
    return Engine(make_model(**overrides), tokenizer)


@pytest.fixture(scope="module")
def engine(tokenizer: CodeTokenizer) -> Engine:
    return make_engine(tokenizer)


@pytest.fixture
def scheduler_factory() -> Iterator[Callable[..., Scheduler]]:
    made: list[Scheduler] = []

    def make(engine: Engine, **kwargs: object) -> Scheduler:
        made.append(Scheduler(engine, **kwargs))
        return made[-1]

    yield make
    for s in made:
        s.close()


class SlowModel:
    """The engine's model behind a gate: each call waits ``delay`` seconds, or until ``open`` is set,
    and may raise once; everything else is the model's own."""

    def __init__(self, model: SmallCodeLM, delay: float = 0.0) -> None:
        self.model, self.delay = model, delay
        self.open = threading.Event()
        self.open.set()
        self.entered = threading.Event()
        self.fail_next_decode = self.fail_next_prefill = False

    def __call__(self, input_ids: torch.Tensor, *args: object, **kwargs: object):
        self.entered.set()
        self.open.wait()
        time.sleep(self.delay)
        if self.fail_next_decode and input_ids.shape[1] == 1:
            self.fail_next_decode = False
            raise RuntimeError("injected failure")
        if self.fail_next_prefill and input_ids.shape[1] > 1:
            self.fail_next_prefill = False
            raise RuntimeError("injected failure")
        return self.model(input_ids, *args, **kwargs)

    def __getattr__(self, name: str) -> object:
        return getattr(self.model, name)


@pytest.fixture
def slow_engine(tokenizer: CodeTokenizer) -> Iterator[tuple[Engine, SlowModel]]:
    engine = make_engine(tokenizer)
    slow = SlowModel(engine.model)
    engine.model = slow  # type: ignore[assignment]
    yield engine, slow
    slow.open.set()


def drain(handle: RequestHandle) -> tuple[list[int], str, list[Event]]:
    events = list(handle)
    return [t for e in events for t in e.token_ids], "".join(e.text for e in events), events


def alone(engine: Engine, ids: list[int], params: SamplingParams) -> Completion:
    return engine.generate_ids([ids], params)[0]


@pytest.fixture(scope="module")
def mixed(engine: Engine) -> tuple[list[tuple[list[int], SamplingParams]], list[Completion]]:
    """16 requests: greedy, seeded sampling, stop strings (taken from the greedy text so they hit),
    different lengths, and two prompts asked twice (as the n samples of one API request are)."""
    out = []
    for i in range(16):
        ids = engine.tokenizer.encode(CODE[i % len(CODE)])
        kind = i % 4
        if kind == 0:
            params = SamplingParams(max_tokens=4 + i)
        elif kind == 1:
            params = SamplingParams(max_tokens=20, temperature=0.8, top_k=40, seed=100 + i)
        elif kind == 2:
            text = alone(engine, ids, SamplingParams(max_tokens=12)).text
            params = SamplingParams(max_tokens=16, stop=[text[6:8] or "\n"])
        else:
            params = SamplingParams(max_tokens=10, temperature=1.2, top_p=0.9, seed=7, ignore_eos=True)
        out.append((ids, params))
    return out, [alone(engine, ids, p) for ids, p in out]


@pytest.mark.parametrize("max_batch", [16, 5])
def test_concurrent_requests_get_what_they_get_alone(engine: Engine, mixed, scheduler_factory, max_batch: int) -> None:
    requests, expected = mixed
    assert any(c.finish_reason == "stop" for c in expected)
    sched = scheduler_factory(engine, max_batch=max_batch, prefill_chunk=4)

    threads = threading.active_count()

    async def consume() -> list[tuple[list[int], str, str | None]]:
        handles = [sched.submit(ids, p) for ids, p in requests]

        async def one(h: RequestHandle) -> tuple[list[int], str, str | None]:
            events = [e async for e in h]
            assert threading.active_count() == threads  # no thread parked per waiting stream
            return [t for e in events for t in e.token_ids], "".join(e.text for e in events), events[-1].finish_reason

        return await asyncio.gather(*(one(h) for h in handles))

    got = asyncio.run(consume())
    for (ids, text, reason), want in zip(got, expected, strict=True):
        assert ids == want.token_ids
        assert text == want.text
        assert reason == want.finish_reason
    m = sched.metrics
    steps = m.value("smallcode_decode_steps_total")
    assert 0 < steps < sum(len(c.token_ids) for c in expected) / 2  # rows really shared decode steps
    assert m.value("smallcode_completion_tokens_total") == sum(len(c.token_ids) for c in expected)
    for c in expected:
        assert m.value("smallcode_requests_total", outcome=c.finish_reason) >= 1
    assert m.value("smallcode_time_to_first_token_seconds_count") == 16
    # the repeated prompts (same ids, later submits) found the whole prompt cached
    assert m.value("smallcode_prompt_cache_hits_total") >= 16 - len(CODE) - 1


def test_one_at_a_time_without_batching(engine: Engine, scheduler_factory) -> None:
    params = SamplingParams(max_tokens=6, ignore_eos=True)
    sched = scheduler_factory(engine, batching=False)
    handles = [sched.submit(engine.tokenizer.encode(c), params) for c in CODE[:3]]
    for h, c in zip(handles, CODE[:3], strict=True):
        assert drain(h)[0] == alone(engine, engine.tokenizer.encode(c), params).token_ids
    assert sched.metrics.value("smallcode_decode_steps_total") == 3 * 5  # no step was shared


@pytest.mark.parametrize(("window", "n_global"), [(64, 0), (8, 0), (8, 2)])
def test_prompt_reuse_is_exact(tokenizer: CodeTokenizer, scheduler_factory, window: int, n_global: int) -> None:
    engine = make_engine(tokenizer, window=window, n_global=n_global)
    base = tokenizer.encode("\n".join(CODE))  # longer than the 8-position windows
    assert len(base) > 30
    grown = base + tokenizer.encode(" x = 1")
    changed = base[:-2] + [base[-1], 37, 38]
    params = SamplingParams(max_tokens=10)
    sched = scheduler_factory(engine, prefill_chunk=16)
    cached = []
    for ids in (base, grown, changed, base):
        h = sched.submit(ids, params)
        assert drain(h)[0] == alone(engine, ids, params).token_ids  # the reference prefills cold
        cached.append(h.cached_tokens)
    assert cached[0] == 0
    assert cached[1] == len(base)  # an extension feeds only its new tokens
    assert cached[2] == len(base) - 2  # truncated to what they share (spare slots, if the ring wrapped)
    assert cached[3] == len(base)  # the same prompt again: no prefill at all
    m = sched.metrics
    assert m.value("smallcode_prompt_cache_reused_tokens_total") == sum(cached)
    assert m.value("smallcode_prompt_cache_hits_total") == 3
    assert m.value("smallcode_prompt_cache_misses_total") == 1
    assert m.value("smallcode_prompt_cache_bytes") > 0


def test_typing_at_the_cursor_reuses_all_but_the_last_tokens(tokenizer: CodeTokenizer, scheduler_factory) -> None:
    # SPM layout: suffix, then prefix, then the middle token. Each keystroke re-tokenizes the word
    # being typed (the last prefix token changes or one is added) in front of the middle token.
    engine = make_engine(tokenizer, window=8, n_global=2)
    middle, context = 3, tokenizer.encode("\n".join(CODE))
    params = SamplingParams(max_tokens=4)
    sched = scheduler_factory(engine, prefill_chunk=16)
    word = [40]
    for step in range(8):
        word = word[:-1] + [41 + step] if step % 2 else word + [50 + step]
        ids = context + word + [middle]
        h = sched.submit(ids, params)
        assert drain(h)[0] == alone(engine, ids, params).token_ids
        if step:
            assert h.cached_tokens >= len(ids) - 3
    assert sched.metrics.value("smallcode_prompt_cache_misses_total") == 1


def test_n_samples_of_one_prompt_prefill_it_once(engine: Engine, scheduler_factory) -> None:
    ids = engine.tokenizer.encode(CODE[2] * 3)
    params = SamplingParams(max_tokens=8, temperature=1.0, seed=11)
    sched = scheduler_factory(engine, prefill_chunk=8)
    first = sched.submit(ids, params)
    drain(first)
    pieces = sched.metrics.value("smallcode_prefill_steps_total")
    assert pieces >= 2
    samples = [sched.submit(ids, params.replace(seed=11 + i)) for i in range(1, 4)]
    want = engine.generate_ids([ids], params, n=4)  # row i draws from seed 11 + i
    for i, h in enumerate(samples, start=1):
        assert drain(h)[0] == want[i].token_ids
        assert h.cached_tokens == len(ids)
    assert sched.metrics.value("smallcode_prefill_steps_total") == pieces


def test_cancel_mid_decode_frees_the_row_within_one_step(slow_engine, scheduler_factory) -> None:
    engine, slow = slow_engine
    slow.delay = 0.001  # the loop cannot run to max_tokens while the test reads its first events
    sched = scheduler_factory(engine)
    ids = engine.tokenizer.encode(CODE[0])
    other_params = SamplingParams(max_tokens=40, ignore_eos=True)
    long = sched.submit(ids, SamplingParams(max_tokens=200, ignore_eos=True))
    other = sched.submit(engine.tokenizer.encode(CODE[1]), other_params)
    it = iter(long)
    for _ in range(3):
        next(it)
    # The loop is held at its next model call while the row's tokens are counted, so that it cannot
    # run steps between the cancel and the count. At most the one step already past its check of the
    # cancellation adds a token after it; the next step drops the row.
    slow.open.clear()
    long.cancel()
    tokens_at_cancel = long.completion_tokens
    slow.open.set()
    rest = list(it)
    assert rest[-1].finish_reason == "cancelled"
    tokens_then = long.completion_tokens
    assert tokens_at_cancel <= tokens_then <= tokens_at_cancel + 1 < 200
    assert drain(other)[0] == alone(engine, engine.tokenizer.encode(CODE[1]), other_params).token_ids
    assert long.completion_tokens == tokens_then
    m = sched.metrics
    assert m.value("smallcode_cancellations_total") == 1
    assert m.value("smallcode_requests_total", outcome="cancelled") == 1
    long.cancel()  # idempotent
    assert m.value("smallcode_cancellations_total") == 1


def test_cancel_mid_prefill_stops_between_chunks(slow_engine, scheduler_factory) -> None:
    engine, slow = slow_engine
    slow.delay = 0.005
    sched = scheduler_factory(engine, prefill_chunk=4)
    ids = engine.tokenizer.encode("\n".join(CODE) * 2)
    assert len(ids) > 100  # 25+ pieces
    h = sched.submit(ids, SamplingParams(max_tokens=5))
    m = sched.metrics
    wait_for(lambda: m.value("smallcode_prefill_steps_total") >= 2, "two prefill pieces")
    seen = m.value("smallcode_prefill_steps_total")
    h.cancel()
    _, text, events = drain(h)
    assert [e.finish_reason for e in events] == ["cancelled"] and text == ""
    assert m.value("smallcode_prefill_steps_total") <= seen + 2 < len(ids) / 4
    assert m.value("smallcode_decode_steps_total") == 0
    assert h.completion_tokens == 0


def test_leaving_an_async_stream_cancels_it(engine: Engine, scheduler_factory) -> None:
    sched = scheduler_factory(engine)
    h = sched.submit(engine.tokenizer.encode(CODE[0]), SamplingParams(max_tokens=200, ignore_eos=True))

    async def read_two() -> None:
        stream = aiter(h)
        await anext(stream)
        await anext(stream)
        await stream.aclose()  # what a disconnecting client's handler does

    asyncio.run(read_two())
    wait_for(lambda: h.finish_reason == "cancelled", "the cancellation")
    assert h.completion_tokens < 200


def test_queue_full_is_refused(slow_engine, scheduler_factory) -> None:
    engine, slow = slow_engine
    sched = scheduler_factory(engine, max_batch=1, max_queue=1)
    slow.open.clear()
    ids, params = engine.tokenizer.encode(CODE[0]), SamplingParams(max_tokens=3)
    running = sched.submit(ids, params)
    assert slow.entered.wait(10)  # the first request holds the only row
    waiting = sched.submit(ids, params)
    with pytest.raises(QueueFull) as refused:
        sched.submit(ids, params)
    assert refused.value.retry_after_s > 0
    assert sched.metrics.value("smallcode_requests_total", outcome="rejected") == 1
    slow.open.set()
    want = alone(engine, ids, params).token_ids
    assert drain(running)[0] == want and drain(waiting)[0] == want


def test_free_rows_count_as_room(slow_engine, scheduler_factory) -> None:
    engine, slow = slow_engine
    sched = scheduler_factory(engine, max_batch=4, max_queue=0)
    slow.open.clear()  # nothing finishes, nothing more is admitted while the loop is held
    ids, params = engine.tokenizer.encode(CODE[0]), SamplingParams(max_tokens=2)
    handles = [sched.submit(ids, params) for _ in range(4)]  # a burst of max_batch fits
    with pytest.raises(QueueFull):
        sched.submit(ids, params)
    slow.open.set()
    assert all(drain(h)[2][-1].finish_reason is not None for h in handles)


def test_time_limit_ends_with_timeout(slow_engine, scheduler_factory) -> None:
    engine, slow = slow_engine
    slow.delay = 0.02
    sched = scheduler_factory(engine)
    h = sched.submit(engine.tokenizer.encode(CODE[0]), SamplingParams(max_tokens=500, ignore_eos=True),
                     time_limit_s=0.3)
    ids, _, events = drain(h)
    assert events[-1].finish_reason == "timeout"
    assert 0 < len(ids) < 500 and h.completion_tokens == len(ids)
    assert sched.metrics.value("smallcode_requests_total", outcome="timeout") == 1


@pytest.mark.parametrize("temperature", [0.0, 1.5])
def test_logprobs_match_the_reference_logits(engine: Engine, scheduler_factory, temperature: float) -> None:
    sched = scheduler_factory(engine)
    prompt = engine.tokenizer.encode(CODE[4])
    params = SamplingParams(max_tokens=6, temperature=temperature, top_k=20, seed=3, ignore_eos=True)
    ids, _, events = drain(sched.submit(prompt, params, logprobs=3))
    logprobs = [lp for e in events for lp in (e.logprobs or [])]
    assert len(logprobs) == len(ids) == 6
    decode = engine.tokenizer.decode
    # the model's own log-probabilities, before temperature and top-k, whatever the request samples with
    with torch.no_grad():
        for i, (token, lp) in enumerate(zip(ids, logprobs, strict=True)):
            ref = engine.model(torch.tensor([prompt + ids[:i]])).logits[0, -1].log_softmax(-1)
            assert lp.token == decode([token])
            assert lp.logprob == pytest.approx(float(ref[token]), abs=1e-4)
            best = ref.topk(3)
            assert [t for t, _ in lp.top] == [decode([int(t)]) for t in best.indices]
            assert [v for _, v in lp.top] == pytest.approx(best.values.tolist(), abs=1e-4)
    plain = drain(sched.submit(prompt, SamplingParams(max_tokens=2)))[2]
    assert all(e.logprobs is None for e in plain)


def test_an_error_in_the_loop_ends_those_requests_and_the_loop_goes_on(slow_engine, scheduler_factory) -> None:
    engine, slow = slow_engine
    sched = scheduler_factory(engine)
    ids, params = engine.tokenizer.encode(CODE[0]), SamplingParams(max_tokens=5, ignore_eos=True)
    slow.fail_next_decode = True
    _, text, events = drain(sched.submit(ids, params))
    assert events[-1].finish_reason == "error"
    assert drain(sched.submit(ids, params))[0] == alone(engine, ids, params).token_ids
    assert sched.metrics.value("smallcode_requests_total", outcome="error") == 1
    # a prompt that fails to prefill ends alone; the rows already decoding carry on
    long_params = SamplingParams(max_tokens=30, ignore_eos=True)
    running = sched.submit(ids, long_params)
    it = iter(running)
    next(it)
    slow.fail_next_prefill = True
    assert drain(sched.submit(engine.tokenizer.encode(CODE[1]), params))[2][-1].finish_reason == "error"
    got = [t for e in it for t in e.token_ids]
    assert alone(engine, ids, long_params).token_ids[1:] == got
    assert sched.metrics.value("smallcode_requests_total", outcome="error") == 2


def test_close_finishes_pending_handles(slow_engine, scheduler_factory) -> None:
    engine, slow = slow_engine
    slow.delay = 0.005
    sched = scheduler_factory(engine, max_batch=1)
    params = SamplingParams(max_tokens=300, ignore_eos=True)
    handles = [sched.submit(engine.tokenizer.encode(c), params) for c in CODE[:3]]
    next(iter(handles[0]))
    sched.close()
    for h in handles:
        assert h.finish_reason == "cancelled"
        assert list(h)[-1].finish_reason == "cancelled"
    with pytest.raises(QueueFull):
        sched.submit(engine.tokenizer.encode(CODE[0]), params)
    sched.close()  # idempotent


def test_bad_requests_are_refused_before_the_loop(engine: Engine, scheduler_factory) -> None:
    sched = scheduler_factory(engine)
    ok = SamplingParams(max_tokens=4)
    for ids, params, kwargs, match in [
        ([], ok, {}, "empty"),
        ([1, 2, 99999], ok, {}, "outside the vocabulary"),
        ([1] * 10, SamplingParams(max_tokens=sched.max_context), {}, "positions"),
        ([1, 2], ok, {"logprobs": 50}, "logprobs"),
        ([1, 2], ok, {"time_limit_s": 0}, "time_limit_s"),
        ("abc", ok, {}, "list of token ids"),
    ]:
        with pytest.raises(GenerationError, match=match):
            sched.submit(ids, params, **kwargs)
    assert sched.metrics.value("smallcode_prompt_tokens_total") == 0
    with pytest.raises(ValueError, match="max_batch"):
        Scheduler(engine, max_batch=0)


def test_many_clients_submitting_and_cancelling_leave_the_loop_sound(engine: Engine, scheduler_factory) -> None:
    sched = scheduler_factory(engine, max_batch=6, max_queue=10, prefill_chunk=8, prompt_cache_mb=0.05)
    ended: list[str | None] = []
    lock = threading.Lock()

    def client(seed: int) -> None:
        rnd = random.Random(seed)
        for _ in range(20):
            ids = engine.tokenizer.encode(rnd.choice(CODE)) + [rnd.randrange(5, 300) for _ in range(rnd.randrange(4))]
            params = SamplingParams(max_tokens=rnd.randrange(1, 30), temperature=rnd.choice([0.0, 0.8]),
                                    seed=rnd.randrange(100), stop=rnd.choice([[], ["\n"], ["):"]]))
            try:
                h = sched.submit(ids, params, logprobs=rnd.choice([0, 2]), time_limit_s=rnd.choice([None, 0.05]))
            except QueueFull:
                continue
            how = rnd.randrange(3)  # cancel before reading, after two events, or never
            if how == 0:
                h.cancel()
            for n, _ in enumerate(h):
                if how == 1 and n == 1:
                    h.cancel()
            with lock:
                ended.append(h.finish_reason)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)
    assert len(ended) > 30 and set(ended) <= {"stop", "eos", "length", "cancelled", "timeout"}
    assert "cancelled" in ended
    ids, params = engine.tokenizer.encode(CODE[0]), SamplingParams(max_tokens=12)
    assert drain(sched.submit(ids, params))[0] == alone(engine, ids, params).token_ids
    assert sched.prompt_cache.nbytes <= sched.prompt_cache.max_bytes


class RecordingModel(SlowModel):
    """Also records the length of every input fed (prefill pieces are > 1, decode steps 1)."""

    def __init__(self, model: SmallCodeLM) -> None:
        super().__init__(model)
        self.fed: list[int] = []
        self.pieces: list[list[int]] = []

    def __call__(self, input_ids: torch.Tensor, *args: object, **kwargs: object):
        self.fed.append(input_ids.shape[1])
        self.pieces.append(input_ids[0].tolist())
        return super().__call__(input_ids, *args, **kwargs)


@pytest.mark.parametrize("passed_over", [8, 1])
def test_the_shortest_prefill_goes_first_and_a_long_one_still_gets_its_turn(
        tokenizer: CodeTokenizer, scheduler_factory: Callable[..., Scheduler], monkeypatch: pytest.MonkeyPatch,
        passed_over: int) -> None:
    import smallcode.runtime.scheduler as scheduler_module

    monkeypatch.setattr(scheduler_module, "MAX_PASSED_OVER", passed_over)
    engine = make_engine(tokenizer)
    model = RecordingModel(engine.model)
    engine.model = model  # type: ignore[assignment]
    rng = random.Random(0)
    long_ids = [rng.randrange(10, 500) for _ in range(160)]
    shorts = [[rng.randrange(10, 500) for _ in range(5)] for _ in range(3)]
    params = SamplingParams(max_tokens=1, temperature=0)
    scheduler = scheduler_factory(engine, prefill_chunk=16, prompt_cache_mb=0)
    model.open.clear()
    long = scheduler.submit(long_ids, params)
    wait_for(model.entered.is_set, "the long prompt's first piece")
    handles = [scheduler.submit(ids, params) for ids in shorts]
    model.open.set()
    results = [drain(h) for h in [long, *handles]]
    assert all(events[-1].finish_reason == "length" for _, _, events in results)
    pieces = [n for n in model.fed if n > 1]  # max_tokens=1: no decode steps at all
    # the long prompt: pieces of 16, the last 16 split by the snapshot 8 tokens before its end
    assert sorted(pieces) == sorted([16] * 9 + [8, 8] + [5] * 3)
    if passed_over == 8:  # the three short prompts right after the piece that was running
        assert pieces[:4] == [16, 5, 5, 5]
    else:  # passed over once, the long prompt goes next: short and long pieces take turns
        assert pieces[:6] == [16, 5, 16, 5, 16, 5]
    # each request still gets exactly what it gets alone
    for (ids, _, _), prompt in zip(results, [long_ids, *shorts], strict=True):
        assert ids == alone(make_engine(tokenizer), prompt, params).token_ids


def test_equal_cold_prompts_are_prefilled_first_come_first_served(
        tokenizer: CodeTokenizer, scheduler_factory: Callable[..., Scheduler]) -> None:
    """Shortest-first must not turn equal prompts into turn-taking (every first token late): the
    oldest one's pieces all go first, then the next one's."""
    engine = make_engine(tokenizer)
    model = RecordingModel(engine.model)
    engine.model = model  # type: ignore[assignment]
    rng = random.Random(1)
    prompts = [[rng.randrange(10, 500) for _ in range(200)] for _ in range(4)]  # 13+ pieces each
    scheduler = scheduler_factory(engine, prefill_chunk=16, prompt_cache_mb=0)
    model.open.clear()
    first = scheduler.submit(prompts[0], SamplingParams(max_tokens=1, temperature=0))
    wait_for(model.entered.is_set, "the first prompt's first piece")
    rest = [scheduler.submit(ids, SamplingParams(max_tokens=1, temperature=0)) for ids in prompts[1:]]
    model.open.set()
    for h in [first, *rest]:
        drain(h)
    # whose prompt each piece fed was (the prompts are random: a piece of 8+ tokens is in one only)
    owners = [next(i for i, ids in enumerate(prompts) if any(ids[k:k + len(piece)] == piece for k in range(200)))
              for piece in model.pieces if len(piece) > 1]
    assert owners == sorted(owners) and set(owners) == {0, 1, 2, 3}
