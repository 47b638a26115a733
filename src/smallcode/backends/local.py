"""smallcode checkpoints as a backend: the place reserved for it, NOT AVAILABLE YET.

A smallcode checkpoint (``config.json`` + ``model.safetensors`` + ``tokenizer.json``) needs the
inference engine (``smallcode.infer``: KV cache, sampling) to generate; that package has not
landed. Until it does, constructing :class:`LocalBackend` raises :class:`BackendError` with what to
do instead (serve the model behind an OpenAI-compatible endpoint, or export it to a Hugging Face
directory). When the engine exists, ``generate`` is a loop over ``smallcode.infer`` and nothing
else in eval changes.
"""

from __future__ import annotations

from pathlib import Path

from smallcode.backends.base import BackendError


class LocalBackend:
    name: str

    def __init__(self, checkpoint: str | Path) -> None:
        self.name = f"smallcode:{checkpoint}"
        raise BackendError(
            f"{checkpoint}: evaluating smallcode checkpoints directly is not available yet (the "
            "inference engine smallcode.infer has not landed); serve it behind an OpenAI-compatible "
            "endpoint and use --endpoint, or export it to a Hugging Face directory and use --model"
        )

    def generate(
        self, prompts: list[str], n: int, temperature: float, top_p: float, max_tokens: int, stop: list[str]
    ) -> list[list[str]]:
        raise BackendError("LocalBackend is not available yet")


def is_smallcode_checkpoint(path: Path) -> bool:
    """A smallcode checkpoint (not a Hugging Face directory, whose config names a model type)."""
    import json

    cfg = path / "config.json"
    if not (cfg.is_file() and (path / "model.safetensors").is_file()):
        return False
    try:
        data = json.loads(cfg.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and "model_type" not in data and "architectures" not in data
