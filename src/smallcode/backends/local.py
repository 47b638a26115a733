"""A model directory as a backend, run in this process by the runtime (``smallcode.client.local``).

One adapter for every kind of directory: a smallcode checkpoint and an ONNX export (the engine
behind the batching scheduler) and a Hugging Face directory (``runtime.hf``'s scheduler over
transformers). Each sample is one scheduler request; the prompts of a call are submitted together
and batched by the scheduler. Sample ``i`` of prompt ``j`` is seeded ``seed + j * n + i``, which is
how ``Engine.generate`` seeds its rows, so a call gives what ``Engine.generate(prompts, n=n)`` with
the backend's ``seed`` gives; the seed is fixed so that a resumed evaluation regenerates nothing
differently from an uninterrupted one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from smallcode.backends.base import backend_kind
from smallcode.client import ClientError

Kind = Literal["smallcode", "onnx", "huggingface"]

_PREFIX = {"smallcode": "smallcode", "onnx": "onnx", "huggingface": "hf"}
_WHAT = {"smallcode": "a smallcode checkpoint", "onnx": "an ONNX export",
         "huggingface": "a Hugging Face model directory"}


class LocalBackend:
    name: str

    def __init__(self, directory: str | Path, device: str | None = None, seed: int = 0, kind: Kind | None = None,
                 max_batch: int = 32) -> None:
        """``kind``: what ``directory`` must be (None: whatever it is). ``device``: where the model runs
        (None: the CPU, or the GPU when there is one for a Hugging Face model)."""
        from smallcode.client.local import open_local

        self.seed = seed
        why = ""
        try:
            found: str | None = backend_kind(directory)
        except ClientError as e:
            found, why = None, str(e)
        if found not in _PREFIX or (kind is not None and found != kind):
            wanted = _WHAT.get(kind or "", "a model directory")
            raise ClientError(f"{directory}: cannot load the model: not {wanted} "
                               f"({why or _WHAT.get(found or '', found)})")
        if device is None:
            device = "cpu"
            if found == "huggingface":
                import torch

                device = "cuda" if torch.cuda.is_available() else "cpu"
        assert found is not None
        self.kind: Kind = found  # type: ignore[assignment]
        self.name = f"{_PREFIX[found]}:{directory}"
        # The whole call is queued at once: room for every sample of it.
        self.client = open_local(directory, device=device, max_batch=max_batch, max_queue=1 << 16, name=self.name)

    def generate(
        self, prompts: list[str], n: int, temperature: float, top_p: float, max_tokens: int, stop: list[str]
    ) -> list[list[str]]:
        import asyncio

        from smallcode.client import Sampling, Text
        from smallcode.client.local import run_sync

        async def all_prompts() -> list[list[str]]:
            calls = [self.client.agenerate(Text(p), Sampling(max_tokens=max_tokens, temperature=temperature,
                                                             top_p=top_p, seed=self.seed + j * n,
                                                             stop=tuple(s for s in stop if s)), n)
                     for j, p in enumerate(prompts)]
            return [[c.text for c in out] for out in await asyncio.gather(*calls)]

        return run_sync(all_prompts())

    def close(self) -> None:
        self.client.close()
