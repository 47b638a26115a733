"""Mining a real repository's own test suite: problems kept, and the time it takes.

Runs ``smallcode eval mine`` (:func:`smallcode.eval.mining.mine_repo`) on ``--source DIR``, a
pure-Python package's source tree with a pytest (or unittest) suite, and prints one JSON line: lines
of library code (test files excluded), what the suite did (tests collected, passed, failed, skipped,
needing the network), candidates, problems kept (and by which check), and wall time.

Get a source distribution (never needed in CI; the test suite ships a tiny fixture instead), e.g.::

    pip download --no-binary :all: --no-deps more-itertools==10.2.0 -d /tmp/sdists
    tar xzf /tmp/sdists/more-itertools-10.2.0.tar.gz -C /tmp/sdists
    python benchmarks/mine_repo.py --source /tmp/sdists/more-itertools-10.2.0

Its tests need only pytest and the standard library. Last run (2 CPU cores, shared; more-itertools
10.2.0, 5,674 library lines): see docs/evaluation.md ("Mining a repository's own tests").
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path


def library_lines(root: Path) -> int:
    """Lines of the repository's library modules (what the miner may turn into problems)."""
    from smallcode.eval.mining.repo_pytest import discover

    return sum(len(p.read_text(encoding="utf-8", errors="replace").splitlines()) for _, p in discover(root).modules)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", required=True, type=Path, help="The repository's source tree (an unpacked sdist).")
    ap.add_argument("--workers", type=int, default=2, help="Parallel checks (default 2: the target's 2 cores).")
    ap.add_argument("--timeout", type=float, default=10.0, help="Seconds per check.")
    ap.add_argument("--out", type=Path, help="Keep the mined file here (default: a temporary file).")
    args = ap.parse_args()

    from smallcode.eval.mining import mine_repo

    root = args.source.resolve()
    with tempfile.TemporaryDirectory(prefix="smallcode-mine-bench-") as tmp:
        out = args.out or Path(tmp) / "mined.jsonl"
        t0 = time.monotonic()
        mine_repo(root, out, workers=args.workers, timeout_s=args.timeout, progress=True)
        wall = time.monotonic() - t0
        with open(out, encoding="utf-8") as f:
            header = json.loads(f.readline())["header"]
    tests = header.get("tests", {})
    print(json.dumps({
        "source": root.name,
        "library_lines": library_lines(root),
        "cpus": os.cpu_count(),
        "workers": args.workers,
        "tests_collected": tests.get("collected"),
        "tests_passed": tests.get("passed"),
        "tests_failed": tests.get("failed"),
        "tests_skipped": tests.get("skipped"),
        "tests_network": tests.get("network"),
        "tests_seconds": tests.get("seconds"),
        "files_with_problems": len(tests.get("problems", {})),
        "candidates": header["candidates"],
        "kept": header["tasks"],
        "kept_by_check": header.get("by_check", {}),
        "wall_s": round(wall, 1),
    }))


if __name__ == "__main__":
    main()
