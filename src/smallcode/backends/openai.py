"""An OpenAI-compatible endpoint as a backend (llama.cpp server, Ollama, vLLM, ...).

Two APIs: ``completions`` (the prompt is continued as is: best for base models) and ``chat`` (the
prompt goes into a user message asking for the function; the code is extracted from the answer,
see :func:`extract_code`). Transient failures (connection refused, timeouts, HTTP 429/5xx, bodies
that are not the expected JSON) are retried with exponential backoff; after the last attempt a
:class:`BackendError` names the URL and the problem. Servers that ignore ``n`` are asked again
until each prompt has ``n`` answers. Only the standard library is used (urllib).

Not here: streaming, tool calls, token log-probabilities.
"""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

from smallcode.backends.base import BackendError, truncate_at_stop

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
        self.name = f"{self.base_url} ({api}, model {model})"

    # ---- HTTP ------------------------------------------------------------------------------------
    def _post(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        url = self.base_url + path
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        body = json.dumps(payload).encode()
        problem = ""
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            req = urllib.request.Request(url, data=body, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                    raw = resp.read()
            except urllib.error.HTTPError as e:
                detail = e.read()[:200].decode(errors="replace")
                problem = f"HTTP {e.code}: {detail}"
                if e.code == 429 or e.code >= 500:
                    continue
                raise BackendError(f"{url}: {problem}") from e  # 4xx other than 429 will not improve
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as e:
                problem = f"cannot reach the endpoint ({getattr(e, 'reason', e)})"
                continue
            try:
                data = json.loads(raw)
                if not isinstance(data, dict) or not isinstance(data.get("choices"), list):
                    raise ValueError("no 'choices' list")
                return data
            except ValueError as e:
                problem = f"answer is not an OpenAI-style JSON body ({e}): {raw[:120]!r}"
        raise BackendError(f"{url}: gave up after {self.max_retries + 1} attempts; last problem: {problem}")

    def _one(
        self, prompt: str, n: int, temperature: float, top_p: float, max_tokens: int, stop: list[str]
    ) -> list[str]:
        out: list[str] = []
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
                data = self._post("/completions", {**common, "prompt": prompt, "stop": stop[:4]})
                texts = [c.get("text") for c in data["choices"]]
            else:
                msg = [{"role": "user", "content": CHAT_INSTRUCTION + prompt}]
                data = self._post("/chat/completions", {**common, "messages": msg})
                texts = [(c.get("message") or {}).get("content") for c in data["choices"]]
            texts = [t for t in texts if isinstance(t, str)]
            if not texts:
                raise BackendError(f"{self.base_url}: the answer has no completion text")
            for t in texts[:want]:
                if self.api == "completions":
                    out.append(truncate_at_stop(t, stop))
                else:
                    out.append(extract_code(t, prompt))  # a whole program: stop sequences do not apply
        return out

    def generate(
        self, prompts: list[str], n: int, temperature: float, top_p: float, max_tokens: int, stop: list[str]
    ) -> list[list[str]]:
        with ThreadPoolExecutor(max(1, self.concurrency)) as pool:
            futs = [pool.submit(self._one, p, n, temperature, top_p, max_tokens, stop) for p in prompts]
            return [f.result() for f in futs]
