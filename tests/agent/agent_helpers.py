"""Helpers (no tests) of the agent tests."""

from __future__ import annotations

import hashlib
from pathlib import Path

TEST_COMMAND = "python -B tests/test_calc.py"
"""How the fixture repository runs its tests."""


def tree_digest(root: Path) -> str:
    """A digest of every file (with .git) under ``root``: names and contents."""
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        h.update(str(p.relative_to(root)).encode())
        if p.is_file() and not p.is_symlink():
            h.update(p.read_bytes())
    return h.hexdigest()
