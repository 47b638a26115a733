"""Clients that go away: their rows are freed and the model stops working for them, streaming or not,
while decoding or still prefilling. Checked through the scheduler's metrics on a live server with
small prefill pieces, so that a long prompt takes many loop iterations to prefill."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from app_helpers import make_engine, metric, running_server  # type: ignore[import-not-found]

from factories import wait_for  # type: ignore[import-not-found]
from smallcode.serve.app import Limits
from smallcode.tokenizer import CodeTokenizer

PIECE = 8


@pytest.fixture(scope="module")
def server(tokenizer: CodeTokenizer) -> Iterator[tuple[str, Any]]:
    engine = make_engine(tokenizer, 16384)
    with running_server(engine, prefill_chunk=PIECE, limits=Limits(max_tokens=8000)) as served:
        yield served


def long_prompt(tag: str) -> str:
    """About 6,000 tokens, different per test so that no test finds another's prompt cached."""
    return f"# {tag}\n" + "def f(x):\n    return x\n" * 600


def open_raw(url: str, route: str, body: dict[str, Any]) -> socket.socket:
    """A request sent on a bare socket, so that the test can drop the connection whenever it likes."""
    parts = urlsplit(url)
    data = json.dumps(body).encode()
    sock = socket.create_connection((parts.hostname, parts.port))
    sock.sendall(f"POST {route} HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: application/json\r\n"
                 f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
    return sock


def assert_freed(scheduler: Any, cancelled_before: float) -> None:
    """The dropped request's row is freed, counted as cancelled, and the model does nothing more."""
    wait_for(lambda: metric(scheduler, "smallcode_running_rows") == 0, "the row to be freed")
    assert metric(scheduler, "smallcode_cancellations_total") == cancelled_before + 1
    steps = (metric(scheduler, "smallcode_decode_steps_total"), metric(scheduler, "smallcode_prefill_steps_total"))
    time.sleep(0.3)  # long enough for dozens of loop iterations, had any work been left
    assert (metric(scheduler, "smallcode_decode_steps_total"),
            metric(scheduler, "smallcode_prefill_steps_total")) == steps


@pytest.mark.parametrize("route", ["/v1/completions", "/v1/chat/completions", "/infill"])
def test_leaving_a_stream_mid_decode_frees_the_row(server: tuple[str, Any], route: str) -> None:
    url, scheduler = server
    body = {"prompt": "x = 1\n", "input_prefix": "x = 1\n", "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 8000, "n_predict": 8000, "temperature": 0, "stream": True}
    cancelled = metric(scheduler, "smallcode_cancellations_total")
    with httpx.stream("POST", url + route, json=body, timeout=60) as response:
        lines = response.iter_lines()
        for _ in range(6):
            next(lines)
        assert metric(scheduler, "smallcode_running_rows") == 1
    assert_freed(scheduler, cancelled)


@pytest.mark.parametrize("route", ["/v1/completions", "/infill"])
def test_dropping_the_connection_mid_decode_frees_the_row(server: tuple[str, Any], route: str) -> None:
    url, scheduler = server
    decoded = metric(scheduler, "smallcode_decode_steps_total")
    cancelled = metric(scheduler, "smallcode_cancellations_total")
    sock = open_raw(url, route, {"prompt": "x = 1\n", "input_prefix": "x = 1\n", "max_tokens": 8000,
                                 "n_predict": 8000, "temperature": 0})
    try:
        wait_for(lambda: metric(scheduler, "smallcode_decode_steps_total") > decoded + 20, "decoding to start")
    finally:
        sock.close()
    assert_freed(scheduler, cancelled)
    assert metric(scheduler, "smallcode_decode_steps_total") < decoded + 8000


@pytest.mark.parametrize("stream", [False, True])
def test_dropping_the_connection_mid_prefill_stops_the_prefill(server: tuple[str, Any], stream: bool,
                                                               prompt_format: Any) -> None:
    url, scheduler = server
    prompt = long_prompt(f"prefill {stream}")
    pieces = len(prompt_format.encode(prompt)) // PIECE
    prefilled = metric(scheduler, "smallcode_prefill_steps_total")
    decoded = metric(scheduler, "smallcode_decode_steps_total")
    cancelled = metric(scheduler, "smallcode_cancellations_total")
    sock = open_raw(url, "/v1/completions", {"prompt": prompt, "max_tokens": 10, "stream": stream})
    try:
        wait_for(lambda: metric(scheduler, "smallcode_prefill_steps_total") > prefilled + 3, "prefill to start")
    finally:
        sock.close()
    assert_freed(scheduler, cancelled)
    assert metric(scheduler, "smallcode_prefill_steps_total") < prefilled + pieces / 2
    assert metric(scheduler, "smallcode_decode_steps_total") == decoded  # it never got to decode


def test_n_samples_are_all_cancelled_with_their_request(server: tuple[str, Any]) -> None:
    url, scheduler = server
    cancelled = metric(scheduler, "smallcode_cancellations_total")
    decoded = metric(scheduler, "smallcode_decode_steps_total")
    sock = open_raw(url, "/v1/completions", {"prompt": "x = 1\n", "n": 3, "max_tokens": 8000, "temperature": 0})
    try:
        wait_for(lambda: metric(scheduler, "smallcode_decode_steps_total") > decoded + 20, "decoding to start")
        assert metric(scheduler, "smallcode_running_rows") == 3
    finally:
        sock.close()
    wait_for(lambda: metric(scheduler, "smallcode_running_rows") == 0, "the rows to be freed")
    assert metric(scheduler, "smallcode_cancellations_total") == cancelled + 3
