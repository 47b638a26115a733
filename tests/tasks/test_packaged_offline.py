"""The suites' data ship with the package: a fresh install with no ../shared and no data directory
loads every data suite with its strict inputs, and ``smallcode eval run`` is strict there.

Each test runs Python on a copy of the package in a temporary directory (the ``offline_python``
fixture): HOME and the working directory elsewhere, SMALLCODE_SHARED_DATA unset.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

from smallcode.eval.runner import load_tasks

Offline = Callable[..., subprocess.CompletedProcess]

# A completion whose result equals anything: the dataset's own asserts (compat) pass it, a comparison
# of serialised outputs in the harness (strict) does not.
ALWAYS_EQUAL = (
    "    class _Yes:\n"
    "        def __eq__(self, other):\n"
    "            return True\n"
    "        def __ne__(self, other):\n"
    "            return False\n"
    "    return _Yes()\n"
)


def test_data_suites_load_with_strict_inputs_without_a_data_directory(offline_python: Offline) -> None:
    code = (
        "import json\n"
        "from smallcode.eval.runner import load_tasks\n"
        "out = {}\n"
        "for suite in ('humaneval', 'humaneval+', 'mbpp', 'mbpp+'):\n"
        "    tasks = load_tasks([suite], None)\n"
        "    out[suite] = {t.task_id: [len(t.inputs), t.meta.get('strict_skip', '')] for t in tasks}\n"
        "print(json.dumps(out))\n"
    )
    proc = offline_python("-c", code)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    assert {s: len(v) for s, v in got.items()} == {"humaneval": 164, "humaneval+": 164, "mbpp": 500, "mbpp+": 399}
    assert all(n > 0 for n, _ in got["humaneval"].values())
    assert all(n > 0 for n, _ in got["humaneval+"].values())
    # MBPP: every task has strict inputs unless the dataset itself rules them out, with the reason.
    assert all(n > 0 or why for n, why in got["mbpp"].values())
    assert sum(n > 0 for n, _ in got["mbpp"].values()) == 484
    # ... and these are the very inputs this checkout loads.
    here = {t.task_id: len(t.inputs) for t in load_tasks(["humaneval", "mbpp"], None)}
    assert {**{k: v[0] for k, v in got["humaneval"].items()}, **{k: v[0] for k, v in got["mbpp"].items()}} == here


def test_eval_run_is_strict_by_default_without_a_data_directory(
    offline_python: Offline, tmp_path: Path, shared_data: Path
) -> None:
    tasks = load_tasks(["humaneval", "mbpp"], shared_data, limit=2)  # only to write the samples
    rows = []
    for t in tasks:
        fake = ALWAYS_EQUAL if t.suite == "humaneval" else f"def {t.entry_point}(*args, **kwargs):\n{ALWAYS_EQUAL}"
        rows += [{"task_id": t.task_id, "completion": t.reference}, {"task_id": t.task_id, "completion": fake}]
    samples = tmp_path / "samples.jsonl"
    samples.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "run"
    proc = offline_python("-m", "smallcode.cli.main", "eval", "run", "--suite", "humaneval,mbpp", "--limit", "2",
                          "--samples", str(samples), "--no-security", "--workers", "2", "--out", str(out),
                          timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(results) == 8
    assert {r["mode"] for r in results} == {"strict"}
    verdict = {(r["task_id"], r["sample"]): r["passed"] for r in results}
    for t in tasks:
        assert verdict[(t.task_id, 0)], f"{t.task_id}: the reference must pass"
        assert not verdict[(t.task_id, 1)], f"{t.task_id}: an always-equal object must fail in strict mode"
    summary = json.loads((out / "summary.json").read_text())
    assert {s: v["modes"] for s, v in summary["suites"].items()} == {"humaneval": {"strict": 4}, "mbpp": {"strict": 4}}
