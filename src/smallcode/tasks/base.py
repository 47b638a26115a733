"""The one task type every suite loader returns.

A task is a function-completion problem: the model sees ``prompt`` and writes the rest; the program
under test is ``prompt + completion``. Two ways to check it, chosen by the runner:

* ``compat``: run ``test`` (the dataset's own check code, which defines ``check(candidate)`` or is a
  list of asserts) as the dataset's authors do, for numbers comparable with published ones.
* ``strict``: call ``entry_point`` on each of ``inputs`` inside the sandbox, send the outputs back
  serialised, and compare them in the harness with ``expected`` (computed once from
  ``reference`` in another process), so nothing the candidate does can fake a pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# The stop sequences of the Codex paper for function completion: a new top-level statement ends
# the function the model was asked to write (what eval sends with every task, and what fine-tuning
# keeps out of the completions it trains on).
DEFAULT_STOP: tuple[str, ...] = ("\nclass", "\ndef", "\n#", "\nif", "\nprint")


@dataclass(frozen=True)
class Task:
    task_id: str
    """Stable id, e.g. ``HumanEval/0``, ``Mbpp/2``, ``repo/json.decoder/py_scanstring``."""
    suite: str
    """Suite name: ``humaneval``, ``humaneval+``, ``mbpp``, ``mbpp+``, ``repo``."""
    prompt: str
    """What the model is given; the program is ``prompt + completion``."""
    entry_point: str
    """Name of the function under test."""
    reference: str
    """A reference completion (the canonical solution) that passes."""
    test: str = ""
    """The dataset's own check code, for ``compat`` mode."""
    inputs: tuple[tuple[Any, ...], ...] = ()
    """Argument tuples for ``strict`` mode."""
    atol: float = 0.0
    """Absolute float tolerance the dataset allows in ``strict`` comparisons (0 = exact)."""
    preamble: str = ""
    """Code run before the program in both modes (imports the dataset assumes), never model output."""
    meta: dict[str, Any] = field(default_factory=dict, compare=False)
    """Anything else a suite wants to carry (source file, split, version)."""
