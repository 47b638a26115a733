"""An OpenAI-compatible endpoint as a backend (smallcode serve, llama.cpp server, Ollama, vLLM, ...).

Two APIs: ``completions`` (the prompt is continued as is: best for base models) and ``chat`` (the
prompt goes into a user message asking for the function; the code is extracted from the answer,
see :func:`extract_code`). The requests are :class:`smallcode.client.http.HttpClient`'s: transient
failures (connection refused, timeouts, HTTP 429/5xx, bodies that are not the expected JSON, a
stream that breaks off or reports an error) are retried with exponential backoff; after the last
attempt a :class:`ClientError` names the URL and the problem. Servers that ignore ``n`` are asked
again until each prompt has ``n`` answers; stop sequences are applied here whatever the server did.
Prompts are sent ``concurrency`` at a time.

Each completion is timed (:class:`~smallcode.backends.base.Timed`): the wall time of its request,
and, since answers are streamed (server-sent events) by default, the time to its first text. A
server that answers a streaming request with one JSON body is read as such (no time to first text);
``stream=False`` never asks for a stream. Timings include the network and the server's queue: they
are what a client of the endpoint waits.

Not here: tool calls, token log-probabilities.
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from typing import Literal

from smallcode.backends.base import Timed

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
        from smallcode.client.http import HttpClient

        url = base_url.rstrip("/")
        self.base_url = url if url.endswith("/v1") else url + "/v1"
        self.model = model
        self.api_key = api_key
        if api not in ("completions", "chat"):
            raise ValueError(f"api must be 'completions' or 'chat', got {api!r}")
        self.api = api
        self.concurrency = concurrency
        self.name = f"{self.base_url} ({api}, model {model})"
        self.client = HttpClient(self.base_url, model=model, api_key=api_key, max_retries=max_retries,
                                 backoff_s=backoff_s, timeout_s=timeout_s, stream=stream, name=self.name)

    def _one(
        self, prompt: str, n: int, temperature: float, top_p: float, max_tokens: int, stop: list[str]
    ) -> list[Timed]:
        from smallcode.client import Chat, Sampling, Text

        if self.api == "completions":
            sampling = Sampling(max_tokens=max_tokens, temperature=temperature, top_p=top_p,
                                stop=tuple(s for s in stop if s))
            return [Timed(c.text, c.seconds, c.ttft_s) for c in self.client.generate(Text(prompt), sampling, n)]
        # A chat answer is a whole program: stop sequences do not apply to it.
        sampling = Sampling(max_tokens=max_tokens, temperature=temperature, top_p=top_p)
        request = Chat([{"role": "user", "content": CHAT_INSTRUCTION + prompt}])
        return [Timed(extract_code(c.text, prompt), c.seconds, c.ttft_s)
                for c in self.client.generate(request, sampling, n)]

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

    def close(self) -> None:
        self.client.close()
