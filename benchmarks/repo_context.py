"""Repository context for line completion: what retrieval adds, and what it costs (issue #26).

Two parts, one JSON line on stdout:

* **Cost** (no model needed). For each repository (``--latency-repo``, default: the standard
  library's ``email`` package, ~10k lines, and the held-out ``rich``, ~38k lines, as a large case):
  the time to build its index from disk (``index_directory``: the walk, reading, parsing, chunking)
  and the time of one retrieval (``RepoIndex.context`` with the language server's default budget)
  at ``--cursors`` cursors drawn as ``eval lines`` draws them, p50/p95 in milliseconds. The cursor's
  file stays in the index (the language server's case: it is excluded at query time). Goal: build
  <= 5 s, p50 <= 5 ms on a 10k-line repository.
* **Quality** (``--model``; default ``runs/nano/finetune/final`` when it exists). ``eval lines`` on
  the held-out reporting half, ``--n`` cursors, in three context modes: (a) ``in-file`` (no other
  file), (b) ``cross-file`` (other files of the package as open documents), (c) ``retrieval`` (an
  index of the package, the task's file left out). Exact match, characters saved per 100 and the
  retrieval time inside each request, per mode. Run directories go under ``--out`` (a temporary
  directory by default), so a rerun with the same ``--out`` resumes.

Timings are wall-clock on whatever machine runs it; on a shared CPU they are upper bounds.

Last figures (2 CPU cores shared with other jobs, load average 4-6; OMP_NUM_THREADS=1; the model
runs/nano/finetune/final, 200 cursors of the reporting half): stdlib email (10,144 lines) built in
0.34 s, retrieval p50/p95 0.66/4.9 ms; rich (38,515 lines) 0.98 s, 0.52/4.7 ms. Exact match 1.0% in
all three modes; chars saved per 100: 2.60 in-file, 2.49 cross-file, 2.49 retrieval (retrieval
0.95/1.6 ms of a request's 459/610 ms). docs/editors.md ("Repository context") and
docs/evaluation.md ("Line completion") discuss them. Run it with OMP_NUM_THREADS=1: with torch's
threads on busy cores the requests take seconds.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import sysconfig
import tempfile
import time
from pathlib import Path
from typing import Any

SRC = Path(__file__).resolve().parents[1] / "src"
sys.path.insert(0, str(SRC))

from smallcode.eval.lines import LinesSettings, draw_cursors, held_out_tasks, run_lines  # noqa: E402
from smallcode.lsp.context import Budget, retrieval_budget  # noqa: E402
from smallcode.retrieval import index_directory  # noqa: E402

MODES = {"in-file": {}, "cross-file": {"cross_file": True}, "retrieval": {"repo": True}}


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (nearest rank) of ``values``."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


def repo_root(name: str) -> Path:
    """A directory, the standard library's package ``stdlib:NAME``, or an installed package's directory."""
    if name.startswith("stdlib:"):
        return Path(sysconfig.get_paths()["stdlib"]) / name.split(":", 1)[1]
    if Path(name).is_dir():
        return Path(name)
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"{name}: not a directory, stdlib:NAME or an installed package")
    return Path(list(spec.submodule_search_locations)[0])


def cost(name: str, cursors: int) -> dict[str, Any]:
    """Index build time and retrieval latency on the repository ``name`` (see the module docstring)."""
    root = repo_root(name)
    started = time.perf_counter()
    index = index_directory(root)
    build_s = time.perf_counter() - started
    files = [(p, (root / p).read_text(encoding="utf-8", errors="replace")) for p in index.paths()]
    tasks = draw_cursors(files, cursors, seed=0)
    budget = retrieval_budget(Budget(), 0)
    times = []
    for task in tasks:
        t0 = time.perf_counter()
        index.context(task.prefix, task.file, budget)
        times.append((time.perf_counter() - t0) * 1000)
    return {"repo": name, "files": index.files, "lines": sum(t.count("\n") for _, t in files),
            "chunks": index.chunks, "build_s": round(build_s, 3), "cursors": len(tasks),
            "retrieval_p50_ms": round(percentile(times, 50), 3), "retrieval_p95_ms": round(percentile(times, 95), 3),
            "retrieval_mean_ms": round(statistics.fmean(times), 3) if times else None}


def quality(model: Path, n: int, split: str, out: Path) -> dict[str, Any]:
    """``eval lines`` in the three context modes with ``model`` in process."""
    from smallcode.lsp.models import LocalModel

    results: dict[str, Any] = {}
    for mode, flags in MODES.items():
        settings = LinesSettings(split=split, n=n, **flags)
        tasks, fingerprint, packages = held_out_tasks(settings)
        summary = run_lines(tasks, lambda: LocalModel(model, max_batch=1), settings, out / mode, str(model),
                            held_out=fingerprint, packages=packages, progress=False)
        m = summary["all"]
        results[mode] = {"tasks": m["tasks"], "exact_match": m["exact_match"],
                         "chars_saved_per_100": m["chars_saved_per_100"], "edit_similarity": m["edit_similarity"],
                         "latency_p50_ms": m["latency_p50_ms"], "latency_p95_ms": m["latency_p95_ms"],
                         **({"retrieval_p50_ms": m["retrieval_p50_ms"], "retrieval_p95_ms": m["retrieval_p95_ms"]}
                            if "retrieval_p50_ms" in m else {})}
        print(f"{mode}: {results[mode]}", file=sys.stderr)
    return results


def main() -> None:
    """Parse the arguments, run both parts, print one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--latency-repo", action="append", default=None,
                        help="stdlib:NAME, an installed package or a directory (repeat; default: stdlib:email, rich)")
    parser.add_argument("--cursors", type=int, default=500, help="Cursors timed per repository.")
    default_model = Path("runs/nano/finetune/final")
    parser.add_argument("--model", type=Path, default=default_model if default_model.is_dir() else None,
                        help="A checkpoint for the quality part (default: runs/nano/finetune/final if present).")
    parser.add_argument("--n", type=int, default=200, help="Cursors per context mode in the quality part.")
    parser.add_argument("--split", default="report", choices=["report", "tune", "all"])
    parser.add_argument("--out", type=Path, default=None, help="Run directories of the quality part.")
    args = parser.parse_args()
    repos = args.latency_repo or ["stdlib:email", "rich"]
    record: dict[str, Any] = {"benchmark": "repo_context", "cost": [cost(name, args.cursors) for name in repos]}
    for c in record["cost"]:
        print(f"cost: {c}", file=sys.stderr)
    if args.model is not None:
        out = args.out or Path(tempfile.mkdtemp(prefix="repo-context-"))
        record["model"] = str(args.model)
        record["split"] = args.split
        record["quality"] = quality(args.model, args.n, args.split, out)
    print(json.dumps(record))


if __name__ == "__main__":
    main()
