"""The OpenAI-compatible backend against a tiny HTTP server this test runs on 127.0.0.1.

The server answers a streaming request with server-sent events when ``sse`` is set (else with one
JSON body, as a server that ignores ``stream`` does). Timings are checked only against lower bounds
the server's own pauses guarantee.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from smallcode.backends.base import Backend, TimedBackend, truncate_at_stop
from smallcode.backends.openai import OpenAIBackend, extract_code
from smallcode.client import ClientError

SSE = "text/event-stream"


class Server:
    """Scripted answers: ``plan`` is consumed one entry per request (status, body[, content type]);
    then defaults. Streamed defaults send each choice's text in ``pieces`` events, ``pause_first_s``
    before the first and ``pause_s`` between the others."""

    def __init__(self) -> None:
        self.plan: list[tuple] = []
        self.requests: list[tuple[str, dict, dict]] = []
        self.choices_per_answer: int | None = None  # None = honour n
        self.sse = False
        self.pause_first_s = 0.0
        self.pause_s = 0.0
        srv = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a: object) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                srv.requests.append((self.path, body, dict(self.headers)))
                if srv.plan:
                    status, payload, *ctype = srv.plan.pop(0)
                    ctype = ctype or ["application/json"]
                elif srv.sse and body.get("stream"):
                    self.send_response(200)
                    self.send_header("Content-Type", SSE)
                    self.end_headers()  # HTTP/1.0: the end of the body is the end of the connection
                    for i, event in enumerate(srv.events(self.path, body)):
                        time.sleep(srv.pause_first_s if i == 0 else srv.pause_s)
                        self.wfile.write(b"data: " + event + b"\n\n")
                        self.wfile.flush()
                    return
                else:
                    status, payload, ctype = 200, srv.answer(self.path, body), ["application/json"]
                self.send_response(status)
                self.send_header("Content-Type", ctype[0])
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        # a short poll, so that shutdown() at teardown returns at once (the default waits up to 0.5 s)
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True).start()

    def answer(self, path: str, body: dict) -> bytes:
        k = body["n"] if self.choices_per_answer is None else self.choices_per_answer
        if path.endswith("/chat/completions"):
            text = "Sure!\n```python\ndef add(a, b):\n    return a + b\n```\nHope it helps."
            choices = [{"index": i, "message": {"role": "assistant", "content": text}} for i in range(k)]
        else:
            choices = [{"index": i, "text": "    return a + b\n\ndef other():\n    pass\n"} for i in range(k)]
        return json.dumps({"choices": choices}).encode()

    def events(self, path: str, body: dict) -> list[bytes]:
        """The streamed form of ``answer``: a role-only chunk for chat, each choice's text in three
        pieces (choices interleaved), then finish reasons, a usage chunk and [DONE]."""
        chat = path.endswith("/chat/completions")
        choices = json.loads(self.answer(path, body))["choices"]
        texts = [c["message"]["content"] if chat else c["text"] for c in choices]

        def chunk(i: int, text: str | None, finish: str | None = None) -> bytes:
            c: dict = {"index": i, "finish_reason": finish}
            if chat:
                c["delta"] = {"role": "assistant"} if text is None else {"content": text}
            else:
                c["text"] = text or ""
            return json.dumps({"object": "chunk", "choices": [c]}).encode()

        out = [chunk(i, None) for i in range(len(texts))] if chat else []
        for part in range(3):
            for i, t in enumerate(texts):
                third = -(-len(t) // 3)
                out.append(chunk(i, t[part * third : (part + 1) * third]))
        out += [chunk(i, "", "stop") for i in range(len(texts))]
        out.append(json.dumps({"choices": [], "usage": {"completion_tokens": 9}}).encode())
        return [*out, b"[DONE]"]


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


def test_streamed_completions_are_timed(server: Server) -> None:
    server.sse, server.pause_first_s, server.pause_s = True, 0.2, 0.05
    b = OpenAIBackend(server.url, backoff_s=0.01)
    assert isinstance(b, TimedBackend)
    out = b.generate_timed(["def add(a, b):\n", "def g():\n"], 2, 0.8, 0.95, 64, STOP)
    assert [[t.text for t in ts] for ts in out] == [["    return a + b\n"] * 2] * 2
    assert all(server.requests[i][1]["stream"] is True for i in range(2))
    for t in (t for ts in out for t in ts):
        # The first event is sent 0.2 s after the request arrives; a choice's finish reason comes
        # after the six text events of both choices, so at least six pauses of 0.05 s later.
        assert t.ttft_s is not None and 0.2 <= t.ttft_s <= t.seconds
        assert t.seconds >= 0.2 + 0.05 * 6
    # Streaming or not, the texts are the same.
    server.sse = False
    assert b.generate(["def add(a, b):\n", "def g():\n"], 2, 0.8, 0.95, 64, STOP) == [
        [t.text for t in ts] for ts in out]


def test_streamed_chat(server: Server) -> None:
    server.sse = True
    (t,) = OpenAIBackend(server.url, api="chat", backoff_s=0.01).generate_timed(
        ['def add(a, b):\n    """Add."""\n'], 1, 0.0, 1.0, 64, STOP)[0]
    assert t.text == "\ndef add(a, b):\n    return a + b\n" and t.ttft_s is not None


def test_unstreamed_answers_are_timed_without_first_token(server: Server) -> None:
    (t,) = OpenAIBackend(server.url, backoff_s=0.01).generate_timed(["p"], 1, 0.0, 1.0, 8, STOP)[0]
    assert t.text == "    return a + b\n" and t.ttft_s is None and t.seconds > 0
    server.sse = True
    OpenAIBackend(server.url, backoff_s=0.01, stream=False).generate(["p"], 1, 0.0, 1.0, 8, STOP)
    assert "stream" not in server.requests[-1][1]


def test_broken_streams_are_retried(server: Server) -> None:
    server.sse = True
    unfinished = b'data: {"choices": [{"index": 0, "text": "    ret", "finish_reason": null}]}\n\n'
    server.plan = [
        (200, b'data: {"error": {"message": "model crashed"}}\n\n', SSE),
        (200, unfinished, SSE),  # cut off: no finish reason, no [DONE]
        (200, b"data: {not json\n\n", SSE),
        (200, b"data: [DONE]\n\n", SSE),  # no choices at all
    ]
    out = OpenAIBackend(server.url, backoff_s=0.01, max_retries=4).generate(["p"], 1, 0.0, 1.0, 8, STOP)
    assert out == [["    return a + b\n"]] and len(server.requests) == 5
    server.plan = [(200, b'data: {"error": {"message": "model crashed"}}\n\n', SSE)] * 3
    with pytest.raises(ClientError, match=r"gave up after 2 attempts.*mid-stream.*model crashed"):
        OpenAIBackend(server.url, backoff_s=0.01, max_retries=1).generate(["p"], 1, 0.0, 1.0, 8, STOP)


def test_a_stream_without_done_but_finished_is_complete(server: Server) -> None:
    finished = b'data: {"choices": [{"index": 0, "text": "    return 1\\n", "finish_reason": "stop"}]}\n\n'
    server.plan = [(200, finished, SSE)]
    out = OpenAIBackend(server.url, backoff_s=0.01).generate(["p"], 1, 0.0, 1.0, 8, STOP)
    assert out == [["    return 1\n"]] and len(server.requests) == 1


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
    with pytest.raises(ClientError, match=r"gave up after 3 attempts; last problem: HTTP 500"):
        OpenAIBackend(server.url, backoff_s=0.01, max_retries=2).generate(["p"], 1, 0.0, 1.0, 8, STOP)
    server.plan = [(401, b"bad key")]
    with pytest.raises(ClientError, match="HTTP 401"):
        OpenAIBackend(server.url, backoff_s=0.01).generate(["p"], 1, 0.0, 1.0, 8, STOP)
    assert len(server.requests) == 4  # a 401 is not retried


def test_endpoint_down() -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    with pytest.raises(ClientError, match=r"cannot reach the endpoint"):
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
