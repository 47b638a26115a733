"""Chat models the agent talks to: a local checkpoint, an OpenAI-compatible endpoint, or a script.

A :class:`ChatModel` turns a conversation (``[{"role", "content"}, ...]``) into ``n`` replies, each
with its token counts. Three kinds:

* :class:`EngineChat`: a smallcode checkpoint (or ONNX export) in this process, through the
  client's in-process transport (:func:`smallcode.client.local.open_local`: the runtime's scheduler),
  the conversation laid out by the tokenizer's chat template (``runtime.formats.prompt_format``, the
  same layout ``smallcode serve`` uses). A conversation longer than the model's context loses its
  oldest turns first (the system message and the task stay).
* :class:`EndpointChat`: ``/v1/chat/completions`` of any OpenAI-compatible server, through the
  client's HTTP transport (retries, streaming). Servers do not all report usage on streams, so
  token counts they leave out are estimated (4 characters a token).
* :class:`ScriptedModel`: replies fixed in advance, in order; for tests, the oracle and replays.

A model that cannot answer raises the client's one error type, :class:`smallcode.client.ClientError`.

Not here: what the replies mean (``actions.py``), the loop (``loop.py``).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from smallcode.client import Chat, ClientError, Sampling


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
    """Replays ``replies`` one per call, whatever it is asked; :class:`ClientError` once they run out."""

    def __init__(self, replies: list[str], name: str = "scripted") -> None:
        self.replies = list(replies)
        self.name = name
        self.calls = 0
        self._lock = threading.Lock()

    def chat(self, messages: list[dict[str, str]], n: int = 1, temperature: float = 0.0, max_tokens: int = 0,
             seed: int = 0) -> list[Reply]:
        with self._lock:
            if self.calls >= len(self.replies):
                raise ClientError(f"the script has no reply left after {len(self.replies)}")
            text = self.replies[self.calls]
            self.calls += 1
        prompt_chars = sum(len(m["content"]) for m in messages)
        return [Reply(text, estimate_tokens(prompt_chars), estimate_tokens(len(text)))] * n


def estimate_tokens(chars: int) -> int:
    """Token count of ``chars`` characters where no tokenizer is at hand (about 4 per token for code)."""
    return (chars + 3) // 4


class EngineChat:
    """A local checkpoint or ONNX export, prompted through its tokenizer's chat template."""

    def __init__(self, directory: str | Path, device: str = "cpu", speculate: Any = None) -> None:
        from smallcode.client.local import open_local

        self.name = f"smallcode:{directory}"
        self.client = open_local(directory, device=device, name=self.name, speculate=speculate)
        self.format = self.client.prompt_format

    @property
    def engine(self) -> Any:
        return self.client.engine

    def chat(self, messages: list[dict[str, str]], n: int = 1, temperature: float = 0.0, max_tokens: int = 512,
             seed: int = 0) -> list[Reply]:
        context = self.client.max_context
        budget = context - max_tokens
        msgs = list(messages)
        ids = self.client.encode(Chat(msgs))
        # Drop the oldest exchanges (after the system message and the task) until the prompt fits.
        while len(ids) > budget and len(msgs) > 3:
            del msgs[2:4]
            ids = self.client.encode(Chat(msgs))
        if len(ids) > budget:
            raise ClientError(f"the task alone takes {len(ids)} tokens; the model's context holds "
                             f"{context} with {max_tokens} for the reply")
        done = self.client.generate(Chat(msgs), Sampling(max_tokens=max_tokens, temperature=temperature,
                                                         top_p=0.95, seed=seed), n)
        return [Reply(c.text, c.prompt_tokens or len(ids), c.completion_tokens or 0) for c in done]

    def close(self) -> None:
        self.client.close()


class EndpointChat:
    """``/v1/chat/completions`` of an OpenAI-compatible server at ``base_url``."""

    def __init__(self, base_url: str, model: str = "default", api_key: str | None = None,
                 timeout_s: float = 300.0) -> None:
        from smallcode.client.http import HttpClient

        url = base_url.rstrip("/")
        self.name = f"{url if url.endswith('/v1') else url + '/v1'} (chat, model {model})"
        self.client = HttpClient(base_url, model=model, api_key=api_key, timeout_s=timeout_s, name=self.name)

    def chat(self, messages: list[dict[str, str]], n: int = 1, temperature: float = 0.0, max_tokens: int = 512,
             seed: int = 0) -> list[Reply]:
        answers = self.client.generate(Chat(messages), Sampling(max_tokens=max_tokens, temperature=temperature,
                                                                seed=seed), n)
        prompt = estimate_tokens(sum(len(m["content"]) for m in messages))
        return [Reply(a.text, a.prompt_tokens if a.prompt_tokens is not None else prompt,
                      a.completion_tokens if a.completion_tokens is not None else estimate_tokens(len(a.text)))
                for a in answers]


def open_chat_model(model: str | Path | None = None, endpoint: str | None = None, model_name: str = "default",
                    api_key: str | None = None, device: str = "cpu", speculate: Any = None) -> ChatModel:
    """The chat model for ``--model`` (a checkpoint or ONNX export directory) or ``--endpoint`` (a URL);
    ``speculate`` turns speculative decoding on for a local model (``"ngram"``: an edit copies lines
    of the prompt, which prompt lookup proposes)."""
    if (model is None) == (endpoint is None):
        raise ValueError("give exactly one of a model directory and an endpoint URL")
    if speculate is not None and endpoint is not None:
        raise ValueError("--speculate is for a local --model; a server speculates by its own setting")
    if endpoint is not None:
        if not endpoint.startswith(("http://", "https://")):
            raise ValueError(f"{endpoint}: an endpoint is an http(s) URL")
        return EndpointChat(endpoint, model_name, api_key)
    return EngineChat(str(model), device, speculate)
