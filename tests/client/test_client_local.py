"""The in-process transport on the tiny engine: the engine's own outputs, the format's FIM and chat
layouts, streaming, cancellation that frees the row, a full queue, and loading from a directory."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from factories import make_model, wait_for
from smallcode.client import Chat, ClientBusy, ClientError, Fim, Sampling, Text, open_client
from smallcode.client.local import LocalClient, open_local
from smallcode.runtime.formats import prompt_format
from smallcode.runtime.sampling import SamplingParams


@pytest.fixture
def client(engine: Any) -> Any:
    c = LocalClient.from_engine(engine, max_batch=4)
    yield c
    c.close()


def cancelled(c: LocalClient) -> float:
    return c.scheduler.metrics.value("smallcode_requests_total", outcome="cancelled")


def test_completions_are_the_engines(client: LocalClient, engine: Any) -> None:
    sampling = Sampling(max_tokens=12, temperature=0.8, top_p=0.95, seed=5, stop=("\n\n",))
    got = client.generate(Text("def add(a, b):\n"), sampling, n=3)
    expected = engine.generate("def add(a, b):\n", SamplingParams(max_tokens=12, temperature=0.8, top_p=0.95,
                                                                   seed=5, stop=["\n\n"]), n=3)
    assert [c.text for c in got] == [e.text for e in expected]
    assert [c.completion_tokens for c in got] == [len(e.token_ids) for e in expected]
    assert all(c.prompt_tokens == expected[0].prompt_tokens for c in got)
    assert all(0 < c.ttft_s <= c.seconds for c in got if c.text)
    assert [c.finish_reason for c in got] == [e.finish_reason for e in expected]


def test_fim_and_chat_use_the_prompt_format(client: LocalClient, engine: Any) -> None:
    fmt = prompt_format(engine.tokenizer)
    fim = Fim("def f(x):\n    return ", "\n\nprint(f(2))\n", [("util.py", "def g():\n    pass\n")])
    ids = fmt.fim(fim.prefix, fim.suffix, list(fim.extra))
    assert client.encode(fim) == ids
    greedy = Sampling(max_tokens=10)
    (got,) = client.generate(fim, greedy)
    assert got.text == engine.generate_ids([ids], SamplingParams(max_tokens=10))[0].text
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    assert client.encode(Chat(messages)) == fmt.chat(messages)
    (reply,) = client.generate(Chat(messages), greedy)
    assert reply.prompt_tokens == len(fmt.chat(messages))


def test_streams_sync_and_async_give_the_same_text(client: LocalClient) -> None:
    request, sampling = Text("import json\n"), Sampling(max_tokens=16, seed=1, temperature=0.7)
    (whole,) = client.generate(request, sampling)
    deltas = list(client.stream(request, sampling))
    assert "".join(d.text for d in deltas) == whole.text
    assert deltas[-1].finish_reason == whole.finish_reason and deltas[-1].completion_tokens == whole.completion_tokens
    assert all(d.finish_reason is None and d.text for d in deltas[:-1])

    async def run() -> str:
        return "".join([d.text async for d in client.astream(request, sampling)])

    assert asyncio.run(run()) == whole.text
    assert [c.text for c in asyncio.run(client.agenerate(request, sampling, n=2))] == [
        c.text for c in client.generate(request, sampling, n=2)]


def test_leaving_a_stream_frees_the_row(engine: Any) -> None:
    client = LocalClient.from_engine(engine, max_batch=1, max_queue=1)
    try:
        long = Sampling(max_tokens=400, temperature=1.0, seed=0)
        stream = client.stream(Text("def f(x):\n"), long)
        delta = next(stream)
        stream.close()  # one piece is enough: the rest must not be generated
        wait_for(lambda: cancelled(client) == 1, "the sync stream's row to be cancelled")
        # The one row is free again for the next request.
        assert client.generate(Text("x = 1\n"), Sampling(max_tokens=4))[0].finish_reason is not None

        async def cancel_a_task() -> None:
            first = asyncio.Event()

            async def consume() -> None:
                async for _ in client.astream(Text("def g(y):\n"), long):
                    first.set()

            task = asyncio.ensure_future(consume())
            await asyncio.wait_for(first.wait(), 30)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        asyncio.run(cancel_a_task())
        wait_for(lambda: cancelled(client) == 2, "the cancelled task's row to be cancelled")
        assert client.scheduler.metrics.value("smallcode_completion_tokens_total") < 400 + 4
        assert len(client.generate(Text("y = 2\n"), Sampling(max_tokens=4))) == 1
        assert delta.seconds > 0
    finally:
        client.close()


def test_cancelling_agenerate_cancels_every_sample(engine: Any) -> None:
    client = LocalClient.from_engine(engine, max_batch=2)
    try:
        async def run() -> None:
            task = asyncio.ensure_future(client.agenerate(Text("def f(x):\n"), Sampling(max_tokens=400, seed=0,
                                                                                        temperature=1.0), n=3))
            await asyncio.sleep(0.05)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        asyncio.run(run())
        wait_for(lambda: cancelled(client) == 3, "all three samples to be cancelled")
    finally:
        client.close()


def test_a_full_queue_is_busy_and_bad_requests_are_client_errors(engine: Any) -> None:
    client = LocalClient.from_engine(engine, max_batch=1, max_queue=0)
    try:
        with pytest.raises(ClientBusy, match="busy"):
            client.generate(Text("def f(x):\n"), Sampling(max_tokens=400, temperature=1.0), n=3)
        wait_for(lambda: cancelled(client) == 1, "the refused request's first sample to be dropped")
        with pytest.raises(ClientError, match="empty prompt"):
            client.generate(Text(""))
        with pytest.raises(ClientError, match="needs .* positions"):
            client.generate(Text("x"), Sampling(max_tokens=10**6))
        with pytest.raises(ClientError, match="temperature"):
            client.generate(Text("x"), Sampling(temperature=-1))
        with pytest.raises(ClientError, match="role"):
            client.generate(Chat([{"role": "robot", "content": "hi"}]))
        assert issubclass(ClientBusy, ClientError)
    finally:
        client.close()


def test_open_local_loads_a_checkpoint_or_says_why_not(tmp_path: Path, tiny_tokenizer_dir: Path,
                                                      engine: Any) -> None:
    from smallcode.model.checkpoint import save_checkpoint

    ckpt = save_checkpoint(make_model(), tmp_path / "ck", tokenizer_file=tiny_tokenizer_dir / "tokenizer.json")
    client = open_client(ckpt, max_batch=2)
    try:
        assert isinstance(client, LocalClient) and client.name == f"smallcode:{ckpt}"
        (got,) = client.generate(Text("def add(a, b):\n"), Sampling(max_tokens=8))
        assert got.text == engine.generate("def add(a, b):\n", SamplingParams(max_tokens=8))[0].text
    finally:
        client.close()
    with pytest.raises(ClientError, match="cannot load the model.*config.json"):
        open_local(tmp_path)
