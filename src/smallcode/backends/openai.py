"""An OpenAI-compatible endpoint as a backend (smallcode serve, llama.cpp server, Ollama, vLLM, ...).

Two APIs: ``completions`` (the prompt is continued as is: best for base models) and ``chat`` (the
prompt goes into a user message asking for the function; the code is extracted from the answer,
see :func:`extract_code`). Transient failures (connection refused, timeouts, HTTP 429/5xx, bodies
that are not the expected JSON, a stream that breaks off or reports an error) are retried with
exponential backoff; after the last attempt a :class:`BackendError` names the URL and the problem.
Servers that ignore ``n`` are asked again until each prompt has ``n`` answers. Only the standard
library is used (urllib).

Each completion is timed (:class:`~smallcode.backends.base.Timed`): the wall time of its request,
and, since answers are streamed (server-sent events) by default, the time to its first text. A
server that answers a streaming request with one JSON body is read as such (no time to first text);
``stream=False`` never asks for a stream. Timings include the network and the server's queue: they
are what a client of the endpoint waits.

Not here: tool calls, token log-probabilities.
"""

from __future__ import annotations

import http.client
import json
import re
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

from smallcode.backends.base import BackendError, Timed, truncate_at_stop

Api = Literal["completions", "chat"]

CHAT_INSTRUCTION = (
    "Complete the following Python function. Answer with the complete function (including any "
    "imports it needs) in one ```python code block, and nothing else.\n\n"
)

_FENCE = re.compile(r"```[ \t]*(?:python3?|py)?[ \t]*\n(.*?)(?:```|\Z)", re.S | re.I)


def extract_code(answer: str, prompt: str) -> str:
    """Turn a chat answer into a completion to append to ``prompt``.

    The code is the first fenced block that defines a function (else the first block, else the
    whole answer). If it holds top-level definitions it is a whole program: it is appended after
    the prompt (whose function then has a docstring-only body, which is valid Python) and
    redefines the function. Otherwise it is taken as the function's body.
    """
    blocks = _FENCE.findall(answer)
    code = next((b for b in blocks if re.search(r"^\s*def ", b, re.M)), blocks[0] if blocks else answer)
    code = code.strip("\n")
    if re.search(r"^(def |async def |class |import |from )", code, re.M):
        return "\n" + code + "\n"
    # A bare body: indent it under the prompt's function if the model did not.
    lines = code.splitlines()
    if lines and not lines[0].startswith((" ", "\t")):
        lines = ["    " + ln if ln.strip() else ln for ln in lines]
    return "\n".join(lines) + "\n"


class OpenAIBackend:
    """Completions from ``base_url`` (``http://host:port`` or ``.../v1``)."""

    def __init__(
        self,
        base_url: str,
        model: str = "default",
        api_key: str | None = None,
        api: Api = "completions",
        max_retries: int = 4,
        backoff_s: float = 0.5,
        timeout_s: float = 120.0,
        concurrency: int = 4,
        stream: bool = True,
    ) -> None:
        url = base_url.rstrip("/")
        self.base_url = url if url.endswith("/v1") else url + "/v1"
        self.model = model
        self.api_key = api_key
        if api not in ("completions", "chat"):
            raise ValueError(f"api must be 'completions' or 'chat', got {api!r}")
        self.api = api
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.timeout_s = timeout_s
        self.concurrency = concurrency
        self.stream = stream
        self.name = f"{self.base_url} ({api}, model {model})"

    # ---- HTTP ------------------------------------------------------------------------------------
    def post(self, path: str, payload: dict[str, Any]) -> list[Timed]:
        """POST ``payload`` to ``path`` (retried, streamed or not); the choices in index order, each with its
        raw text (stop sequences not yet applied). The agent sends whole conversations through it."""
        url = self.base_url + path
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        if self.stream:
            payload = {**payload, "stream": True}
        body = json.dumps(payload).encode()
        problem = ""
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            req = urllib.request.Request(url, data=body, headers=headers, method="POST")
            t0 = time.perf_counter()
            try:
                with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                    if resp.headers.get_content_type() == "text/event-stream":
                        return _read_stream(resp, t0)
                    raw = resp.read()
                    seconds = time.perf_counter() - t0
            except urllib.error.HTTPError as e:
                detail = e.read()[:200].decode(errors="replace")
                problem = f"HTTP {e.code}: {detail}"
                if e.code == 429 or e.code >= 500:
                    continue
                raise BackendError(f"{url}: {problem}") from e  # 4xx other than 429 will not improve
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError, http.client.HTTPException) as e:
                problem = f"cannot reach the endpoint ({getattr(e, 'reason', e)})"
                continue
            except ValueError as e:  # raised by _read_stream: the stream itself was wrong
                problem = f"the stream is not an OpenAI-style event stream ({e})"
                continue
            try:
                data = json.loads(raw)
                if not isinstance(data, dict) or not isinstance(data.get("choices"), list):
                    raise ValueError("no 'choices' list")
                choices = [c for c in data["choices"] if isinstance(c, dict)]
                return [Timed(_choice_text(c, stream=False), seconds, None) for c in choices]
            except ValueError as e:
                problem = f"answer is not an OpenAI-style JSON body ({e}): {raw[:120]!r}"
        raise BackendError(f"{url}: gave up after {self.max_retries + 1} attempts; last problem: {problem}")

    def _one(
        self, prompt: str, n: int, temperature: float, top_p: float, max_tokens: int, stop: list[str]
    ) -> list[Timed]:
        out: list[Timed] = []
        while len(out) < n:
            want = n - len(out)
            common = {
                "model": self.model,
                "n": want,
                "temperature": temperature,
                "top_p": top_p,
                "max_tokens": max_tokens,
            }
            if self.api == "completions":
                # The API takes at most 4 stop sequences; all of them are applied client-side below.
                answers = self.post("/completions", {**common, "prompt": prompt, "stop": stop[:4]})
            else:
                msg = [{"role": "user", "content": CHAT_INSTRUCTION + prompt}]
                answers = self.post("/chat/completions", {**common, "messages": msg})
            answers = [a for a in answers if isinstance(a.text, str)]
            if not answers:
                raise BackendError(f"{self.base_url}: the answer has no completion text")
            for a in answers[:want]:
                # A chat answer is a whole program: stop sequences do not apply to it.
                text = truncate_at_stop(a.text, stop) if self.api == "completions" else extract_code(a.text, prompt)
                out.append(Timed(text, a.seconds, a.ttft_s))
        return out

    def generate_timed(
        self, prompts: list[str], n: int, temperature: float, top_p: float, max_tokens: int, stop: list[str]
    ) -> list[list[Timed]]:
        with ThreadPoolExecutor(max(1, self.concurrency)) as pool:
            futs = [pool.submit(self._one, p, n, temperature, top_p, max_tokens, stop) for p in prompts]
            return [f.result() for f in futs]

    def generate(
        self, prompts: list[str], n: int, temperature: float, top_p: float, max_tokens: int, stop: list[str]
    ) -> list[list[str]]:
        return [[t.text for t in ts] for ts in self.generate_timed(prompts, n, temperature, top_p, max_tokens, stop)]


def _choice_text(choice: dict[str, Any], stream: bool) -> Any:
    """The text a choice carries: ``text`` (completions), ``message.content`` or, streamed, ``delta.content``
    (chat). Not checked to be a string here: callers drop what is not."""
    if "text" in choice:
        return choice["text"]
    message = choice.get("delta" if stream else "message")
    return message.get("content") if isinstance(message, dict) else None


def _read_stream(resp: Any, t0: float) -> list[Timed]:
    """Read a server-sent-event stream of completion chunks into timed choices.

    Each event's ``data`` is a JSON chunk whose ``choices`` carry an ``index`` and a piece of text;
    ``data: [DONE]`` ends the stream. A choice's first text gives its time to first token, its
    ``finish_reason`` (else the end of the stream) its total time. Raises ``ValueError`` for
    anything that is not such a stream, an ``error`` event, or a stream that ends before ``[DONE]``
    with a choice unfinished, so that the caller retries.
    """
    texts: dict[int, list[str]] = {}
    first: dict[int, float] = {}
    finished: dict[int, float] = {}
    done = False
    data: list[str] = []

    def event(payload: str) -> None:
        chunk = json.loads(payload)
        if not isinstance(chunk, dict):
            raise ValueError(f"an event is not a JSON object: {payload[:120]!r}")
        if "error" in chunk:
            raise ValueError(f"the server reported an error mid-stream: {str(chunk['error'])[:200]}")
        choices = chunk.get("choices")
        if not isinstance(choices, list):
            raise ValueError(f"an event has no 'choices' list: {payload[:120]!r}")
        now = time.perf_counter() - t0
        for c in choices:
            if not isinstance(c, dict) or not isinstance(c.get("index", 0), int):
                raise ValueError(f"a choice is not an object with an integer index: {payload[:120]!r}")
            i = c.get("index", 0)
            piece = _choice_text(c, stream=True)
            texts.setdefault(i, [])
            if isinstance(piece, str) and piece:
                texts[i].append(piece)
                first.setdefault(i, now)
            if c.get("finish_reason") is not None:
                finished.setdefault(i, now)

    for raw in resp:
        line = raw.decode("utf-8").rstrip("\r\n")
        if line.startswith("data:"):
            value = line[5:].removeprefix(" ")
            if value == "[DONE]":
                done = True
                break
            data.append(value)
        elif not line and data:  # a blank line ends an event
            event("\n".join(data))
            data = []
        # Other fields (event:, id:, retry:) and comments (":") carry nothing we use.
    if data:
        event("\n".join(data))
    end = time.perf_counter() - t0
    if not texts:
        raise ValueError("the stream carried no choices")
    if not done and len(finished) < len(texts):
        raise ValueError("the stream ended before [DONE] with a choice unfinished")
    out = []
    for i in sorted(texts):
        seconds = finished.get(i, end)
        out.append(Timed("".join(texts[i]), seconds, first.get(i, seconds)))
    return out
