"""smallcode checkpoints as a backend, through the inference engine (``smallcode.runtime``).

The engine batches the prompts it is given, prefills each prompt once for its ``n`` samples and
stops each sample at the first stop sequence, so this module is only the translation between the
``Backend`` call and ``Engine.generate``. The seed of each call is fixed (``seed``), so a resumed
evaluation regenerates nothing differently from an uninterrupted one.
"""

from __future__ import annotations

from pathlib import Path

from smallcode.backends.base import BackendError


class LocalBackend:
    name: str

    def __init__(self, checkpoint: str | Path, device: str = "cpu", seed: int = 0, batch_prompts: int = 8) -> None:
        from smallcode.model.checkpoint import CheckpointError
        from smallcode.runtime.engine import Engine

        self.name = f"smallcode:{checkpoint}"
        self.seed = seed
        self.batch_prompts = batch_prompts
        try:
            self.engine = Engine.from_checkpoint(checkpoint, device=device)
        except (CheckpointError, ValueError) as e:
            raise BackendError(f"{checkpoint}: cannot load the smallcode checkpoint ({e})") from e

    def generate(
        self, prompts: list[str], n: int, temperature: float, top_p: float, max_tokens: int, stop: list[str]
    ) -> list[list[str]]:
        from smallcode.runtime.engine import GenerationError
        from smallcode.runtime.sampling import SamplingParams

        params = SamplingParams(max_tokens=max_tokens, temperature=temperature, top_p=top_p, seed=self.seed,
                                stop=[s for s in stop if s])
        out: list[list[str]] = []
        for i in range(0, len(prompts), self.batch_prompts):
            chunk = prompts[i : i + self.batch_prompts]
            try:
                completions = self.engine.generate(chunk, params, n=n)
            except GenerationError as e:
                raise BackendError(f"{self.name}: {e}") from e
            out += [[c.text for c in completions[j * n : (j + 1) * n]] for j in range(len(chunk))]
        return out
