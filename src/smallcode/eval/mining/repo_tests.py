"""Repository problems exercised by a package's own unit tests (for the standard library: ``Lib/test``).

Doctests alone give too few problems from the standard library, so this finds functions that its
own test suite exercises. Two steps:

1. ``trace_tests`` runs a test module once in a fresh interpreter with a profile hook that records,
   for each passing test, which Python functions of the library (test files excluded) it called, and
   how long it took. This runs trusted code (the library's tests) outside the sandbox, like any
   developer running the test suite, with a wall-clock timeout.
2. ``test_candidates`` turns each function (module-level, or plain method of a module-level class)
   that has a docstring and is called by at least one quick passing test into a candidate whose
   check runs up to three of those tests, with the real module's function (or method) replaced by
   the candidate. The program imports the real module and takes its globals, so the candidate's body
   sees the same classes and helpers as the original (the original function itself is left out).

The miner (:mod:`smallcode.eval.mining.repo`) then keeps a candidate only if the harness passes the
original body and fails ``pass`` / ``return None``, exactly as for doctest problems. Only importable
modules can be mined this way (the sandbox must be able to import them); no strict inputs.
"""

from __future__ import annotations

import ast
import json
import os
import sys
import tempfile
import warnings
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from smallcode.corpus import stdlib_root
from smallcode.eval.sandbox import run_python

# Test modules of the standard library whose subjects are pure-Python, deterministic and need no
# network, display or subprocesses. Order matters only for reproducibility.
STDLIB_TEST_MODULES: tuple[str, ...] = (
    "test.test_textwrap",
    "test.test_statistics",
    "test.test_fractions",
    "test.test_difflib",
    "test.test_shlex",
    "test.test_fnmatch",
    "test.test_posixpath",
    "test.test_ntpath",
    "test.test_string",
    "test.test_calendar",
    "test.test_base64",
    "test.test_quopri",
    "test.test_html",
    "test.test_htmlparser",
    "test.test_urlparse",
    "test.test_ipaddress",
    "test.test_gettext",
    "test.test_tomllib",
    "test.test_pprint",
    "test.test_reprlib",
    "test.test_graphlib",
    "test.test_configparser",
    "test.test_getopt",
    "test.test_optparse",
    "test.test_colorsys",
    "test.test_netrc",
    "test.test_mimetypes",
    "test.test_plistlib",
    "test.test_copy",
    "test.test_random",
    "test.test_cmd",
    "test.test_sched",
    "test.test_nturl2path",
    "test.test_stringprep",
    "test.test_userstring",
    "test.test_userlist",
    "test.test_userdict",
    "test.test_http_cookies",
    "test.test_http_cookiejar",
    "test.test_email.test_headerregistry",
    "test.test_email.test__header_value_parser",
    "test.test_email.test_utils",
    "test.test_email.test_email",
    "test.test_pathlib",
    "test.test_argparse",
    "test.test_csv",
    "test.test_tokenize",
    "test.test_keyword",
    "test.test_dataclasses",
    "test.test_enum",
    "test.test_glob",
    "test.test_filecmp",
    "test.test_uu",
    "test.test_wave",
    "test.test_secrets",
    "test.test_pickletools",
    "test.test_inspect",
    "test.test_ast",
    "test.test_dis",
    "test.test_typing",
    "test.test_collections",
    "test.test_contextlib",
    "test.test_imghdr",
    "test.test_sndhdr",
    "test.test_weakset",
    "test.test_chunk",
    "test.test_minidom",
    "test.test_sax",
    "test.test_xml_dom_minicompat",
    "test.test_pyclbr",
    "test.test_linecache",
    "test.test_traceback",
    "test.test_fileinput",
)
_MAX_TEST_SECONDS = 1.0  # tests slower than this are not used as checks
_TESTS_PER_TASK = 3

_TRACER = r"""
import json, os, sys, time, unittest
root, out, name = sys.argv[1], sys.argv[2], sys.argv[3]
testdir = os.path.join(root, "test") + os.sep
calls = {}
current = [None]

def profile(frame, event, arg):
    if event == "call" and current[0] is not None:
        code = frame.f_code
        fn = code.co_filename
        if fn.startswith(root) and not fn.startswith(testdir):
            calls[current[0]].add((fn, code.co_firstlineno, code.co_name))

class Result(unittest.TestResult):
    def startTest(self, test):
        super().startTest(test)
        current[0] = test.id()
        calls[current[0]] = set()
        self.t0 = time.perf_counter()
        sys.setprofile(profile)
    def stopTest(self, test):
        sys.setprofile(None)
        durations[test.id()] = time.perf_counter() - self.t0
        current[0] = None
        super().stopTest(test)

durations = {}
suite = unittest.defaultTestLoader.loadTestsFromName(name)
result = Result()
suite.run(result)
bad = {t.id() for t, _ in result.failures + result.errors} | {t.id() for t, _ in result.skipped}
keep = {
    tid: {"seconds": durations.get(tid, 0.0), "calls": sorted(c)}
    for tid, c in calls.items() if tid not in bad and durations.get(tid, 9e9) <= %(max_s)r
}
with open(out + ".tmp", "w") as f:
    json.dump(keep, f)
os.replace(out + ".tmp", out)
"""


@dataclass(frozen=True)
class TracedTest:
    test_id: str
    seconds: float
    calls: frozenset[tuple[str, int, str]]
    """(file, first line, name) of every library function the test called."""


def trace_tests(test_module: str, timeout_s: float = 120.0) -> list[TracedTest]:
    """Run one test module with call tracing; its quick passing tests and what they called."""
    root = os.path.realpath(stdlib_root())
    with tempfile.TemporaryDirectory(prefix="smallcode-trace-") as tmp:
        out = os.path.join(tmp, "trace.json")
        run = run_python(_TRACER % {"max_s": _MAX_TEST_SECONDS}, timeout=timeout_s, args=(root, out, test_module))
        if not os.path.exists(out):
            return []  # the module failed to import or ran past its time: nothing usable
        del run
        with open(out) as f:
            data = json.load(f)
    return [
        TracedTest(tid, rec["seconds"], frozenset((c[0], c[1], c[2]) for c in rec["calls"]))
        for tid, rec in sorted(data.items())
    ]


def trace_tests_of(
    modules: tuple[str, ...] = STDLIB_TEST_MODULES, workers: int | None = None, progress: bool = True
) -> list[TracedTest]:
    """:func:`trace_tests` over several test modules, in parallel."""
    from concurrent.futures import ThreadPoolExecutor

    from tqdm import tqdm

    found: list[TracedTest] = []
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        for traced in tqdm(
            pool.map(trace_tests, modules),
            total=len(modules),
            desc="tracing tests",
            unit="module",
            disable=not progress,
        ):
            found += traced
    return found


@dataclass(frozen=True)
class TestTarget:
    """A function that tests exercise: where it is and which tests to run for it."""

    module: str
    path: Path
    qualname: str
    tests: tuple[str, ...]


def tests_by_function(traced: list[TracedTest]) -> dict[tuple[str, int], list[TracedTest]]:
    by_fn: dict[tuple[str, int], list[TracedTest]] = defaultdict(list)
    for t in traced:
        # Only unittest methods can be named in a check; doctests that load_tests adds cannot.
        module, _, method = t.test_id.rpartition(".")
        if not (t.test_id.startswith("test.") and method.startswith("test")):
            continue
        for file, line, _ in t.calls:
            by_fn[(os.path.realpath(file), line)].append(t)
    return by_fn


def choose_tests(tests: list[TracedTest]) -> tuple[str, ...]:
    """Up to three of the tests, the most focused first (fewest functions called), then the quickest."""
    ranked = sorted(tests, key=lambda t: (len(t.calls), t.seconds, t.test_id))
    return tuple(sorted(t.test_id for t in ranked[:_TESTS_PER_TASK]))


def function_lines(path: Path) -> dict[str, int]:
    """qualname -> the line CPython reports as the code object's first line (the first decorator's)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tree = ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError):
        return {}
    out = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            out[node.name] = node.decorator_list[0].lineno if node.decorator_list else node.lineno
        elif isinstance(node, ast.ClassDef):
            for m in node.body:
                if isinstance(m, ast.FunctionDef):
                    out[f"{node.name}.{m.name}"] = m.decorator_list[0].lineno if m.decorator_list else m.lineno
    return out


def python_tag() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"
