"""``SamplingParams.stop_loops``: a completion that repeats itself ends after one copy, by hand on texts
(``loop_cut``, ``loop_hold``), on a model made to loop (the engine, its stream, the scheduler and the
server's ``/infill``, which turns it on for editors), and never on text that does not loop."""

from __future__ import annotations

import httpx
import pytest
import torch

from factories import make_model  # type: ignore[import-not-found]
from smallcode.runtime import Engine, SamplingParams
from smallcode.runtime.engine import loop_cut, loop_hold
from smallcode.runtime.formats import prompt_format
from smallcode.runtime.scheduler import Scheduler
from smallcode.serve.app import create_app
from smallcode.tokenizer import CodeTokenizer

LOOP = "    return (x, a)\n"


@pytest.mark.parametrize(("text", "kept"), [
    ("def f():\n" + LOOP * 3, "def f():\n    return (x, a)"),
    ("def f():\n" + LOOP * 3 + "    ", "def f():\n    return (x, a)"),  # the next line's indentation came along
    ('x = 1\n"""\n    """\n    """\n    """\n', 'x = 1\n"""\n    """'),
    ("a\nb\na\nb\na\nb\n", "a\nb"),  # a block of two lines
    ("y = [" + "(x, a), " * 12, "y = [(x, a), "),  # inside a line: 96 characters of one 8-character unit
])
def test_loops_are_cut_after_one_copy(text: str, kept: str) -> None:
    cut = loop_cut(text)
    assert cut is not None and text[:cut] == kept


@pytest.mark.parametrize("text", [
    "def f():\n" + LOOP * 2,  # two copies: maybe real code
    "a\n\n\n\n\nb\n",  # blank lines
    "# " + "=" * 80,  # a rule of one character
    "x = [0, 0, 0, 0]",  # short
    "a\nb\nc\na\nb\nc\n",  # a three-line block twice
    "def f():\n" + LOOP * 2 + "    return (x,",  # a third copy still being written
])
def test_text_that_does_not_loop_is_kept(text: str) -> None:
    assert loop_cut(text) is None


def test_a_stream_holds_back_what_may_become_a_loop() -> None:
    text = "def f():\n" + LOOP * 2 + "    ret"
    assert text[:loop_hold(text)] == "def f():\n    return (x, a)"
    text = "def f():\n" + LOOP + "    return ("  # a second copy on its way: not even the line break yet
    assert text[:loop_hold(text)] == "def f():\n    return (x, a)"
    assert loop_hold("def f():\n    a\n    b\n    c = 1") == len("def f():\n    a\n    b\n    c = 1")


HEAD = "def f(x, a):\n"
WRITTEN = "return (x, a)\n"
"""What the model is made to loop on: unindented, so that the tokens of the prompt and of its copies
are those of the line alone (the test tokenizer joins a line break to the indentation after it)."""
PROMPT = HEAD + WRITTEN


class Looping:
    """The test model, pushed to write ``LOOP`` over and over after ``HEAD``: the token at position p
    (from the cache's length) is followed by the loop's next token."""

    def __init__(self, model: torch.nn.Module, start: int, cycle: list[int]) -> None:
        self.model, self.start, self.cycle = model, start, cycle

    def __getattr__(self, name: str) -> object:
        return getattr(self.model, name)

    def __call__(self, input_ids: torch.Tensor, cache: object = None, last_only: bool = False) -> object:
        first = cache.length.clone() if cache is not None else torch.zeros(input_ids.shape[0], dtype=torch.long)
        out = self.model(input_ids, cache, last_only=last_only)
        T, kept = input_ids.shape[1], out.logits.shape[1]
        for b in range(input_ids.shape[0]):
            for i in range(kept):
                p = int(first[b]) + T - kept + i
                if p >= self.start:
                    out.logits[b, i, self.cycle[(p - self.start + 1) % len(self.cycle)]] += 1000.0
        return out


@pytest.fixture(scope="module")
def looping(tiny_tokenizer: CodeTokenizer) -> Engine:
    head, cycle = tiny_tokenizer.encode(HEAD), tiny_tokenizer.encode(WRITTEN)
    assert tiny_tokenizer.encode(PROMPT) == head + cycle  # positions line up with the text
    engine = Engine(make_model(), tiny_tokenizer)
    engine.model = Looping(engine.model, len(head), cycle)  # type: ignore[assignment]
    return engine


def test_the_engine_ends_a_loop_and_streams_no_extra_copy(looping: Engine) -> None:
    plain = looping.generate(PROMPT, SamplingParams(max_tokens=60))[0]
    assert plain.text.count("return (x, a)") >= 5 and plain.finish_reason == "length"  # the model loops
    params = SamplingParams(max_tokens=60, stop_loops=True)
    cut = looping.generate(PROMPT, params)[0]
    assert cut.finish_reason == "stop" and cut.text == "return (x, a)"
    assert "".join(looping.stream(PROMPT, params)) == cut.text  # the held-back copies were never shown


def test_the_scheduler_and_infill_end_loops(looping: Engine) -> None:
    scheduler = Scheduler(looping)
    try:
        handle = scheduler.submit(looping.tokenizer.encode(PROMPT), SamplingParams(max_tokens=60, stop_loops=True))
        assert "".join(ev.text for ev in handle) == "return (x, a)" and handle.finish_reason == "stop"
        app = create_app(scheduler, prompt_format(looping.tokenizer))
        transport = httpx.ASGITransport(app=app)

        async def infill() -> dict:
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                r = await client.post("/infill", json={"input_prefix": PROMPT, "input_suffix": "\n", "n_predict": 60})
                return r.json()

        import asyncio

        body = asyncio.run(infill())
        assert body["stop_type"] == "word" and body["content"].count("return (x, a)") == 1
    finally:
        scheduler.close()
