"""Mining repository problems: function-completion tasks from local Python code, checked in the sandbox.

``repo.py`` finds candidates (functions that a doctest or, for the standard library, CPython's own
unit tests exercise; :mod:`smallcode.tasks.repo` builds each into a task), keeps those the harness
passes with the original body and fails with trivially wrong ones, writes and reads mined task files
and pins mined tasks as the ``repo`` suite's manifest. ``repo_tests.py`` traces the standard library's unit
tests; ``repo_pytest.py`` runs a repository's own pytest suite once in the sandbox and traces it.
``smallcode eval mine`` calls :func:`mine_repo`. The pinned suite itself is rebuilt without the
sandbox by :func:`smallcode.tasks.repo.load_pinned_stdlib` (``load_suite("repo")``).
"""

from __future__ import annotations

from smallcode.eval.mining.repo import load_mined, mine_repo, write_manifest
from smallcode.tasks.repo import load_pinned_stdlib, task_sha256

__all__ = ["load_mined", "load_pinned_stdlib", "mine_repo", "task_sha256", "write_manifest"]
