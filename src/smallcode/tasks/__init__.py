"""Code tasks and their prompt formats: the suites that evaluation scores and fine-tuning trains on.

Every loader returns :class:`~smallcode.tasks.base.Task`. ``load_suite(name, data_dir=None)`` loads
one suite by name:

* ``humaneval``: the 164 HumanEval tasks; strict inputs from HumanEval+ v0.1.0's base inputs.
* ``humaneval+``: HumanEval+ v0.1.0 (base + plus inputs).
* ``mbpp``: the standard 500-task test split; ``mbpp:full`` (974), ``mbpp:sanitized`` (427), also
  ``mbpp:test``, ``mbpp:prompt``, ``mbpp:validation``, ``mbpp:train``.
* ``mbpp+``: MBPP+ (399 tasks of the pre-release snapshot).
* ``repo``: the 500 pinned standard-library problems (:mod:`smallcode.tasks.repo`), rebuilt from the
  running interpreter's standard library and checked against the package's manifest.

Their data ship with the package (``data/``, each file pinned by sha256; see ``data/NOTICE``);
``data_dir`` is an optional override, a directory laid out like the releases
(``humanevalplus/``, ``mbpp/``, ``mbppplus/``). Nothing here touches the network
(:mod:`smallcode.tasks.fetch` downloads the releases on request only).

Mining a ``repo`` suite of one's own needs the sandbox, so it lives in :mod:`smallcode.eval.mining`,
which this package must not import (``train`` uses it and never imports ``eval``); here the pinned
suite is only rebuilt from source, and its manifest read (:func:`repo_modules`) so that the training
corpus can hold those modules out. A leaf: besides itself, it imports only ``smallcode.fileio`` and
``smallcode.errors``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from smallcode.tasks.base import Task
from smallcode.tasks.manifest import repo_modules
from smallcode.tasks.pinned import DataFileError

DATA_SUITES: tuple[str, ...] = (
    "humaneval",
    "humaneval+",
    "mbpp",
    "mbpp:full",
    "mbpp:sanitized",
    "mbpp:test",
    "mbpp:prompt",
    "mbpp:validation",
    "mbpp:train",
    "mbpp+",
)
"""Suites whose data ship with the package."""
SUITES: tuple[str, ...] = (*DATA_SUITES, "repo")
"""Every suite name :func:`load_suite` (and so an evaluation) accepts."""

__all__ = ["DATA_SUITES", "SUITES", "DataFileError", "Task", "load_suite", "reference_texts", "repo_modules"]


def load_suite(name: str, data_dir: Path | None = None) -> list[Task]:
    """All tasks of suite ``name`` (see the module docstring), in dataset order."""
    data_dir = Path(data_dir) if data_dir is not None else None
    if name == "humaneval":
        from smallcode.tasks.humaneval import load_humaneval

        return load_humaneval(data_dir)
    if name == "humaneval+":
        from smallcode.tasks.evalplus import load_humanevalplus

        return load_humanevalplus(data_dir)
    if name == "mbpp" or name.startswith("mbpp:"):
        from smallcode.tasks.mbpp import SPLITS, load_mbpp

        split = name.partition(":")[2] or "test"
        if split not in SPLITS:
            raise ValueError(f"unknown suite {name!r}; MBPP splits: {', '.join(SPLITS)}")
        return load_mbpp(data_dir, split)  # type: ignore[arg-type]
    if name == "mbpp+":
        from smallcode.tasks.evalplus import load_mbppplus

        return load_mbppplus(data_dir)
    if name == "repo":
        from smallcode.tasks.repo import load_pinned_stdlib

        return load_pinned_stdlib()  # built from this interpreter's stdlib: data_dir does not apply
    raise ValueError(f"unknown suite {name!r}; choose one of {', '.join(SUITES)}")


def reference_texts(suites: Sequence[str], data_dir: Path | None = None) -> dict[str, str]:
    """Every prompt, reference solution and test of the named data suites, each text once, in order,
    labelled ``"<task_id>:<prompt|reference|test>"`` (the first task that has a text names it).

    What a training corpus is decontaminated against: a document sharing a long n-gram with one of
    these texts has seen the benchmark, and the label says which task. Not ``repo``: its problems are
    whole standard-library modules, held out of the embedded corpus by module instead.
    """
    texts: dict[str, str] = {}
    for name in suites:
        if name not in DATA_SUITES:
            raise ValueError(f"reference_texts: {name!r} is not a data suite; choose from {', '.join(DATA_SUITES)}")
        for task in load_suite(name, data_dir):
            for part in ("prompt", "reference", "test"):
                text = getattr(task, part)
                if text.strip() and text not in texts:
                    texts[text] = f"{task.task_id}:{part}"
    return {label: text for text, label in texts.items()}
