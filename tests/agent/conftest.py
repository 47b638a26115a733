"""Fixtures of the agent tests: a small buggy repository (bwrap required, as CI has it), a canary in a
temporary HOME."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "eval"))
from test_sandbox_helpers import require_bwrap  # noqa: E402


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A git repository with a bug in calc.add and a test that catches it (its tests need bwrap)."""
    require_bwrap()
    root = tmp_path / "user-repo"
    (root / "tests").mkdir(parents=True)
    (root / "calc.py").write_text("def add(a, b):\n    return a - b\n\n\ndef mul(a, b):\n    return a * b\n")
    (root / "tests" / "test_calc.py").write_text(
        "import sys\nsys.path.insert(0, '.')\nfrom calc import add, mul\n"
        "assert add(2, 3) == 5, add(2, 3)\nassert mul(2, 3) == 6\nprint('tests ok')\n")
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "start"]):
        subprocess.run(["git", "-c", "commit.gpgsign=false", *args], cwd=root, env=env, check=True)
    return root


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A temporary HOME holding a canary file."""
    h = tmp_path / "home"
    h.mkdir()
    (h / "canary.txt").write_text("alive\n")
    monkeypatch.setenv("HOME", str(h))
    return h
