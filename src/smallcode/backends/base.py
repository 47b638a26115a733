"""The ``Backend`` protocol that everything needing completions takes, and helpers every backend uses.

Deliberately tiny: a name and one batched ``generate``. Nothing about tasks, prompts formats or
scoring lives here.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

# The stop sequences of the Codex paper for function completion: a new top-level statement ends
# the function the model was asked to write.
DEFAULT_STOP: tuple[str, ...] = ("\nclass", "\ndef", "\n#", "\nif", "\nprint")


class BackendError(RuntimeError):
    """A backend that cannot produce completions (down, misconfigured, answering garbage)."""


@runtime_checkable
class Backend(Protocol):
    name: str
    """Human-readable identity recorded in run outputs (model path, endpoint URL + model)."""

    def generate(
        self,
        prompts: list[str],
        n: int,
        temperature: float,
        top_p: float,
        max_tokens: int,
        stop: list[str],
    ) -> list[list[str]]:
        """``n`` completions for each prompt (same order), each cut at the first stop sequence."""
        ...


def truncate_at_stop(text: str, stop: list[str] | tuple[str, ...]) -> str:
    """Cut ``text`` at the earliest occurrence of any stop sequence (servers may ignore ``stop``)."""
    cut = len(text)
    for s in stop:
        if s:
            i = text.find(s)
            if i != -1:
                cut = min(cut, i)
    return text[:cut]
