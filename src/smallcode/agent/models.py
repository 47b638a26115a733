"""Chat models the agent talks to: a local checkpoint, an OpenAI-compatible endpoint, or a script.

A :class:`ChatModel` turns a conversation (``[{"role", "content"}, ...]``) into ``n`` replies, each
with its token counts. Three kinds:

* :class:`EngineChat`: a smallcode checkpoint (or ONNX export) on :class:`smallcode.runtime.Engine`,
  the conversation laid out by the tokenizer's chat template (``serve.formats.prompt_format``, the
  same layout ``smallcode serve`` uses). A conversation longer than the model's context loses its
  oldest turns first (the system message and the task stay).
* :class:`EndpointChat`: ``/v1/chat/completions`` of any OpenAI-compatible server, through
  :class:`smallcode.backends.openai.OpenAIBackend`'s request code (retries, streaming). Servers do
  not all report usage on streams, so token counts are estimated (4 characters a token).
* :class:`ScriptedModel`: replies fixed in advance, in order; for tests, the oracle and replays.

Not here: what the replies mean (``actions.py``), the loop (``loop.py``).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable


class ModelError(RuntimeError):
    """The model cannot answer (endpoint down, context too small, script exhausted)."""


@dataclass(frozen=True)
class Reply:
    text: str
    prompt_tokens: int
    completion_tokens: int


@runtime_checkable
class ChatModel(Protocol):
    name: str

    def chat(self, messages: list[dict[str, str]], n: int, temperature: float, max_tokens: int,
             seed: int) -> list[Reply]:
        """``n`` replies to ``messages``."""
        ...


class ScriptedModel:
    """Replays ``replies`` one per call, whatever it is asked; :class:`ModelError` once they run out."""

    def __init__(self, replies: list[str], name: str = "scripted") -> None:
        self.replies = list(replies)
        self.name = name
        self.calls = 0
        self._lock = threading.Lock()

    def chat(self, messages: list[dict[str, str]], n: int = 1, temperature: float = 0.0, max_tokens: int = 0,
             seed: int = 0) -> list[Reply]:
        with self._lock:
            if self.calls >= len(self.replies):
                raise ModelError(f"the script has no reply left after {len(self.replies)}")
            text = self.replies[self.calls]
            self.calls += 1
        prompt_chars = sum(len(m["content"]) for m in messages)
        return [Reply(text, estimate_tokens(prompt_chars), estimate_tokens(len(text)))] * n


def estimate_tokens(chars: int) -> int:
    """Token count of ``chars`` characters where no tokenizer is at hand (about 4 per token for code)."""
    return (chars + 3) // 4


class EngineChat:
    """A local checkpoint or ONNX export, prompted through its tokenizer's chat template."""

    def __init__(self, directory: str | Path, device: str = "cpu") -> None:
        from smallcode.runtime.formats import prompt_format
        from smallcode.runtime.load import open_engine

        self.engine = open_engine(directory, device=device)
        self.format = prompt_format(self.engine.tokenizer)
        self.name = f"smallcode:{directory}"
        self._lock = threading.Lock()  # one generation at a time: candidates share the engine

    def chat(self, messages: list[dict[str, str]], n: int = 1, temperature: float = 0.0, max_tokens: int = 512,
             seed: int = 0) -> list[Reply]:
        from smallcode.runtime.engine import GenerationError
        from smallcode.runtime.sampling import SamplingParams

        budget = self.engine.max_context - max_tokens
        msgs = list(messages)
        ids = self.format.chat(msgs)
        # Drop the oldest exchanges (after the system message and the task) until the prompt fits.
        while len(ids) > budget and len(msgs) > 3:
            del msgs[2:4]
            ids = self.format.chat(msgs)
        if len(ids) > budget:
            raise ModelError(f"the task alone takes {len(ids)} tokens; the model's context holds "
                             f"{self.engine.max_context} with {max_tokens} for the reply")
        params = SamplingParams(max_tokens=max_tokens, temperature=temperature, seed=seed, top_p=0.95)
        try:
            with self._lock:
                done = self.engine.generate_ids([ids], params, n)
        except GenerationError as e:
            raise ModelError(str(e)) from e
        return [Reply(c.text, c.prompt_tokens, len(c.token_ids)) for c in done]


class EndpointChat:
    """``/v1/chat/completions`` of an OpenAI-compatible server at ``base_url``."""

    def __init__(self, base_url: str, model: str = "default", api_key: str | None = None,
                 timeout_s: float = 300.0) -> None:
        from smallcode.backends.openai import OpenAIBackend

        self.backend = OpenAIBackend(base_url, model=model, api_key=api_key, api="chat", timeout_s=timeout_s)
        self.name = self.backend.name

    def chat(self, messages: list[dict[str, str]], n: int = 1, temperature: float = 0.0, max_tokens: int = 512,
             seed: int = 0) -> list[Reply]:
        from smallcode.backends.base import BackendError

        payload = {"model": self.backend.model, "messages": messages, "n": n, "temperature": temperature,
                   "max_tokens": max_tokens, "seed": seed}
        try:
            # The backend's one request path (retries, streams, error handling), with a whole conversation.
            answers = self.backend.post("/chat/completions", payload)
        except BackendError as e:
            raise ModelError(str(e)) from e
        texts = [a.text for a in answers if isinstance(a.text, str)]
        if not texts:
            raise ModelError(f"{self.name}: the answer has no message text")
        prompt = estimate_tokens(sum(len(m["content"]) for m in messages))
        return [Reply(t, prompt, estimate_tokens(len(t))) for t in texts[:n]]


def open_chat_model(model: str | Path | None = None, endpoint: str | None = None, model_name: str = "default",
                    api_key: str | None = None, device: str = "cpu") -> ChatModel:
    """The chat model for ``--model`` (a checkpoint or ONNX export directory) or ``--endpoint`` (a URL)."""
    if (model is None) == (endpoint is None):
        raise ValueError("give exactly one of a model directory and an endpoint URL")
    if endpoint is not None:
        if not endpoint.startswith(("http://", "https://")):
            raise ValueError(f"{endpoint}: an endpoint is an http(s) URL")
        return EndpointChat(endpoint, model_name, api_key)
    return EngineChat(str(model), device)
