"""What a client can get wrong, on live servers: every refusal is a 4xx (or a 503 when busy) in
OpenAI's error shape, and none of them reaches the model loop."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from app_helpers import CONTEXT, make_engine, model_work, running_server, serve  # type: ignore[import-not-found]

from smallcode.serve.app import Limits, create_app
from smallcode.tokenizer import CodeTokenizer


def assert_error(response: httpx.Response, status: int, *, param: str | None = None,
                 code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    error = body["error"]
    assert isinstance(error["message"], str) and error["message"]
    assert error["type"] == {401: "authentication_error", 503: "unavailable_error"}.get(
        status, "server_error" if status >= 500 else "invalid_request_error")
    if param is not None:
        assert error["param"] == param
    if code is not None:
        assert error["code"] == code
    return error


def post_raw(url: str, route: str, content: bytes | str, **headers: str) -> httpx.Response:
    return httpx.post(url + route, content=content, headers={"content-type": "application/json", **headers},
                      timeout=60)


@pytest.fixture(scope="module")
def url(live: tuple[str, Any]) -> Iterator[str]:
    """The shared server's URL; the test module fails if any of its requests made the model work."""
    before = model_work(live[1])
    yield live[0]
    assert model_work(live[1]) == before


LONG_PROMPT = "def f(x):\n    return x\n" * 200  # more tokens than the shared server's context


@pytest.mark.parametrize(("route", "body", "param", "needle"), [
    ("/v1/completions", {"prompt": 5}, "prompt", None),
    ("/v1/completions", {"prompt": "x", "max_tokens": "5"}, "max_tokens", None),
    ("/v1/completions", {"prompt": "x", "temperature": float("nan")}, None, None),
    ("/v1/completions", {"prompt": "x", "max_tokens": 0}, "max_tokens", None),
    ("/v1/completions", {"prompt": "x", "stream": "yes"}, "stream", None),
    ("/v1/completions", {}, "prompt", None),
    ("/v1/completions", {"prompt": []}, "prompt", None),
    ("/v1/completions", {"prompt": ""}, "prompt", None),
    ("/v1/completions", {"prompt": "x", "stop": ["a"] * 9}, "stop", "at most 8"),
    ("/v1/completions", {"prompt": "x", "stop": "a" * 257}, "stop", "256"),
    ("/v1/completions", {"prompt": "x", "stop": [""]}, "stop", None),
    ("/v1/completions", {"prompt": "x", "max_tokens": 257}, "max_tokens", "257"),
    ("/v1/completions", {"prompt": "x", "n": 9}, "n", "9"),
    ("/v1/completions", {"prompt": ["a", "b", "c"], "n": 3}, "n", "9 completions"),
    ("/v1/completions", {"prompt": "x", "seed": -1}, "seed", None),
    ("/v1/completions", {"prompt": "\ud800"}, "prompt", "Unicode"),
    ("/v1/completions", {"prompt": "x", "suffix": "\udfff"}, "suffix", None),
    ("/v1/completions", {"prompt": LONG_PROMPT, "max_tokens": 1}, "prompt", f"context is {CONTEXT} tokens"),
    ("/v1/chat/completions", {"messages": []}, "messages", None),
    ("/v1/chat/completions", {"messages": [{"role": "user"}], "stop": ["x"] * 9}, "stop", None),
    ("/v1/chat/completions", {"messages": [{"role": "wizard", "content": "hi"}]}, "messages", None),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
     "messages", None),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function"}]},
     "tools", None),
    ("/infill", {"input_prefix": "x", "n_predict": 1000}, "n_predict", "1000"),
])
def test_bad_requests_are_400s(url: str, route: str, body: dict[str, Any], param: str | None,
                               needle: str | None) -> None:
    # json.dumps writes NaN and escapes lone surrogates (\ud800): the server has to refuse both.
    error = assert_error(post_raw(url, route, json.dumps(body)), 400, param=param)
    if needle is not None:
        assert needle in error["message"]


def test_a_prompt_longer_than_the_context_says_both_numbers(url: str, prompt_format: Any) -> None:
    n = len(prompt_format.encode(LONG_PROMPT))
    error = assert_error(post_raw(url, "/v1/completions", json.dumps({"prompt": LONG_PROMPT})), 400,
                         param="prompt", code="context_length_exceeded")
    assert f"{n} tokens" in error["message"] and str(CONTEXT) in error["message"]


def test_a_prompt_that_leaves_no_room_for_max_tokens_is_a_400(url: str, prompt_format: Any) -> None:
    prompt = "x = 1\n" * 220
    assert len(prompt_format.encode(prompt)) + 200 > CONTEXT > len(prompt_format.encode(prompt))
    error = assert_error(post_raw(url, "/v1/completions", json.dumps({"prompt": prompt, "max_tokens": 200})), 400)
    assert str(CONTEXT) in error["message"]


@pytest.mark.parametrize("content", [b'{"prompt": "x",', b"not json", b'{"prompt": "\xff\xfe"}', b"\xff" * 10,
                                     b"[1, 2]", b""])
def test_bodies_that_are_not_json_objects_are_400s(url: str, content: bytes) -> None:
    assert_error(post_raw(url, "/v1/completions", content), 400)


def test_a_huge_body_is_a_413(url: str) -> None:
    body = json.dumps({"prompt": "x" * (8 * 2**20)})
    assert_error(post_raw(url, "/v1/completions", body), 413, code="body_too_large")

    def chunks() -> Iterator[bytes]:  # no Content-Length: the server counts as it reads
        yield b'{"prompt": "'
        for _ in range(9):
            yield b"x" * 2**20
        yield b'"}'

    response = httpx.post(url + "/v1/completions", content=chunks(), headers={"content-type": "application/json"},
                          timeout=60)
    assert_error(response, 413, code="body_too_large")


def test_unknown_routes_and_methods_are_openai_shaped(url: str) -> None:
    assert_error(httpx.get(url + "/v1/nothing"), 404)
    assert_error(httpx.get(url + "/v1/completions"), 405)


@pytest.fixture(scope="module")
def busy(tokenizer: CodeTokenizer) -> Iterator[tuple[str, Any]]:
    """A server with one row and one place in the queue."""
    engine = make_engine(tokenizer, 8192)
    with running_server(engine, max_batch=1, max_queue=1, limits=Limits(max_tokens=6000)) as served:
        yield served


def test_a_full_queue_is_a_503_with_retry_after(busy: tuple[str, Any]) -> None:
    url, scheduler = busy
    long = {"prompt": "x = 1\n", "max_tokens": 6000, "temperature": 0, "stream": True}
    with httpx.Client(base_url=url, timeout=60) as a, httpx.Client(base_url=url, timeout=60) as b:
        with a.stream("POST", "/v1/completions", json=long) as running:
            lines = running.iter_lines()  # kept: a dropped iterator closes the stream, cancelling it
            next(lines)  # a token came: the request holds the only row
            with b.stream("POST", "/v1/completions", json=long) as waiting:
                assert waiting.status_code == 200  # submitted: it waits in the queue
                before = model_work(scheduler)
                response = httpx.post(url + "/v1/completions", json={"prompt": "x", "max_tokens": 1}, timeout=60)
                assert_error(response, 503, code="queue_full")
                assert int(response.headers["Retry-After"]) >= 1
                assert model_work(scheduler)["smallcode_prompt_tokens_total"] == \
                    before["smallcode_prompt_tokens_total"]


@pytest.fixture(scope="module")
def locked(tokenizer: CodeTokenizer) -> Iterator[str]:
    with running_server(make_engine(tokenizer, CONTEXT), api_key="s3cret") as (url, _):
        yield url


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"},
                                     {"Authorization": "bearer s3cret"}])
def test_without_the_key_every_route_but_health_is_a_401(locked: str, headers: dict[str, str]) -> None:
    assert httpx.get(locked + "/health", headers=headers).json() == {"status": "ok"}
    for method, route in (("GET", "/v1/models"), ("GET", "/metrics"), ("POST", "/v1/completions"),
                          ("POST", "/v1/chat/completions"), ("POST", "/infill"), ("GET", "/openapi.json")):
        response = httpx.request(method, locked + route, headers=headers, json={"prompt": "x"})
        assert_error(response, 401, code="invalid_api_key")
        assert response.headers["WWW-Authenticate"] == "Bearer"


def test_with_the_key_the_routes_answer(locked: str) -> None:
    key = {"Authorization": "Bearer s3cret"}
    assert httpx.get(locked + "/v1/models", headers=key).status_code == 200
    response = httpx.post(locked + "/v1/completions", headers=key, json={"prompt": "x", "max_tokens": 2}, timeout=60)
    assert response.status_code == 200 and response.json()["usage"]["completion_tokens"] >= 1


def test_while_loading_health_says_so_and_requests_are_503s() -> None:
    app = create_app(None, None, model_name="tiny")
    with serve(app) as url:
        loading = httpx.get(url + "/health")
        assert loading.status_code == 503 and loading.json()["status"] == "loading"  # llama.cpp's answer
        response = httpx.post(url + "/v1/completions", json={"prompt": "x"})
        assert_error(response, 503, code="model_loading")
        assert response.headers["Retry-After"] == "1"
