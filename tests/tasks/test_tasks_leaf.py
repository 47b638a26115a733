"""What importing and calling pulls in at run time, checked in a fresh interpreter where ``sys.modules``
shows everything loaded: ``smallcode.tasks`` is a leaf, and fine-tuning reads MBPP without ``eval``.
The import direction as written (every import statement, function-level ones included) is
``tests/test_layering.py``; these are what it cannot see."""

from __future__ import annotations

import json
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"


def smallcode_modules_after(code: str) -> set[str]:
    """The ``smallcode`` modules loaded once ``code`` has run in a fresh interpreter."""
    code += "\nimport json, sys\nprint(json.dumps(sorted(m for m in sys.modules if m.startswith('smallcode'))))\n"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(SRC)})
    assert proc.returncode == 0, proc.stderr
    return set(json.loads(proc.stdout))


def submodules(package: str) -> list[str]:
    return [f"{package}.{m.name}" for m in pkgutil.iter_modules([str(SRC / package.replace(".", "/"))])]


def test_tasks_import_neither_eval_nor_train() -> None:
    modules = ["smallcode.tasks", *submodules("smallcode.tasks")]
    loaded = smallcode_modules_after("\n".join(f"import {m}" for m in modules))
    assert "smallcode.tasks.fetch" in loaded
    assert not {m for m in loaded if m.startswith(("smallcode.eval", "smallcode.train"))}
    # a leaf: besides itself, only the package root, the atomic writer and the error base it raises
    assert {m for m in loaded if not m.startswith("smallcode.tasks")} == {"smallcode", "smallcode.fileio",
                                                                          "smallcode.errors"}


def test_the_fine_tuning_loader_reads_mbpp_without_eval() -> None:
    loaded = smallcode_modules_after("from smallcode.train.sft import load_mbpp_train\n"
                                     "assert len(load_mbpp_train()) == 374")
    assert "smallcode.tasks.mbpp" in loaded
    assert not {m for m in loaded if m.startswith("smallcode.eval")}
