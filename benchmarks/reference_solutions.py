"""How many reference solutions pass their own tests, per suite, and why the failing ones fail.

For every suite: the reference solution is checked in ``compat`` mode (the dataset's own check code)
through the harness's sandbox and verdict code. For the suites with strict inputs it also reports
what strict mode depends on: references that raise on some of their own inputs, inputs that violate
the task's contract (EvalPlus), and MBPP asserts whose literal expected value differs from what the
reference returns (type-exact, so ``(4, 5)`` vs ``[4, 5]`` counts).

Usage::

    python benchmarks/reference_solutions.py [--suites humaneval,mbpp,...] [--data DIR]
    python benchmarks/reference_solutions.py --pin     # re-mine the stdlib and rewrite the repo manifest

The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

from tqdm import tqdm

from smallcode.eval.expected import reference_outcomes
from smallcode.eval.runner import load_tasks
from smallcode.tasks import Task


def compat_failures(tasks: list[Task], workers: int) -> dict[str, str]:
    """task_id -> reason, for references that fail their own compat check (in the sandbox)."""
    from smallcode.eval.check import check_compat
    from smallcode.eval.sandbox import Limits, Sandbox

    local = threading.local()
    boxes: list[Sandbox] = []
    lock = threading.Lock()

    def one(t: Task) -> tuple[str, Any]:
        sb = getattr(local, "sb", None)
        if sb is None:
            sb = local.sb = Sandbox(limits=Limits(timeout_s=20.0))
            with lock:
                boxes.append(sb)
        return t.task_id, check_compat(t, t.reference, sb, timeout_s=20.0)

    failures = {}
    try:
        with ThreadPoolExecutor(workers) as pool:
            for tid, v in tqdm(pool.map(one, tasks), total=len(tasks), desc="compat", leave=False):
                if not v.passed:
                    failures[tid] = f"{v.status}: {v.reason}"[:300]
    finally:
        for sb in boxes:
            sb.close()
    return failures


def with_contract(task: Task) -> Task | None:
    """The task with its EvalPlus contract asserts placed at the top of the entry point's body."""
    contract = task.meta.get("contract", "")
    if not contract.strip():
        return None
    if task.suite == "humaneval+":
        return replace(task, reference=contract + task.reference)
    lines = task.reference.splitlines(keepends=True)
    try:
        tree = ast.parse(task.reference)
    except SyntaxError:
        return None
    fn = next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == task.entry_point), None)
    if fn is None:
        return None
    at = fn.body[0].lineno - 1
    if ast.get_docstring(fn) is not None and len(fn.body) > 1:
        at = fn.body[1].lineno - 1
    body = "".join(lines[:at]) + contract.strip("\n") + "\n" + "".join(lines[at:])
    return replace(task, reference=body)


def strict_report(tasks: list[Task], cache: Path | None, workers: int) -> dict[str, Any]:
    """Reference failures and errors on own inputs, contract violations, MBPP assert-literal mismatches.

    The references run as the harness runs them (the sandbox, strict mode's reference limits)."""
    with_inputs = [t for t in tasks if t.inputs]
    failed: dict[str, str] = {}
    outs = reference_outcomes(with_inputs, cache=cache, workers=workers, failures=failed, progress=True)
    report: dict[str, Any] = {
        "tasks_with_inputs": len(with_inputs),
        "inputs": sum(len(t.inputs) for t in with_inputs),
        "reference_fails": {"tasks": len(failed), "examples": dict(list(failed.items())[:10])},
    }
    for label, match in (
        ("reference_raises_on_own_inputs", lambda e: not e.startswith("unencodable:")),
        ("reference_returns_non_plain_data", lambda e: e.startswith("unencodable:")),
    ):
        hit = {}
        for tid, oc in outs.items():
            errs = [o.error for o in oc if not o.ok and match(o.error)]
            if errs:
                hit[tid] = f"{len(errs)}/{len(oc)} inputs, e.g. {errs[0][:100]}"
        report[label] = {"tasks": len(hit), "examples": dict(list(hit.items())[:10])}
    contracted = [c for c in (with_contract(t) for t in with_inputs) if c is not None]
    if contracted:
        cfailed: dict[str, str] = {}
        couts = reference_outcomes(contracted, cache=cache, workers=workers, failures=cfailed, progress=True)
        viol = {
            tid: sum(1 for o in oc if not o.ok and o.error.startswith("AssertionError")) for tid, oc in couts.items()
        }
        viol = {k: v for k, v in viol.items() if v}
        report["contract_violations"] = {
            "tasks": len(viol),
            "inputs": sum(viol.values()),
            "examples": dict(list(viol.items())[:8]),
            "reference_fails": len(cfailed),
        }
    mism = {}
    for t in with_inputs:
        want = t.meta.get("assert_expected")
        if want is None or t.task_id not in outs:
            continue
        got = outs[t.task_id]
        for i, (o, w) in enumerate(zip(got, want, strict=True)):
            if not o.equals(w):
                shown = o.value if o.ok else o.error
                mism[t.task_id] = f"assert {i}: expects {str(w)[:60]}, reference gives {str(shown)[:60]}"
                break
    if any("assert_expected" in t.meta for t in with_inputs):
        report["assert_literal_mismatch"] = {"tasks": len(mism), "examples": dict(list(mism.items())[:12])}
    return report


def classify(reason: str) -> str:
    head = reason.split(":")[1].strip() if reason.count(":") >= 1 else reason
    return head.split()[0] if head else reason


def pin(workers: int) -> dict[str, Any]:
    from smallcode.eval.mining import load_mined, mine_repo, write_manifest

    out = Path(os.environ.get("TMPDIR", "/tmp")) / "smallcode-stdlib-mined.jsonl"
    t0 = time.perf_counter()
    mine_repo("stdlib", out, limit=500, workers=workers)
    tasks = load_mined(out)
    header = json.loads(out.read_text().splitlines()[0])["header"]
    write_manifest(tasks)  # the package's tasks/data/repo_manifest.json
    return {"pinned": len(tasks), "mine_seconds": round(time.perf_counter() - t0, 1), **header}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=None, help="suites' data override (default: the packaged copy)")
    ap.add_argument("--suites", default="humaneval,humaneval+,mbpp:full,mbpp:test,mbpp:sanitized,mbpp+,repo")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--cache", type=Path, default=None, help="expected-output cache file (default: none)")
    ap.add_argument("--pin", action="store_true", help="re-mine the stdlib suite and rewrite its manifest")
    args = ap.parse_args()
    if args.pin:
        print(json.dumps(pin(args.workers)))
        return
    result: dict[str, Any] = {"python": sys.version.split()[0]}
    for suite in args.suites.split(","):
        t0 = time.perf_counter()
        tasks = load_tasks([suite], args.data)
        fails = compat_failures(tasks, args.workers)
        entry: dict[str, Any] = {
            "tasks": len(tasks),
            "reference_passes_compat": len(tasks) - len(fails),
            "failing": fails,
            "failure_kinds": dict(Counter(classify(r) for r in fails.values())),
            "strict_tasks": sum(1 for t in tasks if t.inputs),
        }
        if suite.startswith("mbpp:") or suite == "mbpp":
            entry["compat_only"] = sum(1 for t in tasks if not t.inputs)
        if suite != "repo" and any(t.inputs for t in tasks):
            entry["strict"] = strict_report(tasks, args.cache, args.workers)
        entry["seconds"] = round(time.perf_counter() - t0, 1)
        result[suite] = entry
        print(f"{suite}: {entry['reference_passes_compat']}/{entry['tasks']} references pass", file=sys.stderr)
        print(json.dumps({suite: entry}), file=sys.stderr)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
