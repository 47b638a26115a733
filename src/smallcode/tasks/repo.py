"""The ``repo`` suite's problems: how a function of a Python module becomes a task, and the pinned suite.

A problem is a function of a module whose own doctests (any source) or, for the standard library,
CPython's unit tests exercise it: module-level functions and plain (undecorated, non-dunder) methods
of module-level classes, with a docstring and a body after it. ``prompt`` is the signature and
docstring (methods dedented, after a comment naming the class), ``reference`` the original body.

* **doctest problems**: ``preamble`` is the module's own source with the function removed (``if
  __name__ == "__main__"`` blocks dropped), so the program needs no file of the source tree, which
  the sandbox cannot see; ``test`` runs the exercising docstrings' examples with ``doctest``;
  ``inputs`` (strict, functions only) are the examples that are a bare call with literal arguments.
* **unit-test problems**: the preamble imports the real module and takes its globals; ``test`` runs
  up to three of the named unit tests with the real module's function replaced by the candidate.
* **repository-test problems** (:func:`pytest_candidate`): the same, for a local repository whose
  own pytest suite checks the function: the preamble puts the repository's import roots and the
  environment's packages on ``sys.path`` (the sandbox binds both read-only: ``meta["sandbox_paths"]``),
  ``test`` swaps the candidate into every module of the package holding the original and runs up to
  three pytest node ids with ``pytest.main``. A function without a docstring qualifies when its name
  is descriptive (:func:`descriptive_name`); its prompt is the signature alone.

Where the module is importable, the check also replaces the real module's function, so a completion
that merely calls the original recurses instead of passing.

This module only *builds* problems from source, which needs no sandbox: deciding which candidates
to keep (the original body passes, trivially wrong ones fail) is the miner's job
(:mod:`smallcode.eval.mining`), and so is choosing the unit tests. The pinned suite
(:func:`load_pinned_stdlib`, what ``load_suite("repo")`` returns) is 500 problems listed with a
content hash each in ``data/repo_manifest.json`` (:mod:`smallcode.tasks.manifest`): they are rebuilt
from the running interpreter's standard library and refused (naming the problems) when any hash
differs, and refused outright on another Python minor version, since results are comparable only
where the hashes match. Elsewhere, mine a suite of your own (``smallcode eval mine --source stdlib
--out FILE``) and compare runs that use it.
"""

from __future__ import annotations

import ast
import doctest
import functools
import hashlib
import importlib.util
import json
import re
import sys
import sysconfig
import textwrap
import tokenize
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from smallcode.tasks import values
from smallcode.tasks.base import Task
from smallcode.tasks.manifest import RepoManifest, load_manifest
from smallcode.tasks.pinned import DataFileError

SUITE = "repo"
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
    pytest_root: str = ""
    """For problems checked by a repository's own pytest suite: the repository (``tests`` are node ids)."""
    sys_path: tuple[str, ...] = ()
    """Directories the check puts on ``sys.path`` (the repository's import roots)."""
    site_dirs: tuple[str, ...] = ()
    """Package directories of the environment the check imports pytest and dependencies from."""
    plugins: tuple[str, ...] = ()
    """Entry-point pytest plugins the check loads (no others are: loading them all costs time)."""


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


_DESCRIPTIVE = re.compile(r"[a-z][a-z0-9]*(_[a-z0-9]+)+|[a-z][a-z0-9]*([A-Z][a-z0-9]+)+")


def descriptive_name(name: str) -> bool:
    """Whether a function's name says what it does well enough to stand for a docstring: two words or
    more (``parse_header``, ``toDict``), leading underscores aside."""
    return _DESCRIPTIVE.fullmatch(name.lstrip("_")) is not None


def _split(lines: list[str], module: str, fn: ast.FunctionDef, cls: ast.ClassDef | None,
           undocumented: bool = False) -> tuple[str, str, int] | None:
    """(prompt, reference body, first line) of a function with a docstring and a body after it; with
    ``undocumented``, also of one without a docstring whose name is descriptive (the prompt is then
    the signature alone)."""
    doc_node = _doc_node(fn)
    start = fn.decorator_list[0].lineno if fn.decorator_list else fn.lineno
    if doc_node is None:
        # The body must start on a line of its own, after the signature.
        if not (undocumented and descriptive_name(fn.name) and fn.body and fn.body[0].lineno > fn.lineno):
            return None
        first = fn.body[0]
        head_end = (first.decorator_list[0].lineno if getattr(first, "decorator_list", None) else first.lineno) - 1
    elif len(fn.body) < 2 or fn.body[1].lineno <= doc_node.end_lineno:
        return None
    else:
        head_end = doc_node.end_lineno
    indent = " " * fn.col_offset
    head = _dedent(lines[start - 1 : head_end], indent)
    body = _dedent(lines[head_end : fn.end_lineno], indent)
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


def _function_candidate(module: str, path: Path, qualname: str, tests: tuple[str, ...],
                        preamble: Callable[[str], str], undocumented: bool = False, **extra: Any) -> Candidate | None:
    """The candidate for function ``qualname`` of ``path`` checked by ``tests``; ``preamble(skip)`` is
    its program's start, ``skip`` the name left out of the module's globals (none for a method). None
    when the file or function is unusable."""
    parsed = _parse(path)
    if parsed is None:
        return None
    text, tree = parsed
    for fn, cls in _targets(tree):
        qual = fn.name if cls is None else f"{cls.name}.{fn.name}"
        if qual != qualname:
            continue
        split = _split(text.splitlines(keepends=True), module, fn, cls, undocumented=undocumented)
        if split is None:
            return None
        prompt, reference, _ = split
        return Candidate(module=module, qualname=qual, entry_point=fn.name, cls=cls.name if cls else "",
                         prompt=prompt, reference=reference, preamble=preamble("" if cls else fn.name),
                         docs=[], tests=tuple(tests), source_file=str(path), line=fn.lineno, **extra)
    return None


def test_candidate(module: str, path: Path, qualname: str, tests: tuple[str, ...]) -> Candidate | None:
    """A candidate checked by the named unit tests (see :mod:`repo_tests`); None when unusable."""
    # The real module's globals (same classes and helpers as the original), minus the function.
    return _function_candidate(module, path, qualname, tests,
                               lambda skip: _IMPORT_PREAMBLE.format(module=module, skip=skip))


_PYTEST_PREAMBLE = """import site as _site
import sys as _sys
for _p in {site!r}:
    _site.addsitedir(_p)
_sys.path[:0] = {roots!r}
_sys.dont_write_bytecode = True
import {module} as _module_under_test
globals().update(
    {{k: v for k, v in vars(_module_under_test).items() if not (k[:2] == "__" == k[-2:]) and k != {skip!r}}}
)
del _module_under_test, _site, _sys, _p
"""


def pytest_candidate(module: str, path: Path, qualname: str, tests: tuple[str, ...], root: str,
                     sys_path: tuple[str, ...], site_dirs: tuple[str, ...],
                     plugins: tuple[str, ...] = ()) -> Candidate | None:
    """A candidate checked by the pytest node ids ``tests`` of the repository at ``root`` (see
    :mod:`smallcode.eval.mining.repo_pytest`), importing ``module`` from ``sys_path``; a function
    with a docstring, or without one when its name is descriptive. None when unusable."""
    def preamble(skip: str) -> str:
        return _PYTEST_PREAMBLE.format(site=list(site_dirs), roots=list(sys_path), module=module, skip=skip)

    return _function_candidate(module, path, qualname, tests, preamble, undocumented=True, pytest_root=root,
                               sys_path=tuple(sys_path), site_dirs=tuple(site_dirs), plugins=tuple(plugins))


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


# pytest in the same process, after the patch: test modules import the patched module. The repository
# may be read-only: nothing is cached or compiled there, and its own addopts are dropped (they often
# name plugins that are not installed).
PYTEST_ARGS: tuple[str, ...] = ("-q", "-p", "no:cacheprovider", "-o", "addopts=", "-W", "ignore::DeprecationWarning")
"""What pytest is told on every run, traced or checked."""
PYTEST_RUN = """import os as _os
import pytest as _pytest


class _Outcomes:
    passed = 0
    failed = []

    def pytest_runtest_logreport(self, report):
        if report.failed:
            _Outcomes.failed.append(report.nodeid)
        elif report.when == "call" and report.passed:
            _Outcomes.passed += 1


_os.chdir(_root)
_os.environ["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
_code = _pytest.main(["--rootdir", _root, "--confcutdir", _root, *{args!r}, *[_root + "/" + t for t in {tests!r}]],
                     plugins=[_Outcomes()])
assert _code == 0 and _Outcomes.passed > 0 and not _Outcomes.failed, "pytest exit %s; failed: %s" % (
    int(_code), ", ".join(_Outcomes.failed) or "none passed")
"""
"""The end of every program that runs a repository's own tests (``_root``: where it stands, the working
directory they run in): the node ids ``tests`` pass, at least one of them, and none fails. A problem's
check runs it inside ``check``; a repair task's verdict at the top level."""

_CHECK_PYTEST = """

def check(candidate):
    _root = {root!r}
{patch}{run}"""


# A repository's package often re-exports its functions (``from .more import *`` in ``__init__``) and
# its tests call them through the package: every module of the package that holds the original
# function under any name gets the candidate in its place.
_PATCH_PACKAGE = """    import sys as _sys
    _real = _sys.modules.get({module!r})
    _owner = getattr(_real, {cls!r}, None) if {cls!r} else _real
    _original = getattr(_owner, {name!r}, None)
    if _owner is not None and _original is not None:
        setattr(_owner, {name!r}, candidate)
        if not {cls!r}:
            _top = {module!r}.split(".")[0]
            for _name, _mod in list(_sys.modules.items()):
                if _mod is not None and (_name == _top or _name.startswith(_top + ".")):
                    for _k, _v in list(vars(_mod).items()):
                        if _v is _original:
                            setattr(_mod, _k, candidate)
"""


def check_pytest_args(plugins: Sequence[str]) -> list[str]:
    """pytest's arguments in a program that checks with a repository's own tests (a problem's check, a
    repair verdict). No assertion rewriting: the verdict needs no messages, and rewriting recompiles
    every plugin module on each run (nothing may be cached), which costs seconds per check. Installed
    plugins are not loaded (each costs import time on every check) but ``plugins``, those the tests
    were seen to use (their fixtures) or the repository's configuration names."""
    return [*PYTEST_ARGS, "--assert=plain", *(a for p in plugins for a in ("-p", p))]


def _test_code(c: Candidate) -> str:
    if c.pytest_root:
        patch = _PATCH_PACKAGE.format(module=c.module, cls=c.cls, name=c.entry_point)
    else:
        patch = _PATCH_REAL.format(module=c.module, cls=c.cls, name=c.entry_point)
    if c.cls:
        patch += f"    setattr({c.cls}, {c.entry_point!r}, candidate)\n"
    if c.pytest_root:
        run = textwrap.indent(PYTEST_RUN.format(args=check_pytest_args(c.plugins), tests=list(c.tests)), "    ")
        return _CHECK_PYTEST.format(patch=patch, root=c.pytest_root, run=run)
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
            "checked_by": "pytest" if c.pytest_root else "unittest" if c.tests else "doctest",
            "tests": list(c.tests),
            "n_docstrings": len(c.docs),
            **({"repo": c.pytest_root, "file": c.source_file, "sys_path": list(c.sys_path),
                "site_dirs": list(c.site_dirs), "plugins": list(c.plugins),
                "sandbox_paths": [c.pytest_root, *c.site_dirs]} if c.pytest_root else {}),
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


def body_span(path: Path, qualname: str) -> tuple[int, int, str] | None:
    """(first line index, end line index, indent) of the body of ``qualname`` in the file ``path``
    (0-based, end exclusive, the lines the problem's reference was cut from), or None when absent."""
    parsed = _parse(Path(path))
    if parsed is None:
        return None
    text, tree = parsed
    lines = text.splitlines(keepends=True)
    for fn, cls in _targets(tree):
        if (fn.name if cls is None else f"{cls.name}.{fn.name}") != qualname:
            continue
        split = _split(lines, "", fn, cls, undocumented=True)
        if split is None:
            return None
        body_lines = split[1].count("\n") + (0 if split[1].endswith("\n") else 1)
        return fn.end_lineno - body_lines, fn.end_lineno, " " * fn.col_offset
    return None


def sandbox_paths(tasks: list[Task]) -> tuple[str, ...]:
    """The host directories the checks of ``tasks`` must see read-only in the sandbox (a repository
    and the environment's packages, for problems checked by a repository's own tests)."""
    out: list[str] = []
    for t in tasks:
        for p in t.meta.get("sandbox_paths", ()):
            if p not in out:
                out.append(p)
    return tuple(out)


def wrong_bodies(task: Task) -> list[str]:
    """The trivially wrong completions a kept task must reject."""
    indent = next((ln[: len(ln) - len(ln.lstrip())] for ln in task.reference.splitlines() if ln.strip()), "    ")
    return [f"{indent}pass\n", f"{indent}return None\n"]


def _stdlib_file(module: str) -> Path | None:
    """The standard-library file of a dotted module name (``a/b.py`` or ``a/b/__init__.py``), as the
    miner's walk (``smallcode.corpus.stdlib_modules``) names it; None when this library lacks it."""
    base = Path(sysconfig.get_paths()["stdlib"]).joinpath(*module.split("."))
    return next((p for p in (base.with_name(base.name + ".py"), base / "__init__.py") if p.is_file()), None)


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
    by_module = {m: p for m in {e.module for e in manifest.tasks} if (p := _stdlib_file(m)) is not None}
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


__all__ = ["SUITE", "Candidate", "body_span", "descriptive_name", "load_pinned_stdlib", "module_candidates",
           "pytest_candidate", "sandbox_paths", "task_sha256", "test_candidate", "to_task", "wrong_bodies"]
