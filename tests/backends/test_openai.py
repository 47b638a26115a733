"""The OpenAI-compatible backend against a tiny HTTP server this test runs on 127.0.0.1."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from smallcode.backends.base import Backend, BackendError, truncate_at_stop
from smallcode.backends.openai import OpenAIBackend, extract_code


class Server:
    """Scripted answers: ``plan`` is consumed one entry per request (status, body); then defaults."""

    def __init__(self) -> None:
        self.plan: list[tuple[int, bytes]] = []
        self.requests: list[tuple[str, dict, dict]] = []
        self.choices_per_answer: int | None = None  # None = honour n
        srv = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a: object) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                srv.requests.append((self.path, body, dict(self.headers)))
                if srv.plan:
                    status, payload = srv.plan.pop(0)
                else:
                    status, payload = 200, srv.answer(self.path, body)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def answer(self, path: str, body: dict) -> bytes:
        k = body["n"] if self.choices_per_answer is None else self.choices_per_answer
        if path.endswith("/chat/completions"):
            text = "Sure!\n```python\ndef add(a, b):\n    return a + b\n```\nHope it helps."
            choices = [{"index": i, "message": {"role": "assistant", "content": text}} for i in range(k)]
        else:
            choices = [{"index": i, "text": "    return a + b\n\ndef other():\n    pass\n"} for i in range(k)]
        return json.dumps({"choices": choices}).encode()


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server()
    yield s
    s.httpd.shutdown()


STOP = ["\ndef", "\nclass"]


def test_completions_with_stop_and_key(server: Server) -> None:
    b = OpenAIBackend(server.url, model="tiny", api_key="sekret", backoff_s=0.01)
    assert isinstance(b, Backend)
    out = b.generate(["def add(a, b):\n", "def add2(a, b):\n"], 3, 0.8, 0.95, 64, STOP)
    assert out == [["    return a + b\n"] * 3] * 2
    path, body, headers = server.requests[0]
    assert path == "/v1/completions" and body["model"] == "tiny" and body["n"] == 3 and body["max_tokens"] == 64
    assert headers["Authorization"] == "Bearer sekret"


def test_server_that_ignores_n_is_asked_again(server: Server) -> None:
    server.choices_per_answer = 1
    out = OpenAIBackend(server.url + "/v1", backoff_s=0.01).generate(["p"], 4, 0.8, 1.0, 16, STOP)
    assert len(out[0]) == 4 and len(server.requests) == 4


def test_chat_extracts_code(server: Server) -> None:
    b = OpenAIBackend(server.url, api="chat", backoff_s=0.01)
    (comp,) = b.generate(['def add(a, b):\n    """Add."""\n'], 1, 0.0, 1.0, 64, STOP)[0]
    assert comp == "\ndef add(a, b):\n    return a + b\n"
    prog = 'def add(a, b):\n    """Add."""\n' + comp
    ns: dict = {}
    exec(prog, ns)  # noqa: S102 - our own fixed text
    assert ns["add"](2, 3) == 5
    assert server.requests[0][1]["messages"][0]["role"] == "user"


def test_retries_transient_failures(server: Server) -> None:
    server.plan = [(503, b"busy"), (429, b"slow down"), (200, b"<html>not json</html>"), (200, b'{"x": 1}')]
    out = OpenAIBackend(server.url, backoff_s=0.01, max_retries=4).generate(["p"], 1, 0.0, 1.0, 8, STOP)
    assert out == [["    return a + b\n"]] and len(server.requests) == 5


def test_gives_up_with_a_clear_error(server: Server) -> None:
    server.plan = [(500, b"down")] * 10
    with pytest.raises(BackendError, match=r"gave up after 3 attempts; last problem: HTTP 500"):
        OpenAIBackend(server.url, backoff_s=0.01, max_retries=2).generate(["p"], 1, 0.0, 1.0, 8, STOP)
    server.plan = [(401, b"bad key")]
    with pytest.raises(BackendError, match="HTTP 401"):
        OpenAIBackend(server.url, backoff_s=0.01).generate(["p"], 1, 0.0, 1.0, 8, STOP)
    assert len(server.requests) == 4  # a 401 is not retried


def test_endpoint_down() -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    with pytest.raises(BackendError, match=r"cannot reach the endpoint"):
        OpenAIBackend(f"http://127.0.0.1:{port}", backoff_s=0.01, max_retries=1).generate(["p"], 1, 0.0, 1.0, 8, STOP)


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("```python\ndef f(x):\n    return x\n```", "\ndef f(x):\n    return x\n"),
        ("```\nreturn x + 1\n```", "    return x + 1\n"),
        ("    return x\n", "    return x\n"),
        (
            "text\n```py\nimport math\ndef f(x):\n    return math.floor(x)\n```\nmore\n```python\nprint(1)\n```",
            "\nimport math\ndef f(x):\n    return math.floor(x)\n",
        ),
        ("```python\ndef f(x):\n    return x", "\ndef f(x):\n    return x\n"),  # unterminated fence
    ],
)
def test_extract_code(answer: str, expected: str) -> None:
    assert extract_code(answer, "def f(x):\n") == expected


def test_truncate_at_stop() -> None:
    assert truncate_at_stop("a\nif x\ndef y", ["\ndef", "\nif"]) == "a"
    assert truncate_at_stop("abc", []) == "abc"
