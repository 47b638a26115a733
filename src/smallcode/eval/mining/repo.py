"""Repository problems: function-completion tasks mined from local Python code.

``mine_repo(source, out)`` reads every module of ``source`` (a directory, an importable package or
module name, or ``"stdlib"`` for the standard library of the running interpreter, site-packages
excluded) and turns functions into tasks in two ways:

* **doctest problems** (any source): module-level functions and plain (undecorated, non-dunder)
  methods of module-level classes, with a docstring and a body after it, that some doctest of the
  same module calls (a function by name, a method as ``.name(...)``). ``preamble`` is the module's own
  source with the function removed (``if __name__ == "__main__"`` blocks dropped), so the program
  needs no file of the source tree, which the sandbox cannot see; ``test`` (compat) runs the
  exercising docstrings' examples with ``doctest``; ``inputs`` (strict, functions only) are the
  examples that are a bare call with literal arguments, kept only when the outputs are plain data.
* **unit-test problems** (standard library only): functions without such a doctest that CPython's
  own tests exercise (found by tracing, see :mod:`repo_tests`); ``test`` runs up to three of those
  tests with the real module's function replaced by the candidate.

In both, ``prompt`` is the signature and docstring (methods dedented, after a comment naming the
class) and ``reference`` the original body. Where the module is importable, the check also replaces
the real module's function, so a completion that merely calls the original recurses instead of
passing. A task is kept only if, run through the harness's own sandbox and checker, the original body
passes (twice, to drop flaky ones) and the trivially wrong bodies ``pass`` and ``return None`` fail;
the same rule decides whether strict inputs are kept.

The pinned suite (``load_pinned_stdlib``) is 500 such tasks from the standard library, listed with a
content hash each in the package's ``tasks/data/repo_manifest.json`` (:mod:`smallcode.tasks.manifest`).
Loading rebuilds them from the running interpreter's stdlib and refuses (naming the tasks) when any
hash differs, and refuses outright on another Python minor version: results are comparable only where
the hashes match. Elsewhere, mine a suite of your own (``smallcode eval mine --source stdlib --out
FILE``) and compare runs that use it.

Not done: unit-test problems for non-stdlib sources (their checks would import the real package,
which the sandbox cannot see); relative imports in a doctest-mined module (such modules fail their
check and are dropped); async functions; decorated methods. Stdlib problems cannot stop a model that
has memorised the standard library; they measure completion in a real code base, not novelty.
"""

from __future__ import annotations

import ast
import doctest
import functools
import hashlib
import importlib.util
import json
import os
import sys
import sysconfig
import threading
import tokenize
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from smallcode.eval import values
from smallcode.fileio import atomic_write_text
from smallcode.tasks.base import Task
from smallcode.tasks.manifest import MANIFEST, ManifestEntry, RepoManifest, load_manifest
from smallcode.tasks.pinned import DataFileError

SUITE = "repo"
FORMAT_VERSION = 1
# Directories of the standard library that are not library code, or need a display / a network.
_STDLIB_SKIP_DIRS = {
    "site-packages",
    "dist-packages",
    "test",
    "tests",
    "idlelib",
    "turtledemo",
    "tkinter",
    "lib2to3",
    "ensurepip",
    "__pycache__",
    "venv",
    "pydoc_data",
}
_STDLIB_SKIP_MODULES = {"antigravity", "this", "turtle", "__phello__", "__hello__"}
# Modules the checks themselves run on (unittest, doctest) or that start threads and event loops:
# replacing one of their functions breaks the check, not the candidate.
_TEST_SKIP_MODULES = {"unittest", "doctest", "threading", "asyncio", "logging", "concurrent", "multiprocessing"}
_MAX_DOCS = 4  # exercising docstrings per task
_MAX_INPUTS = 20  # strict inputs per task


@dataclass
class Candidate:
    """A function that some doctest exercises, before the harness has checked it."""

    module: str
    qualname: str
    entry_point: str
    cls: str
    prompt: str
    reference: str
    preamble: str
    docs: list[str]
    inputs: list[tuple[Any, ...]] = field(default_factory=list)
    tests: tuple[str, ...] = ()
    """Unit tests (dotted ids) that check it; empty for doctest problems."""
    source_file: str = ""
    line: int = 0


# ---- discovering modules --------------------------------------------------------------------------


def _module_files(source: str | Path) -> tuple[str, list[tuple[str, Path]]]:
    """(label, [(module name, file)]) for a directory, ``"stdlib"``, or an importable name."""
    if str(source) == "stdlib":
        root = Path(sysconfig.get_paths()["stdlib"])
        return f"stdlib-{sys.version_info.major}.{sys.version_info.minor}", _walk(root, "", stdlib=True)
    path = Path(source)
    if path.is_dir():
        prefix = path.name + "." if (path / "__init__.py").exists() else ""
        return str(path.resolve()), _walk(path, prefix, stdlib=False)
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
        return str(source), _walk(pkg_dir, str(source) + ".", stdlib=False)
    return str(source), [(str(source), Path(spec.origin))]


def _walk(root: Path, prefix: str, stdlib: bool) -> list[tuple[str, Path]]:
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(
            d
            for d in dirnames
            if not d.startswith(".")
            and not (stdlib and (d in _STDLIB_SKIP_DIRS or d.startswith("config-")))
            and d != "__pycache__"
        )
        rel = Path(dirpath).relative_to(root)
        for name in sorted(filenames):
            if not name.endswith(".py"):
                continue
            parts = [*rel.parts, name[:-3]]
            if parts[-1] == "__init__":
                parts = parts[:-1]
            module = prefix + ".".join(parts) if parts else prefix.rstrip(".")
            if not module or (stdlib and module.split(".")[0] in _STDLIB_SKIP_MODULES):
                continue
            found.append((module, Path(dirpath) / name))
    return found


# ---- building candidates from one module ----------------------------------------------------------


def _is_main_guard(node: ast.stmt) -> bool:
    t = node.test if isinstance(node, ast.If) else None
    return (
        isinstance(t, ast.Compare)
        and isinstance(t.left, ast.Name)
        and t.left.id == "__name__"
        and len(t.comparators) == 1
        and isinstance(t.comparators[0], ast.Constant)
        and t.comparators[0].value == "__main__"
    )


def _doc_node(fn: ast.FunctionDef) -> ast.Expr | None:
    first = fn.body[0] if fn.body else None
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
        return first
    return None


def _examples(doc: str) -> list[doctest.Example]:
    try:
        return doctest.DocTestParser().get_examples(doc)
    except ValueError:  # malformed doctest (bad indentation): not usable as a check
        return []


def _calls(examples: list[doctest.Example]) -> tuple[set[str], set[str]]:
    """Names called as ``f(...)`` and attributes called as ``x.m(...)`` in the examples."""
    names: set[str] = set()
    attrs: set[str] = set()
    for ex in examples:
        try:
            tree = ast.parse(ex.source)
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                if isinstance(node.func, ast.Name):
                    names.add(node.func.id)
                elif isinstance(node.func, ast.Attribute):
                    attrs.add(node.func.attr)
    return names, attrs


def _literal_call_inputs(examples: list[doctest.Example], name: str) -> list[tuple[Any, ...]]:
    """Argument tuples of examples that are exactly ``name(<literals>)`` and are not expected to raise."""
    out = []
    for ex in examples:
        if ex.exc_msg is not None:
            continue
        try:
            body = ast.parse(ex.source).body
        except SyntaxError:
            continue
        if len(body) != 1 or not isinstance(body[0], ast.Expr):
            continue
        call = body[0].value
        if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == name):
            continue
        if call.keywords or any(isinstance(a, ast.Starred) for a in call.args):
            continue
        try:
            args = tuple(ast.literal_eval(a) for a in call.args)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            continue
        try:
            values.to_plain(args)
        except values.CodecError:
            continue
        if args not in out:
            out.append(args)
    return out[:_MAX_INPUTS]


def _dedent(lines: list[str], indent: str) -> list[str] | None:
    out = []
    for line in lines:
        if line.strip() == "":
            out.append(line.lstrip(" \t"))
        elif line.startswith(indent):
            out.append(line[len(indent) :])
        else:
            return None  # a line less indented than the def (odd docstring layout): give up on it
    return out


def _read_source(path: Path) -> str | None:
    try:
        with tokenize.open(path) as f:
            return f.read()
    except (OSError, SyntaxError, UnicodeDecodeError):
        return None


@functools.lru_cache(maxsize=8)  # test candidates come module by module: keep the last few parsed
def _parse(path: Path) -> tuple[str, ast.Module] | None:
    text = _read_source(path)
    if text is None:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return text, ast.parse(text)
    except SyntaxError:
        return None


def _targets(tree: ast.Module) -> list[tuple[ast.FunctionDef, ast.ClassDef | None]]:
    """Module-level functions and plain methods of module-level classes, each defined once."""
    top_names = [n.name for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)]
    targets: list[tuple[ast.FunctionDef, ast.ClassDef | None]] = []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and top_names.count(node.name) == 1:
            targets.append((node, None))
        elif isinstance(node, ast.ClassDef) and top_names.count(node.name) == 1:
            method_names = [m.name for m in node.body if isinstance(m, ast.FunctionDef)]
            for m in node.body:
                if (
                    isinstance(m, ast.FunctionDef)
                    and not m.decorator_list
                    and not m.name.startswith("__")
                    and method_names.count(m.name) == 1
                ):
                    targets.append((m, node))
    return targets


def _split(lines: list[str], module: str, fn: ast.FunctionDef, cls: ast.ClassDef | None) -> tuple[str, str, int] | None:
    """(prompt, reference body, first line) of a function with a docstring and a body after it."""
    doc_node = _doc_node(fn)
    if doc_node is None or len(fn.body) < 2 or fn.body[1].lineno <= doc_node.end_lineno:
        return None
    start = fn.decorator_list[0].lineno if fn.decorator_list else fn.lineno
    indent = " " * fn.col_offset
    head = _dedent(lines[start - 1 : doc_node.end_lineno], indent)
    body = _dedent(lines[doc_node.end_lineno : fn.end_lineno], indent)
    if head is None or body is None or not "".join(body).strip():
        return None
    kind = f"method of class {cls.name} (self is a {cls.name})" if cls else "function"
    prompt = f"# {module}: {kind}\n" + "".join(head)
    if not prompt.endswith("\n"):
        prompt += "\n"
    return prompt, "".join(body), start


def module_candidates(module: str, path: Path) -> list[Candidate]:
    """Every function of one module that a doctest of the same module calls, as an unchecked candidate."""
    parsed = _parse(path)
    if parsed is None or ">>>" not in parsed[0]:
        return []
    text, tree = parsed
    lines = text.splitlines(keepends=True)

    # Docstrings with examples, anywhere in the module, and what their examples call.
    docs: list[tuple[str, set[str], set[str], list[doctest.Example]]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            doc = ast.get_docstring(node, clean=False)
            if doc and ">>>" in doc:
                examples = _examples(doc)
                if examples:
                    names, attrs = _calls(examples)
                    docs.append((doc, names, attrs, examples))
    if not docs:
        return []

    # Lines of `if __name__ == "__main__":` blocks never belong in the preamble.
    drop_main = set()
    for node in tree.body:
        if _is_main_guard(node):
            drop_main.update(range(node.lineno, node.end_lineno + 1))

    found = []
    for fn, cls in _targets(tree):
        exercising = [d for d in docs if fn.name in (d[2] if cls else d[1])][:_MAX_DOCS]
        split = _split(lines, module, fn, cls) if exercising else None
        if split is None:
            continue
        prompt, reference, start = split
        # Preamble: the module without the function and without its main block; a class whose only
        # statement is this method keeps a `pass` in its place.
        placeholder = " " * fn.col_offset + "pass\n" if cls is not None and cls.body == [fn] else ""
        kept = []
        for i, ln in enumerate(lines, start=1):
            if i in drop_main:
                continue
            if start <= i <= fn.end_lineno:
                if i == start and placeholder:
                    kept.append(placeholder)
                continue
            kept.append(ln)
        preamble = "".join(kept)
        if not preamble.endswith("\n"):
            preamble += "\n"
        inputs: list[tuple[Any, ...]] = []
        if cls is None:
            for _, _, _, examples in exercising:
                inputs += [a for a in _literal_call_inputs(examples, fn.name) if a not in inputs]
        found.append(
            Candidate(
                module=module,
                qualname=fn.name if cls is None else f"{cls.name}.{fn.name}",
                entry_point=fn.name,
                cls=cls.name if cls else "",
                prompt=prompt,
                reference=reference,
                preamble=preamble,
                docs=[d[0] for d in exercising],
                inputs=inputs[:_MAX_INPUTS],
                source_file=str(path),
                line=fn.lineno,
            )
        )
    return found


_IMPORT_PREAMBLE = """import {module} as _module_under_test
globals().update(
    {{k: v for k, v in vars(_module_under_test).items() if not (k[:2] == "__" == k[-2:]) and k != {skip!r}}}
)
del _module_under_test
"""


def test_candidate(module: str, path: Path, qualname: str, tests: tuple[str, ...]) -> Candidate | None:
    """A candidate checked by the named unit tests (see :mod:`repo_tests`); None when unusable."""
    parsed = _parse(path)
    if parsed is None:
        return None
    text, tree = parsed
    for fn, cls in _targets(tree):
        qual = fn.name if cls is None else f"{cls.name}.{fn.name}"
        if qual != qualname:
            continue
        split = _split(text.splitlines(keepends=True), module, fn, cls)
        if split is None:
            return None
        prompt, reference, _ = split
        return Candidate(
            module=module,
            qualname=qual,
            entry_point=fn.name,
            cls=cls.name if cls else "",
            prompt=prompt,
            reference=reference,
            # The real module's globals (same classes and helpers as the original), minus the function.
            preamble=_IMPORT_PREAMBLE.format(module=module, skip="" if cls else fn.name),
            docs=[],
            tests=tuple(tests),
            source_file=str(path),
            line=fn.lineno,
        )
    return None


# ---- from candidate to task -------------------------------------------------------------------------

_CHECK = """

def check(candidate):
    import doctest as _doctest
{patch}    _globs = dict(globals())
    for _i, _text in enumerate({docs!r}):
        _test = _doctest.DocTestParser().get_doctest(_text, dict(_globs), "{qual}[%d]" % _i, None, 0)
        _runner = _doctest.DocTestRunner(verbose=False, optionflags=0)
        _runner.run(_test, out=lambda s: None)
        assert _runner.tries > 0 and _runner.failures == 0, (
            "%d of %d doctest examples failed in docstring %d" % (_runner.failures, _runner.tries, _i))
"""


# Where the mined module is importable (the stdlib always is), its real function is replaced by the
# candidate too, so a completion that just calls the original (``return fractions.Fraction.f(...)``)
# recurses into itself instead of passing.
_PATCH_REAL = """    try:
        import {module} as _real
    except BaseException:
        _real = None
    _owner = getattr(_real, {cls!r}, None) if {cls!r} else _real
    if _owner is not None and hasattr(_owner, {name!r}):
        setattr(_owner, {name!r}, candidate)
"""


_CHECK_TESTS = """

def check(candidate):
    import unittest as _unittest
{patch}    _suite = _unittest.defaultTestLoader.loadTestsFromNames({tests!r})
    _result = _unittest.TestResult()
    _suite.run(_result)
    _ran = _result.testsRun - len(_result.skipped)
    _bad = _result.failures + _result.errors
    assert _ran > 0 and not _bad, "%d of %d tests failed: %s" % (
        len(_bad), _result.testsRun, _bad[0][0].id() if _bad else "none ran")
"""


def _test_code(c: Candidate) -> str:
    patch = _PATCH_REAL.format(module=c.module, cls=c.cls, name=c.entry_point)
    if c.cls:
        patch += f"    setattr({c.cls}, {c.entry_point!r}, candidate)\n"
    if c.tests:
        return _CHECK_TESTS.format(patch=patch, tests=list(c.tests))
    return _CHECK.format(patch=patch, docs=c.docs, qual=c.qualname)


def to_task(c: Candidate, with_inputs: bool) -> Task:
    return Task(
        task_id=f"{SUITE}/{c.module}/{c.qualname}",
        suite=SUITE,
        prompt=c.prompt,
        entry_point=c.entry_point,
        reference=c.reference,
        test=_test_code(c),
        inputs=tuple(c.inputs) if with_inputs else (),
        preamble=c.preamble,
        meta={
            "module": c.module,
            "qualname": c.qualname,
            "line": c.line,
            "checked_by": "unittest" if c.tests else "doctest",
            "tests": list(c.tests),
            "n_docstrings": len(c.docs),
        },
    )


def task_sha256(task: Task) -> str:
    """Content hash of everything that defines a task (``meta`` excluded)."""
    blob = json.dumps(
        [
            task.task_id,
            task.suite,
            task.prompt,
            task.entry_point,
            task.reference,
            task.test,
            values.to_plain(list(task.inputs)),
            task.atol,
            task.preamble,
        ],
        separators=(",", ":"),
    )
    return hashlib.sha256(blob.encode("utf-8", "surrogatepass")).hexdigest()


def wrong_bodies(task: Task) -> list[str]:
    """The trivially wrong completions a kept task must reject."""
    indent = next((ln[: len(ln) - len(ln.lstrip())] for ln in task.reference.splitlines() if ln.strip()), "    ")
    return [f"{indent}pass\n", f"{indent}return None\n"]


# ---- checking candidates with the harness -----------------------------------------------------------


class _Checker:
    """Runs a task's checks with the harness's sandbox and verdict code, one sandbox per thread.

    Falls back to a plain subprocess (compat only, no strict inputs) where the sandbox is unavailable.
    """

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
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
            sb = self.sandbox_mod.Sandbox(limits=self.sandbox_mod.Limits(timeout_s=self.timeout_s))
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


def mine_repo(
    source: str | Path,
    out: Path,
    limit: int | None = None,
    workers: int | None = None,
    timeout_s: float = 10.0,
    progress: bool = True,
    test_modules: tuple[str, ...] | None = None,
) -> Path:
    """Mine function-completion problems from ``source`` into the JSONL file ``out``; returns ``out``.

    ``source``: a directory, an importable module or package name, or ``"stdlib"``. ``limit``: keep
    at most this many (chosen by :func:`select_stable`). Each kept problem passed the harness's own
    check with its original body and failed with ``pass`` and ``return None`` bodies. ``test_modules``:
    unit-test modules (dotted names) whose tests may check functions that no doctest calls (default: a
    curated list for ``"stdlib"``; other sources are doctest-only). The file starts
    with a header line (source, Python version, counts) and is written atomically.
    """
    from tqdm import tqdm

    label, candidates = mine_candidates(source, test_modules, progress=progress)
    # Checked in the order of their id's hash, so that with a limit the first `limit` that pass are
    # a spread over modules and the same on every machine, and checking can stop early.
    candidates.sort(key=lambda c: hashlib.sha256(f"{SUITE}/{c.module}/{c.qualname}".encode()).hexdigest())
    checker = _Checker(timeout_s)
    kept: list[Task] = []
    try:
        with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
            for task in tqdm(
                pool.map(lambda c: _verify(checker, c), candidates),
                total=len(candidates),
                desc=f"mining {label}",
                unit="fn",
                disable=not progress,
            ):
                if task is not None:
                    kept.append(task)
                    if limit is not None and len(kept) >= limit:
                        pool.shutdown(wait=True, cancel_futures=True)
                        break
    finally:
        checker.close()
    chosen = select_stable(kept, limit)
    header = {
        "format": FORMAT_VERSION,
        "suite": SUITE,
        "source": label,
        "python": ".".join(map(str, sys.version_info[:3])),
        "candidates": len(candidates),
        "verified": len(kept),
        "tasks": len(chosen),
        "strict": sum(1 for t in chosen if t.inputs),
    }
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
    with open(path, encoding="utf-8", errors="strict") as f:
        try:
            lines = f.read().splitlines()
        except UnicodeDecodeError as e:
            raise DataFileError(f"{path}: not UTF-8 ({e})") from e
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataFileError(f"{path}:{lineno}: not a JSON record ({e})") from e
        if lineno == 1 and isinstance(rec, dict) and "header" in rec:
            if rec["header"].get("format") != FORMAT_VERSION:
                raise DataFileError(f"{path}:1: format {rec['header'].get('format')}, expected {FORMAT_VERSION}")
            continue
        missing = [k for k in fields if not isinstance(rec, dict) or k not in rec]
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


def load_pinned_stdlib(progress: bool = False, manifest: RepoManifest | None = None) -> list[Task]:
    """The pinned 500 standard-library problems, rebuilt from this interpreter's stdlib and hash-checked
    against ``manifest`` (the package's ``repo_manifest.json`` by default)."""
    manifest = manifest or load_manifest()
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    if manifest.python.rsplit(".", 1)[0] != here:
        raise DataFileError(
            f"the pinned repo suite was mined from Python {manifest.python}'s standard library; this is "
            f"Python {sys.version.split()[0]}, whose stdlib differs, so its problems would not be the pinned "
            "ones. Mine a suite for this interpreter (smallcode eval mine --source stdlib --out FILE) and "
            "evaluate with that file; compare only with runs that used the same file."
        )
    if any(e.tests for e in manifest.tasks) and importlib.util.find_spec("test.support") is None:
        raise DataFileError(
            "the pinned repo suite checks most problems with CPython's own unit tests, and this Python has "
            "no 'test' package (on Debian/Ubuntu: apt install libpython3.X-testsuite)"
        )
    wanted = {e.task_id: e.sha256 for e in manifest.tasks}
    by_module = dict(_module_files("stdlib")[1])
    doc_modules = sorted({e.module for e in manifest.tasks if not e.tests})
    built: dict[str, Task] = {}

    def keep_if_pinned(c: Candidate) -> None:
        tid = f"{SUITE}/{c.module}/{c.qualname}"
        if tid not in wanted:
            return
        for with_inputs in (True, False):  # the hash says whether strict inputs were kept
            task = to_task(c, with_inputs=with_inputs)
            if task_sha256(task) == wanted[tid]:
                built[tid] = task
                return

    for module in doc_modules:
        if module in by_module:
            for c in module_candidates(module, by_module[module]):
                keep_if_pinned(c)
    for e in manifest.tasks:
        if e.tests:
            _, module, qualname = e.task_id.split("/", 2)
            c = test_candidate(module, by_module[module], qualname, e.tests) if module in by_module else None
            if c is not None:
                keep_if_pinned(c)
    order = [e.task_id for e in manifest.tasks]
    bad = [tid for tid in order if tid not in built]
    if bad:
        raise DataFileError(
            f"{len(bad)} of {len(wanted)} pinned repo problems differ in this Python's stdlib "
            f"({sys.version.split()[0]} at {sysconfig.get_paths()['stdlib']}), e.g. {', '.join(bad[:3])}; "
            "results would not be comparable. Mine a suite for this interpreter instead "
            "(smallcode eval mine --source stdlib --out FILE)."
        )
    return [built[tid] for tid in order]


def load_repo_suite(mined: Path | None = None) -> list[Task]:
    """The ``repo`` suite: the tasks of a file written by :func:`mine_repo`, or the pinned stdlib problems."""
    return load_mined(Path(mined)) if mined is not None else load_pinned_stdlib()


def write_manifest(tasks: list[Task], path: Path = MANIFEST) -> None:
    """Pin ``tasks`` as the ``repo`` suite: write their ids and content hashes as the manifest at ``path``."""
    entries = tuple(ManifestEntry(t.task_id, task_sha256(t), tuple(t.meta.get("tests", ()))) for t in tasks)
    RepoManifest(python=".".join(map(str, sys.version_info[:3])), tasks=entries).write(path)


__all__ = [
    "Candidate",
    "load_mined",
    "load_pinned_stdlib",
    "load_repo_suite",
    "mine_repo",
    "task_sha256",
    "write_manifest",
]
