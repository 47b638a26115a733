"""Mining repository problems: function-completion tasks from local Python code, checked in the sandbox.

``mine_repo(source, out)`` reads every module of ``source`` (a directory, an importable package or
module name, or ``"stdlib"`` for the standard library of the running interpreter, walked by
:func:`smallcode.corpus.stdlib_modules`) and turns functions into tasks, built by
:mod:`smallcode.tasks.repo` (which says what a problem is made of):

* **doctest problems** (any source): functions that some doctest of the same module calls (a function
  by name, a method as ``.name(...)``); strict inputs kept only when the outputs are plain data.
* **unit-test problems** (standard library): functions without such a doctest that CPython's
  own tests exercise (found by tracing, see :mod:`repo_tests`).
* **repository-test problems** (a directory with tests): functions that the repository's own
  pytest/unittest suite exercises, found by running it once in the sandbox with call tracing
  (:mod:`repo_pytest`); checked by those tests. Tried before a function's doctests.

A task is kept only if, run through the harness's own sandbox and checker, the original body passes
(twice, to drop flaky ones) and the trivially wrong bodies ``pass`` and ``return None`` fail; the
same rule decides whether strict inputs are kept. Mined files are written and read here
(:func:`load_mined`); :func:`write_manifest` pins mined tasks as the ``repo`` suite, which
:func:`smallcode.tasks.repo.load_pinned_stdlib` rebuilds.

Not done: unit-test problems for an importable package given by name (a directory is needed, whose
tests are run); relative imports in a doctest-mined module (such modules fail their
check and are dropped); async functions; decorated methods. Stdlib problems cannot stop a model that
has memorised the standard library; they measure completion in a real code base, not novelty.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

from smallcode.corpus import python_modules, stdlib_modules
from smallcode.fileio import JsonlError, atomic_write_text, numbered_jsonl
from smallcode.tasks import values
from smallcode.tasks.base import Task
from smallcode.tasks.manifest import MANIFEST, ManifestEntry, RepoManifest
from smallcode.tasks.pinned import DataFileError
from smallcode.tasks.repo import (
    SUITE,
    Candidate,
    load_pinned_stdlib,
    module_candidates,
    task_sha256,
    test_candidate,
    to_task,
    wrong_bodies,
)

FORMAT_VERSION = 1
# Modules the checks themselves run on (unittest, doctest) or that start threads and event loops:
# replacing one of their functions breaks the check, not the candidate.
_TEST_SKIP_MODULES = {"unittest", "doctest", "threading", "asyncio", "logging", "concurrent", "multiprocessing"}


# ---- discovering modules --------------------------------------------------------------------------


def _module_files(source: str | Path) -> tuple[str, list[tuple[str, Path]]]:
    """(label, [(module name, file)]) for a directory, ``"stdlib"``, or an importable name, found by
    the one walker of :mod:`smallcode.corpus` (the corpus holds out exactly what it names)."""
    if str(source) == "stdlib":
        return f"stdlib-{sys.version_info.major}.{sys.version_info.minor}", stdlib_modules()
    path = Path(source)
    if path.is_dir():
        prefix = path.name + "." if (path / "__init__.py").exists() else ""
        return str(path.resolve()), [(m, p) for m, p in python_modules(path, prefix) if m]
    if path.suffix == ".py" and path.is_file():
        return str(path.resolve()), [(path.stem, path)]
    try:
        spec = importlib.util.find_spec(str(source))
    except (ImportError, ValueError) as e:
        raise DataFileError(f"{source}: not a directory and not an importable module ({e})") from e
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        raise DataFileError(f"{source}: not a directory and not an importable pure-Python module")
    if spec.submodule_search_locations:
        pkg_dir = Path(spec.origin).parent
        return str(source), python_modules(pkg_dir, str(source) + ".")
    return str(source), [(str(source), Path(spec.origin))]


# ---- checking candidates with the harness -----------------------------------------------------------


class _Checker:
    """Runs a task's checks with the harness's sandbox and verdict code, one sandbox per thread.

    Falls back to a plain subprocess (compat only, no strict inputs) where the sandbox is unavailable.
    """

    def __init__(self, timeout_s: float, ro_paths: tuple[str, ...] = ()) -> None:
        self.timeout_s = timeout_s
        self.ro_paths = ro_paths
        self.local = threading.local()
        self.sandboxes: list[Any] = []
        self.lock = threading.Lock()
        try:
            from smallcode.eval import check as _check
            from smallcode.eval import expected as _expected
            from smallcode.eval import sandbox as _sandbox

            self.check_mod, self.sandbox_mod, self.expected_mod = _check, _sandbox, _expected
        except ImportError:
            self.check_mod = self.sandbox_mod = self.expected_mod = None

    def _sandbox(self) -> Any:
        sb = getattr(self.local, "sb", None)
        if sb is None:
            limits = self.sandbox_mod.checking_limits(self.timeout_s, self.ro_paths)
            sb = self.sandbox_mod.Sandbox(limits=limits, ro_paths=self.ro_paths)
            self.local.sb = sb
            with self.lock:
                self.sandboxes.append(sb)
        return sb

    def compat(self, task: Task, completion: str) -> bool:
        if self.check_mod is None:
            from smallcode.eval.check import compat_program
            from smallcode.eval.sandbox import run_python

            return run_python(compat_program(task, completion), timeout=self.timeout_s).ok
        return self.check_mod.check_compat(task, completion, self._sandbox(), timeout_s=self.timeout_s).passed

    def strict_ok(self, task: Task) -> bool:
        """True when the reference's outputs are plain data and tell the original from wrong bodies."""
        if self.check_mod is None or not task.inputs:
            return False
        sb = self._sandbox()
        try:
            expected = self.expected_mod.expected_outputs(task, sb, timeout_s=self.timeout_s)
        except self.expected_mod.ReferenceFailure:
            return False
        try:
            values.to_plain([values.decode(e) for e in expected])  # "other" or "raise" are not plain data
        except (ValueError, values.CodecError, TypeError, IndexError):
            return False

        def passes(completion: str) -> bool:
            return self.check_mod.check_strict(task, completion, sb, expected, timeout_s=self.timeout_s).passed

        return passes(task.reference) and not any(passes(w) for w in wrong_bodies(task))

    def close(self) -> None:
        for sb in self.sandboxes:
            sb.close()


def _verify(checker: _Checker, c: Candidate) -> Task | None:
    task = to_task(c, with_inputs=False)
    if not checker.compat(task, task.reference):
        return None
    if any(checker.compat(task, w) for w in wrong_bodies(task)):
        return None
    if not checker.compat(task, task.reference):  # flaky (time, randomness, global state): drop
        return None
    if c.inputs:
        strict = to_task(c, with_inputs=True)
        if checker.strict_ok(strict):
            return strict
    return task


def _task_record(task: Task) -> dict[str, Any]:
    rec = asdict(task)
    rec["inputs"] = values.to_plain(list(task.inputs))
    rec["sha256"] = task_sha256(task)
    return rec


def _write_jsonl_atomic(path: Path, records: Iterator[dict[str, Any]] | list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, "".join(json.dumps(rec, ensure_ascii=False) + "\n" for rec in records))


def select_stable(tasks: list[Task], limit: int | None) -> list[Task]:
    """At most ``limit`` tasks, the first by the hash of their id (spread over modules, stable), by id."""
    chosen = sorted(tasks, key=lambda t: hashlib.sha256(t.task_id.encode()).hexdigest())[:limit]
    return sorted(chosen, key=lambda t: t.task_id)


def mine_candidates(
    source: str | Path, test_modules: tuple[str, ...] | None = None, progress: bool = False
) -> tuple[str, list[Candidate]]:
    """(label, candidates): doctest candidates of every module, then (when ``test_modules`` is given, or
    by default for ``"stdlib"``) functions without one that those unit-test modules exercise."""
    label, files = _module_files(source)
    found: list[Candidate] = []
    for module, path in files:
        found += module_candidates(module, path)
    if test_modules and str(source) != "stdlib":
        # The checks import the real module inside the sandbox, which sees only system paths.
        raise ValueError("unit-test mining (test_modules) is supported for the standard library only")
    if test_modules is None and str(source) == "stdlib":
        from smallcode.eval.mining.repo_tests import STDLIB_TEST_MODULES

        test_modules = STDLIB_TEST_MODULES
    if test_modules:
        from smallcode.eval.mining import repo_tests

        by_fn = repo_tests.tests_by_function(repo_tests.trace_tests_of(test_modules, progress=progress))
        have = {(c.module, c.qualname) for c in found}
        for module, path in files:
            real = os.path.realpath(path)
            for qual, line in repo_tests.function_lines(path).items():
                tests = by_fn.get((real, line))
                if not tests or (module, qual) in have or module.split(".")[0] in _TEST_SKIP_MODULES:
                    continue
                c = test_candidate(module, path, qual, repo_tests.choose_tests(tests))
                if c is not None:
                    found.append(c)
    return label, found


def local_test_candidates(
    root: Path, have: list[Candidate], run_timeout_s: float = 600.0, test_timeout_s: float = 10.0,
    progress: bool = True,
) -> tuple[list[Candidate], Any]:
    """(candidates, :class:`~smallcode.eval.mining.repo_pytest.TraceReport`): run the repository's
    own test suite once in the sandbox and make a candidate of every function it exercises that
    ``have`` (the doctest candidates) does not already hold."""
    from smallcode.eval.mining import repo_pytest

    repo = repo_pytest.discover(root)
    report = repo_pytest.trace_repository(repo, timeout_s=run_timeout_s, test_timeout_s=test_timeout_s,
                                          progress=progress)
    taken = {(os.path.realpath(c.source_file), c.qualname) for c in have}
    found = [c for c in repo_pytest.pytest_candidates(repo, report)
             if (os.path.realpath(c.source_file), c.qualname) not in taken]
    return found, report


def _has_tests(root: Path) -> bool:
    from smallcode.corpus import python_files
    from smallcode.eval.mining.repo_pytest import is_test_file

    return any(is_test_file(p.relative_to(root).as_posix()) and p.name != "conftest.py"
               for p in python_files(root, (".py",)))


def _verify_all(checker: _Checker, candidates: list[Candidate], limit: int | None, workers: int | None,
                progress: bool, desc: str) -> list[Task]:
    """The tasks of ``candidates`` that pass verification (at most ``limit``), checked in parallel."""
    from tqdm import tqdm

    if not candidates:
        return []
    # Checked in the order of their id's hash, so that with a limit the first `limit` that pass are
    # a spread over modules and the same on every machine, and checking can stop early.
    candidates = sorted(candidates,
                        key=lambda c: hashlib.sha256(f"{SUITE}/{c.module}/{c.qualname}".encode()).hexdigest())
    kept: list[Task] = []
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        for task in tqdm(pool.map(lambda c: _verify(checker, c), candidates), total=len(candidates), desc=desc,
                         unit="fn", disable=not progress):
            if task is not None:
                kept.append(task)
                if limit is not None and len(kept) >= limit:
                    pool.shutdown(wait=True, cancel_futures=True)
                    break
    return kept


def mine_repo(
    source: str | Path,
    out: Path,
    limit: int | None = None,
    workers: int | None = None,
    timeout_s: float = 10.0,
    progress: bool = True,
    test_modules: tuple[str, ...] | None = None,
    run_tests: bool = True,
    run_timeout_s: float = 600.0,
    test_timeout_s: float = 10.0,
) -> Path:
    """Mine function-completion problems from ``source`` into the JSONL file ``out``; returns ``out``.

    ``source``: a directory, an importable module or package name, or ``"stdlib"``. ``limit``: keep
    at most this many (chosen by :func:`select_stable`). Each kept problem passed the harness's own
    check with its original body and failed with ``pass`` and ``return None`` bodies. ``test_modules``:
    unit-test modules (dotted names) whose tests may check functions that no doctest calls (default: a
    curated list for ``"stdlib"``). For a directory with tests (``run_tests``), its own pytest/unittest
    suite is run once in the sandbox (at most ``run_timeout_s``, each test ``test_timeout_s``) and the
    functions its quick passing tests exercise become problems too (:mod:`repo_pytest`); what went wrong
    there, file by file, is in the header's ``tests``. The file starts with a header line (source,
    Python version, counts) and is written atomically.
    """

    label, candidates = mine_candidates(source, test_modules, progress=progress)
    trace = None
    local: list[Candidate] = []
    root = Path(source)
    if run_tests and str(source) != "stdlib" and root.is_dir() and _has_tests(root.resolve()):
        local, trace = local_test_candidates(root.resolve(), [], run_timeout_s, test_timeout_s, progress)
    ro: list[str] = []
    for c in local:
        ro += [p for p in (c.pytest_root, *c.site_dirs) if p not in ro]
    checker = _Checker(timeout_s, tuple(ro))
    try:
        # A function the repository's own tests check is tried with them first; its doctest (if any)
        # is tried only when that fails, so each function gives at most one problem.
        kept = _verify_all(checker, local, limit, workers, progress, f"mining {label} (its tests)")
        by_tests = {(os.path.realpath(str(t.meta["file"])), t.meta["qualname"]) for t in kept}
        rest = [c for c in candidates if (os.path.realpath(c.source_file), c.qualname) not in by_tests]
        if limit is None or len(kept) < limit:
            kept += _verify_all(checker, rest, None if limit is None else limit - len(kept), workers, progress,
                                f"mining {label}")
    finally:
        checker.close()
    n_candidates = len({(os.path.realpath(c.source_file), c.qualname) for c in [*local, *candidates]})
    chosen = select_stable(kept, limit)
    header = {
        "format": FORMAT_VERSION,
        "suite": SUITE,
        "source": label,
        "python": ".".join(map(str, sys.version_info[:3])),
        "candidates": n_candidates,
        "verified": len(kept),
        "tasks": len(chosen),
        "strict": sum(1 for t in chosen if t.inputs),
        "by_check": {k: sum(1 for t in chosen if t.meta.get("checked_by") == k)
                     for k in sorted({str(t.meta.get("checked_by")) for t in chosen})},
    }
    if trace is not None:
        header["tests"] = trace.summary()
    _write_jsonl_atomic(Path(out), [{"header": header}, *(_task_record(t) for t in chosen)])
    return Path(out)


# ---- loading ----------------------------------------------------------------------------------------


def load_mined(path: Path) -> list[Task]:
    """Tasks from a file written by :func:`mine_repo`; each line's content hash is checked."""
    path = Path(path)
    if not path.is_file():
        raise DataFileError(f"{path}: mined task file not found")
    tasks = []
    fields = (
        "task_id",
        "suite",
        "prompt",
        "entry_point",
        "reference",
        "test",
        "inputs",
        "atol",
        "preamble",
        "meta",
        "sha256",
    )
    try:
        rows = numbered_jsonl(path)
    except JsonlError as e:
        raise DataFileError(str(e)) from e
    for lineno, rec in rows:
        if lineno == 1 and "header" in rec:
            if rec["header"].get("format") != FORMAT_VERSION:
                raise DataFileError(f"{path}:1: format {rec['header'].get('format')}, expected {FORMAT_VERSION}")
            continue
        missing = [k for k in fields if k not in rec]
        if missing:
            raise DataFileError(f"{path}:{lineno}: record lacks field(s) {', '.join(missing)}")
        try:
            inputs = tuple(tuple(a) for a in values.from_plain(rec["inputs"]))
        except (values.CodecError, TypeError) as e:
            raise DataFileError(f"{path}:{lineno}: bad inputs ({e})") from e
        task = Task(
            task_id=rec["task_id"],
            suite=rec["suite"],
            prompt=rec["prompt"],
            entry_point=rec["entry_point"],
            reference=rec["reference"],
            test=rec["test"],
            inputs=inputs,
            atol=float(rec["atol"]),
            preamble=rec["preamble"],
            meta=rec["meta"],
        )
        if task_sha256(task) != rec["sha256"]:
            raise DataFileError(f"{path}:{lineno}: content hash mismatch for {rec['task_id']} (edited file?)")
        tasks.append(task)
    return tasks

def write_manifest(tasks: list[Task], path: Path = MANIFEST) -> None:
    """Pin ``tasks`` as the ``repo`` suite: write their ids and content hashes as the manifest at ``path``."""
    entries = tuple(ManifestEntry(t.task_id, task_sha256(t), tuple(t.meta.get("tests", ()))) for t in tasks)
    RepoManifest(python=".".join(map(str, sys.version_info[:3])), tasks=entries).write(path)


__all__ = [
    "Candidate",
    "load_mined",
    "load_pinned_stdlib",
    "mine_repo",
    "task_sha256",
    "write_manifest",
]
