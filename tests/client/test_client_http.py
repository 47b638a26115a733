"""The HTTP transport against the real server (``smallcode serve``'s app and scheduler on loopback)
and against the backend tests' scripted server for what a real server does not do on demand:
garbage, error events, a JSON body in answer to a stream, 503s."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
from app_helpers import metric, running_server, serve  # type: ignore[import-not-found]
from test_openai import SSE, Server  # type: ignore[import-not-found]

from factories import wait_for
from smallcode.client import Chat, ClientBusy, ClientError, Fim, Sampling, Text, open_client
from smallcode.client.http import HttpClient
from smallcode.runtime.formats import prompt_format
from smallcode.runtime.sampling import SamplingParams


@pytest.fixture(scope="module")
def served(engine: Any) -> Iterator[tuple[str, Any]]:
    with running_server(engine, max_batch=4) as (url, scheduler):
        yield url, scheduler


@pytest.fixture
def stub() -> Iterator[Server]:
    s = Server()
    yield s
    s.httpd.shutdown()


def test_the_served_models_completions_fim_and_chat(served: Any, engine: Any) -> None:
    url, scheduler = served
    client = open_client(url + "/v1", max_retries=0)
    assert isinstance(client, HttpClient) and client.base == url
    greedy = Sampling(max_tokens=12)
    expected = engine.generate("def add(a, b):\n", SamplingParams(max_tokens=12))[0]
    (got,) = client.generate(Text("def add(a, b):\n"), greedy)
    assert got.text == expected.text and got.ttft_s is not None and 0 < got.ttft_s <= got.seconds
    fmt = prompt_format(engine.tokenizer)
    fim = Fim("def f(x):\n    return ", "\n", [("util.py", "def g():\n    pass\n")])
    ids = fmt.fim(fim.prefix, fim.suffix, list(fim.extra))
    (filled,) = client.generate(fim, greedy)
    assert client.fim_route == "infill"
    assert filled.text == engine.generate_ids([ids], SamplingParams(max_tokens=12))[0].text
    assert filled.prompt_tokens == len(ids)  # /infill's tokens_evaluated
    messages = [{"role": "user", "content": "hi"}]
    replies = client.generate(Chat(messages), Sampling(max_tokens=6, temperature=0.9, seed=3), n=2)
    want = engine.generate_ids([fmt.chat(messages)], SamplingParams(max_tokens=6, temperature=0.9, seed=3), n=2)
    assert [r.text for r in replies] == [w.text for w in want]

    async def run() -> tuple[str, list[Any]]:
        streamed = "".join([d.text async for d in client.astream(fim, greedy)])
        return streamed, await client.agenerate(Text("def add(a, b):\n"), greedy)

    streamed, again = asyncio.run(run())
    assert streamed == filled.text and again[0].text == expected.text
    assert "".join(d.text for d in client.stream(Text("def add(a, b):\n"), greedy)) == expected.text
    client.close()


def test_leaving_a_stream_cancels_on_the_server(served: Any) -> None:
    url, scheduler = served
    client = HttpClient(url, max_retries=0)
    before = metric(scheduler, "smallcode_requests_total", outcome="cancelled")

    async def run() -> None:
        stream = client.astream(Fim("def f(x):\n", ""), Sampling(max_tokens=400, temperature=1.0, seed=1))
        async for _ in stream:
            break
        await stream.aclose()  # closes the connection: the server drops the row
        await client.aclose()

    asyncio.run(run())
    wait_for(lambda: metric(scheduler, "smallcode_requests_total", outcome="cancelled") == before + 1,
             "the server to cancel the abandoned request")


def test_a_server_without_infill_gets_v1_completions_with_suffix(engine: Any) -> None:
    from smallcode.runtime.scheduler import Scheduler
    from smallcode.serve.app import create_app

    scheduler = Scheduler(engine)
    try:
        app = create_app(scheduler, prompt_format(engine.tokenizer), model_name="tiny", families=("openai", "mistral"))
        with serve(app) as url:
            client = HttpClient(url, max_retries=0)
            fim = Fim("def f(x):\n    return ", "\n")
            ids = prompt_format(engine.tokenizer).fim(fim.prefix, fim.suffix)
            (got,) = client.generate(fim, Sampling(max_tokens=10))
            assert client.fim_route == "completions"
            assert got.text == engine.generate_ids([ids], SamplingParams(max_tokens=10))[0].text
            fresh = HttpClient(url, max_retries=0)  # the async stream finds out for itself
            assert asyncio.run(_text(fresh, fim, Sampling(max_tokens=10))) == got.text
            assert fresh.fim_route == "completions"
    finally:
        scheduler.close()


async def _text(client: HttpClient, request: Any, sampling: Sampling) -> str:
    try:
        return "".join([d.text async for d in client.astream(request, sampling)])
    finally:
        await client.aclose()


def test_stop_sequences_are_applied_here_streamed_or_not(stub: Server) -> None:
    stub.sse = True
    client = HttpClient(stub.url, backoff_s=0.01)
    stop = Sampling(max_tokens=64, stop=("\n\ndef",))
    (whole,) = client.generate(Text("p"), stop)
    assert whole.text == "    return a + b" and whole.finish_reason == "stop"
    deltas = list(client.stream(Text("p"), stop))
    assert "".join(d.text for d in deltas) == whole.text and deltas[-1].finish_reason == "stop"
    # Streamed in thirds, the stop sequence arrives split; nothing of it is ever shown.
    assert all("\n\n" not in d.text for d in deltas)
    assert stub.requests[0][1]["stop"] == ["\n\ndef"]


def test_a_json_body_answers_a_stream(stub: Server) -> None:
    client = HttpClient(stub.url, backoff_s=0.01)
    deltas = list(client.stream(Text("p"), Sampling(max_tokens=8)))
    assert stub.requests[-1][1]["stream"] is True
    assert "".join(d.text for d in deltas) == "    return a + b\n\ndef other():\n    pass\n"
    (whole,) = client.generate(Text("p"), Sampling(max_tokens=8))
    assert whole.ttft_s is None and whole.text == "".join(d.text for d in deltas)
    stub.plan = [(200, json.dumps({"content": "x + 1", "stop": True, "tokens_predicted": 3}).encode())]
    (infill,) = client.generate(Fim("a", "b"))
    assert (infill.text, infill.completion_tokens, stub.requests[-1][0]) == ("x + 1", 3, "/infill")


def test_errors_mid_stream_and_garbage(stub: Server) -> None:
    error = (200, b'data: {"choices": []}\n\ndata: {"error": {"message": "model crashed"}}\n\n', SSE)
    garbage = (200, b"data: {not json\n\n", SSE)
    for plan, message in ((error, "mid-stream: model crashed"), (garbage, "not JSON")):
        stub.plan = [plan]
        with pytest.raises(ClientError, match=message):
            list(HttpClient(stub.url).stream(Text("p")))
        stub.plan = [plan]
        with pytest.raises(ClientError, match=message):
            asyncio.run(_text(HttpClient(stub.url), Text("p"), Sampling()))
    # generate retries them; after the last attempt the URL and the last problem are named.
    stub.plan = [error, garbage, garbage]
    with pytest.raises(ClientError, match=r"/v1/completions: gave up after 3 attempts; last problem: .*not JSON"):
        HttpClient(stub.url, max_retries=2, backoff_s=0.01).generate(Text("p"))
    stub.plan = [error, garbage]
    assert asyncio.run(HttpClient(stub.url, max_retries=2, backoff_s=0.01).agenerate(Text("p")))[0].text


def test_busy_and_refused(stub: Server) -> None:
    stub.plan = [(503, b'{"error": {"message": "queue full"}}')] * 2
    with pytest.raises(ClientBusy, match="gave up after 2 attempts.*HTTP 503: queue full"):
        HttpClient(stub.url, max_retries=1, backoff_s=0.01).generate(Text("p"))
    stub.plan = [(503, b"busy")]
    with pytest.raises(ClientBusy, match="HTTP 503"):
        asyncio.run(_text(HttpClient(stub.url), Fim("a", "b"), Sampling()))
    stub.plan = [(400, b'{"error": {"message": "bad seed"}}')]
    with pytest.raises(ClientError, match="HTTP 400: bad seed") as refused:
        HttpClient(stub.url, backoff_s=0.01).generate(Text("p"))
    assert not isinstance(refused.value, ClientBusy)


def test_servers_that_ignore_n_are_asked_again_with_the_next_seeds(stub: Server) -> None:
    stub.choices_per_answer = 1
    out = HttpClient(stub.url).generate(Text("p"), Sampling(seed=10), n=3)
    assert len(out) == 3 and [r[1]["seed"] for r in stub.requests] == [10, 11, 12]
    assert [r[1]["n"] for r in stub.requests] == [3, 2, 1]


def test_more_choices_than_the_server_serves_at_once_come_in_several_requests(served: Any, engine: Any) -> None:
    """``smallcode serve`` refuses n > Limits.max_n (8) with a 400 about ``n``: the client asks for 8,
    then for the rest with the next seeds, so the 10 choices are the engine's for seeds 5..14."""
    url, _ = served
    prompt, sampling = "def add(a, b):\n", Sampling(max_tokens=6, temperature=0.9, seed=5)
    want = [c.text for c in engine.generate(prompt, SamplingParams(max_tokens=6, temperature=0.9, seed=5), n=10)]
    assert len(set(want)) > 1  # the seeds matter, so an answer in the wrong order or seeds would show
    client = HttpClient(url, max_retries=0)
    assert [c.text for c in client.generate(Text(prompt), sampling, n=10)] == want
    assert client.max_n == 8
    fresh = HttpClient(url, max_retries=0)
    assert [c.text for c in asyncio.run(fresh.agenerate(Text(prompt), sampling, n=10))] == want
    assert fresh.max_n == 8


def test_a_refusal_of_n_that_states_no_cap_gets_one_choice_a_request(stub: Server) -> None:
    refusal = (400, b'{"error": {"message": "n is too large", "param": "n"}}')
    stub.plan = [refusal]
    out = HttpClient(stub.url, max_retries=0).generate(Text("p"), Sampling(seed=10), n=3)
    assert len(out) == 3
    assert [(r[1]["n"], r[1]["seed"]) for r in stub.requests] == [(3, 10), (1, 10), (1, 11), (1, 12)]
    stub.plan, stub.requests = [refusal], []
    with pytest.raises(ClientError, match="HTTP 400: n is too large"):  # one at a time refused: that stands
        HttpClient(stub.url, max_retries=0).generate(Text("p"), Sampling(seed=10), n=1)
    assert len(stub.requests) == 1
