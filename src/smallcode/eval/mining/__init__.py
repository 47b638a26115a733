"""Repository problems: function-completion tasks mined from local Python code, and the pinned ``repo`` suite.

``repo.py`` finds candidates (functions that a doctest or, for the standard library, CPython's own
unit tests exercise), keeps those the harness passes with the original body and fails with trivially
wrong ones, writes and reads mined task files, and rebuilds the pinned 500 standard-library problems
listed in the package's manifest (:mod:`smallcode.tasks.manifest`). ``repo_tests.py`` traces the unit
tests. The evaluation loads the suite through :func:`load_repo_suite`; ``smallcode eval mine`` calls
:func:`mine_repo`. The other suites (HumanEval, MBPP, EvalPlus) are data, in :mod:`smallcode.tasks`.
"""

from __future__ import annotations

from smallcode.eval.mining.repo import (
    load_mined,
    load_pinned_stdlib,
    load_repo_suite,
    mine_repo,
    task_sha256,
    write_manifest,
)

__all__ = ["load_mined", "load_pinned_stdlib", "load_repo_suite", "mine_repo", "task_sha256", "write_manifest"]
