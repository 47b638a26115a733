"""When the model loop fails on a request: a 500 in OpenAI's shape, or an error event that ends the
stream; the server goes on serving. The failure is a decode step that raises while a flag is set."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from app_helpers import CONTEXT, make_engine, running_server  # type: ignore[import-not-found]

from smallcode.tokenizer import CodeTokenizer


class Breakable:
    """Wraps ``engine.decode_step`` so that it raises while ``broken`` is set."""

    def __init__(self, decode_step: Any) -> None:
        self.decode_step, self.broken = decode_step, False

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.broken:
            raise RuntimeError("decode step failed on purpose")
        return self.decode_step(*args, **kwargs)


@pytest.fixture(scope="module")
def failing(tokenizer: CodeTokenizer) -> Iterator[tuple[str, Breakable]]:
    engine = make_engine(tokenizer, CONTEXT)
    engine.decode_step = Breakable(engine.decode_step)  # type: ignore[method-assign]
    with running_server(engine) as (url, _):
        yield url, engine.decode_step  # type: ignore[misc]


@pytest.fixture
def broken(failing: tuple[str, Breakable]) -> Iterator[str]:
    url, switch = failing
    switch.broken = True
    try:
        yield url
    finally:
        switch.broken = False
    # The loop survived: the next request is served.
    response = httpx.post(url + "/v1/completions", json={"prompt": "x", "max_tokens": 3}, timeout=60)
    assert response.status_code == 200, response.text
    used, finish = response.json()["usage"]["completion_tokens"], response.json()["choices"][0]["finish_reason"]
    assert used == 3 if finish == "length" else used < 3  # a sampled end of text may come first


BODIES = {"/v1/completions": {"prompt": "def foo(", "max_tokens": 8},
          "/v1/chat/completions": {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 8},
          "/infill": {"input_prefix": "def foo(", "n_predict": 8}}


@pytest.mark.parametrize("route", list(BODIES))
def test_a_failed_generation_is_a_500_in_openai_shape(broken: str, route: str) -> None:
    response = httpx.post(broken + route, json=BODIES[route], timeout=60)
    assert response.status_code == 500
    assert response.json() == {"error": {"message": response.json()["error"]["message"], "type": "server_error",
                                         "param": None, "code": "generation_failed"}}


@pytest.mark.parametrize("route", list(BODIES))
def test_a_failed_stream_ends_with_an_error_event(broken: str, route: str) -> None:
    with httpx.stream("POST", broken + route, json={**BODIES[route], "stream": True}, timeout=60) as response:
        assert response.status_code == 200  # the status went out before the failure
        events = [line[len("data: "):] for line in response.iter_lines() if line.startswith("data: ")]
    if route == "/infill":  # llama.cpp's streams have no [DONE]
        last = events[-1]
    else:
        assert events[-1] == "[DONE]"
        last = events[-2]
    error = json.loads(last)["error"]
    assert error["type"] == "server_error" and error["code"] == "generation_failed"
