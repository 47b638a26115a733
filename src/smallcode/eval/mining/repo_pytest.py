"""A repository's own pytest (and unittest) suite, run once in the sandbox to learn which tests check which functions.

:func:`trace_repository` copies the repository into a fresh directory, then runs ``pytest`` on that
copy once, as one program inside the evaluation sandbox (:class:`smallcode.eval.sandbox.Sandbox`):
the repository itself is bound read-only, the copy writable, the running environment's packages
read-only (the repository's dependencies, pytest included, come from there), and there is no network.
A small pytest plugin, shipped as the program's own text, records for every test whether it passed,
how long its call took, and, with a ``sys.setprofile`` hook, which functions of the repository's
library code (test files excluded) it called. pytest runs unittest ``TestCase`` classes too.

Bad input never stops the run and is reported per file (:class:`TraceReport`): a test file that
fails to collect (a syntax error, an import error) is skipped (``--continue-on-collection-errors``);
a test that runs past ``test_timeout_s`` is interrupted by an alarm and fails; one that forks without
end meets the sandbox's process limit, and the forked copies of pytest leave at the first hook they
reach; the whole run has a wall-clock limit, after which what was recorded so far is kept (results
are appended line by line) and the test that was running is named. A test that needs the network or
a service fails in the sandbox; such failures are recognised by their error text and counted apart.

:mod:`smallcode.tasks.repo` turns traced functions into problems (:func:`~smallcode.tasks.repo.pytest_candidate`);
the miner (:mod:`smallcode.eval.mining.repo`) keeps those the harness passes with the original body
and fails with ``pass`` / ``return None``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from smallcode.corpus import python_files
from smallcode.eval.mining.repo_tests import TracedTest, function_lines
from smallcode.sandbox.isolation import environment_paths
from smallcode.tasks.repo import PYTEST_ARGS, Candidate, pytest_candidate

MAX_TEST_SECONDS = 1.0
"""Tests whose call took longer than this are not used as checks."""
TESTS_PER_TASK = 3
_TEST_DIR_NAMES = {"tests", "test", "testing"}
# Top-level directories of a repository that hold no library code (documentation, examples, tools).
_NOT_LIBRARY_DIRS = {"docs", "doc", "examples", "example", "benchmarks", "bench", "scripts", "tools", "build", "dist"}
# Error text of a test that needed the network or a service the sandbox does not have.
_NETWORK_MARKERS = (
    "socket.gaierror", "Temporary failure in name resolution", "Name or service not known",
    "Network is unreachable", "ConnectionRefusedError", "Connection refused", "ConnectionError",
    "NewConnectionError", "URLError", "No route to host",
)


def is_test_file(rel: str) -> bool:
    """Whether the repository-relative path ``rel`` belongs to the tests (test files, conftest, test dirs)."""
    parts = Path(rel).parts
    name = parts[-1]
    return (
        name == "conftest.py"
        or name.startswith("test_")
        or name.endswith("_test.py")
        or any(p in _TEST_DIR_NAMES for p in parts[:-1])
    )


@dataclass(frozen=True)
class LocalRepo:
    """A repository's library modules: where each is and under which name it is imported."""

    root: Path
    modules: tuple[tuple[str, Path], ...]
    """(dotted import name, file) of every library module (test files excluded)."""
    import_roots: tuple[Path, ...]
    """Directories that must be on ``sys.path`` to import them (the root, ``src/``, ...)."""


def discover(root: str | Path) -> LocalRepo:
    """The library modules of the repository at ``root``: each ``.py`` file that is not a test file,
    named by walking up through packages (directories with ``__init__.py``) to its import root."""
    root = Path(root).resolve()
    modules: list[tuple[str, Path]] = []
    import_roots: list[Path] = []
    for path in python_files(root, (".py",)):
        rel = path.relative_to(root).as_posix()
        if is_test_file(rel) or path.name in ("setup.py", "noxfile.py", "conftest.py") or \
                Path(rel).parts[0] in _NOT_LIBRARY_DIRS:
            continue
        parts = [] if path.name == "__init__.py" else [path.stem]
        d = path.parent
        while (d / "__init__.py").is_file() and d != root:
            parts.insert(0, d.name)
            d = d.parent
        if (d / "__init__.py").is_file() and d == root:  # the root is itself a package
            parts.insert(0, d.name)
            d = d.parent
        if not parts or not all(p.isidentifier() for p in parts):
            continue
        modules.append((".".join(parts), path))
        if d not in import_roots:
            import_roots.append(d)
    import_roots.sort(key=lambda p: (p != root / "src", len(p.parts), str(p)))
    return LocalRepo(root, tuple(modules), tuple(import_roots))


@dataclass
class TraceReport:
    """What one run of a repository's tests did: counts, and what went wrong, file by file."""

    collected: int = 0
    passed: int = 0
    failed: int = 0
    skipped: int = 0
    network: int = 0
    """Failures whose error says they needed the network or a service (not in ``failed``)."""
    seconds: float = 0.0
    completed: bool = False
    """False when the run was cut off (whole-run timeout, or the sandbox itself failed)."""
    problems: dict[str, list[str]] = field(default_factory=dict)
    """Test file -> one line per problem (collection error, failed/hanging test)."""
    tests: list[TracedTest] = field(default_factory=list)
    """The quick passing tests, with what each called (files of the original repository)."""
    plugins: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Test id -> the entry-point pytest plugins whose fixtures it used."""
    config_plugins: tuple[str, ...] = ()
    """Entry-point plugins the repository's configuration names (loaded for every check)."""

    def summary(self) -> dict[str, Any]:
        """The counts and problem lines, as plain data (for a mined file's header)."""
        return {"collected": self.collected, "passed": self.passed, "failed": self.failed, "skipped": self.skipped,
                "network": self.network, "seconds": round(self.seconds, 2), "completed": self.completed,
                "quick_passing": len(self.tests), "problems": self.problems}


_TRACER = r'''
import json, os, signal, site, sys, time
cfg = json.loads(%(cfg)r)
for _p in cfg["site"]:
    site.addsitedir(_p)
sys.path[:0] = cfg["import_roots"]
sys.dont_write_bytecode = True
os.chdir(cfg["root"])
import pytest

MAIN = os.getpid()
LIB = cfg["root"] + "/"
TEST_DIRS = set(cfg["test_dirs"])
out = open(cfg["out"], "a", buffering=1)


def emit(rec):
    rec["t"] = round(time.monotonic(), 3)
    out.write(json.dumps(rec) + "\n")


lib_cache = {}


def is_lib(fn):
    if not fn.startswith(LIB) or not fn.endswith(".py"):
        return False
    parts = fn[len(LIB):].split("/")
    name = parts[-1]
    return not (name == "conftest.py" or name.startswith("test_") or name.endswith("_test.py")
                or any(p in TEST_DIRS for p in parts[:-1]))


calls = set()

# Plugins installed through entry points (what a check must load again when a test uses one of their
# fixtures): top-level module -> entry-point name, and entry-point name -> distribution name.
plugin_modules, entry_plugins = {}, {}
try:
    import importlib.metadata as _md
    for _ep in _md.entry_points(group="pytest11"):
        plugin_modules[_ep.value.split(":")[0].split(".")[0]] = _ep.name
        entry_plugins[_ep.name] = _ep.dist.name if _ep.dist is not None else _ep.name
except Exception:
    pass


def plugins_used(item):
    used = set()
    info = getattr(item, "_fixtureinfo", None)
    for defs in (getattr(info, "name2fixturedefs", None) or {}).values():
        for fd in defs:
            top = (getattr(fd.func, "__module__", None) or "").split(".")[0]
            if top in plugin_modules:
                used.add(plugin_modules[top])
    return sorted(used)


def profile(frame, event, arg):
    if event == "call":
        code = frame.f_code
        fn = code.co_filename
        ok = lib_cache.get(fn)
        if ok is None:
            ok = lib_cache[fn] = is_lib(fn)
        if ok:
            calls.add((fn, code.co_firstlineno, code.co_name))


class TestTimeout(Exception):
    pass


def on_alarm(signum, frame):
    raise TestTimeout("test ran past %%.1fs" %% cfg["test_timeout"])


def leave_if_forked():
    # A forked copy of pytest (a test that forks and fails in the child) must not run more tests.
    if os.getpid() != MAIN:
        os._exit(0)


forked = [False]
os.register_at_fork(after_in_parent=lambda: forked.__setitem__(0, True))


def group_members():
    """Other processes of our process group (a test's forked copies), from /proc."""
    me, group = os.getpid(), os.getpgid(0)
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        try:
            with open("/proc/" + name + "/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == group and fields[0] != "Z":
            found.append(int(name))
    return found


def end_forks():
    # After a test that forked, what it left running in our process group is killed, round after
    # round until none is left (a fork storm makes new ones while it is being killed).
    if not forked[0]:
        return
    forked[0] = False
    for _ in range(200):
        pids = group_members()
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
    try:
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    except ChildProcessError:
        pass


class Tracer:
    def __init__(self):
        self.phases = {}

    def pytest_collectreport(self, report):
        leave_if_forked()
        if report.failed:
            emit({"kind": "collect_error", "file": report.fspath, "error": report.longreprtext[-600:]})

    def pytest_collection_finish(self, session):
        emit({"kind": "collected", "n": len(session.items)})
        emit({"kind": "plugins", "dists": entry_plugins})

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(self, item, nextitem):
        emit({"kind": "start", "id": item.nodeid, "file": item.location[0]})
        self.phases = {"seconds": 0.0, "calls": [], "plugins": plugins_used(item)}
        yield
        leave_if_forked()
        end_forks()

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_call(self, item):
        calls.clear()
        signal.signal(signal.SIGALRM, on_alarm)
        signal.setitimer(signal.ITIMER_REAL, cfg["test_timeout"])
        t0 = time.perf_counter()
        sys.setprofile(profile)
        try:
            yield
        finally:
            sys.setprofile(None)
            signal.setitimer(signal.ITIMER_REAL, 0)
            leave_if_forked()
            self.phases["seconds"] = time.perf_counter() - t0
            self.phases["calls"] = sorted(calls)

    def pytest_runtest_logreport(self, report):
        leave_if_forked()
        self.phases[report.when] = report
        if report.when != "teardown":
            return
        reps = [self.phases.get(w) for w in ("setup", "call", "teardown")]
        failed = [r for r in reps if r is not None and r.failed]
        skipped = any(r is not None and r.skipped for r in reps)
        rec = {"kind": "test", "id": report.nodeid, "file": report.location[0],
               "seconds": self.phases.get("seconds", 0.0)}
        if failed:
            rec["outcome"] = "failed"
            rec["error"] = failed[0].longreprtext[-1500:]
        elif skipped:
            rec["outcome"] = "skipped"
        else:
            rec["outcome"] = "passed"
            rec["calls"] = self.phases.get("calls", [])
            rec["plugins"] = self.phases.get("plugins", [])
        emit(rec)


args = ["--rootdir", cfg["root"], "--confcutdir", cfg["root"], "--continue-on-collection-errors", *cfg["pytest_args"]]
code = pytest.main(args, plugins=[Tracer()])
leave_if_forked()
emit({"kind": "done", "exit": int(code)})
'''


def _copy(src: Path, dst: Path) -> None:
    shutil.copytree(src, dst, symlinks=True,
                    ignore=shutil.ignore_patterns(".git", ".hg", "__pycache__", ".tox", ".nox", ".venv", "*.pyc",
                                                  ".pytest_cache", ".mypy_cache"))


def _chown_tree(top: str, uid: int) -> None:
    for dirpath, dirnames, filenames in os.walk(top):
        os.lchown(dirpath, uid, uid)
        for n in dirnames + filenames:
            os.lchown(os.path.join(dirpath, n), uid, uid)


def _first_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    # pytest puts the exception's own line last ("E   ImportError: ..."); that names the problem.
    errs = [ln for ln in lines if ln.startswith("E ")]
    line = (errs[0][1:].strip() if errs else lines[-1] if lines else "no detail")
    return line[:240]


def trace_repository(
    repo: LocalRepo,
    timeout_s: float = 600.0,
    test_timeout_s: float = 10.0,
    progress: bool = True,
    max_test_seconds: float = MAX_TEST_SECONDS,
) -> TraceReport:
    """Run ``repo``'s test suite once in the sandbox with call tracing (see the module docstring)."""
    from tqdm import tqdm

    from smallcode.eval.sandbox import Limits, Sandbox

    report = TraceReport()
    tmp = tempfile.mkdtemp(prefix="smallcode-trace-")
    try:
        os.chmod(tmp, 0o755)
        # Named as the original: a repository that is itself a package is imported from the parent.
        copy = Path(tmp) / repo.root.name
        _copy(repo.root, copy)
        out = os.path.join(tmp, "trace.jsonl")
        Path(out).touch()
        roots = [str(copy.parent / r.relative_to(repo.root.parent)) for r in repo.import_roots]
        cfg = {"root": str(copy), "site": list(environment_paths()), "import_roots": roots, "out": out,
               "test_dirs": sorted(_TEST_DIR_NAMES), "test_timeout": float(test_timeout_s),
               "pytest_args": list(PYTEST_ARGS)}
        program = _TRACER % {"cfg": json.dumps(cfg)}
        limits = Limits(timeout_s=timeout_s, memory_mb=4096, file_size_mb=64, open_files=512, processes=64,
                        output_bytes=4096)
        sb = Sandbox("auto", limits, ro_paths=(str(repo.root), *environment_paths()), rw_paths=(tmp,))
        try:
            if sb.child_uid is not None:
                _chown_tree(tmp, sb.child_uid)
            result: dict[str, Any] = {}

            def run() -> None:
                result["run"] = sb.run(program, mode="exec", timeout_s=timeout_s)

            t0 = time.monotonic()
            worker = threading.Thread(target=run, daemon=True)
            worker.start()
            bar = tqdm(desc=f"running tests of {repo.root.name}", unit="test", disable=not progress)
            seen = 0
            while worker.is_alive():
                worker.join(0.5)
                rows = _read_rows(out)
                total = next((r["n"] for r in rows if r.get("kind") == "collected"), None)
                if total is not None and bar.total != total:
                    bar.total = total
                done = sum(1 for r in rows if r.get("kind") == "test")
                bar.update(done - seen)
                seen = done
            bar.close()
            report.seconds = time.monotonic() - t0
        finally:
            sb.close()
        _summarise(_read_rows(out), report, copy, repo.root, max_test_seconds, result.get("run"), timeout_s)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return report


def _read_rows(path: str) -> list[dict[str, Any]]:
    rows = []
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                try:
                    rows.append(json.loads(line))
                except ValueError:
                    break  # a line cut off when the run was killed
    except OSError:
        pass
    return rows


def _summarise(rows: list[dict[str, Any]], report: TraceReport, copy: Path, root: Path, max_test_seconds: float,
               run: Any, timeout_s: float) -> None:
    problems: dict[str, list[str]] = defaultdict(list)
    prefix = str(copy) + "/"
    started: dict[str, str] = {}
    finished: set[str] = set()
    for r in rows:
        kind = r.get("kind")
        if kind == "collected":
            report.collected = int(r["n"])
        elif kind == "collect_error":
            file = str(r["file"])
            file = file[len(prefix):] if file.startswith(prefix) else file
            problems[file].append(f"collection error: {_first_line(r['error'])}")
        elif kind == "start":
            started[r["id"]] = r["file"]
        elif kind == "test":
            finished.add(r["id"])
            outcome = r["outcome"]
            if outcome == "skipped":
                report.skipped += 1
            elif outcome == "failed":
                if any(m in r.get("error", "") for m in _NETWORK_MARKERS):
                    report.network += 1
                    problems[r["file"]].append(f"{r['id']}: needs the network or a service (skipped)")
                else:
                    report.failed += 1
                    problems[r["file"]].append(
                        f"{r['id']}: failed after {r['seconds']:.1f}s: {_first_line(r.get('error', ''))}")
            else:
                report.passed += 1
                if r["seconds"] <= max_test_seconds:
                    called = frozenset(
                        (str(root / c[0][len(prefix):]), int(c[1]), str(c[2]))
                        for c in r.get("calls", []) if c[0].startswith(prefix)
                    )
                    report.tests.append(TracedTest(r["id"], float(r["seconds"]), called))
                    report.plugins[r["id"]] = tuple(r.get("plugins", ()))
        elif kind == "plugins":
            report.config_plugins = _configured_plugins(root, r.get("dists", {}))
        elif kind == "done":
            report.completed = True
    if not report.completed:
        cut = [tid for tid in started if tid not in finished]
        why = f"the whole run passed its {timeout_s:.0f}s limit" if run is None or run.status == "timeout" \
            else f"the run ended early ({run.status}: {run.error or run.output[-200:]})"
        if cut:
            problems[started[cut[-1]]].append(f"{cut[-1]}: still running when {why}; later tests did not run")
        else:
            problems["(run)"].append(why)
    report.problems = {k: v for k, v in sorted(problems.items())}


def pytest_candidates(repo: LocalRepo, report: TraceReport) -> list[Candidate]:
    """Unchecked candidates: every function of ``repo``'s library modules (module-level, or a plain
    method of a module-level class) that a quick passing test of ``report`` called and that has a
    docstring or a descriptive name; its check runs up to three of those tests."""
    by_fn = tests_by_function(report.tests)
    roots = tuple(str(r) for r in repo.import_roots)
    site_dirs = environment_paths()
    found: list[Candidate] = []
    for module, path in repo.modules:
        real = os.path.realpath(path)
        for qual, line in function_lines(path).items():
            tests = by_fn.get((real, line))
            if not tests:
                continue
            chosen = choose_tests(tests)
            plugins = sorted({*report.config_plugins, *(p for t in chosen for p in report.plugins.get(t, ()))})
            c = pytest_candidate(module, path, qual, chosen, str(repo.root), roots, site_dirs, tuple(plugins))
            if c is not None:
                found.append(c)
    return found


_CONFIG_FILES = ("pyproject.toml", "setup.cfg", "tox.ini", "pytest.ini", "requirements-dev.txt",
                 "requirements-test.txt", "requirements_test.txt", "test-requirements.txt")


def _configured_plugins(root: Path, dists: dict[str, str]) -> tuple[str, ...]:
    """Entry-point plugins whose name or distribution the repository's configuration mentions (an
    ``asyncio_mode`` setting, a test requirement): they may act without a fixture."""
    text = ""
    for name in _CONFIG_FILES:
        try:
            text += (root / name).read_text(encoding="utf-8", errors="replace").lower().replace("_", "-") + "\n"
        except OSError:
            continue
    found = []
    for ep, dist in sorted(dists.items()):
        words = {ep.lower().replace("_", "-"), dist.lower().replace("_", "-")}
        if any(w and w != "pytest" and w in text for w in words):
            found.append(ep)
    return tuple(found)


def tests_by_function(traced: list[TracedTest]) -> dict[tuple[str, int], list[TracedTest]]:
    """(file, first line) of each traced function -> the passing tests that called it."""
    by_fn: dict[tuple[str, int], list[TracedTest]] = defaultdict(list)
    for t in traced:
        for file, line, _ in t.calls:
            by_fn[(os.path.realpath(file), line)].append(t)
    return by_fn


def choose_tests(tests: list[TracedTest], n: int = TESTS_PER_TASK) -> tuple[str, ...]:
    """Up to ``n`` of the tests, the most focused first (fewest functions called), then the quickest."""
    ranked = sorted(tests, key=lambda t: (len(t.calls), t.seconds, t.test_id))
    return tuple(sorted(t.test_id for t in ranked[:n]))


__all__ = ["MAX_TEST_SECONDS", "LocalRepo", "TraceReport", "choose_tests", "discover", "is_test_file",
           "pytest_candidates", "tests_by_function", "trace_repository"]
