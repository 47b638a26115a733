"""Import direction: ``smallcode.tasks`` is a leaf under ``train`` and ``eval``, and ``train`` never
imports ``eval``. Checked in a fresh interpreter, where ``sys.modules`` shows everything an import pulled in."""

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
    # a leaf: besides itself, only the package root and the atomic writer
    assert {m for m in loaded if not m.startswith("smallcode.tasks")} == {"smallcode", "smallcode.fileio"}


def test_train_never_imports_eval() -> None:
    train = submodules("smallcode.train")
    assert "smallcode.train.sft" in train and "smallcode.train.recipe" in train
    loaded = smallcode_modules_after("\n".join(f"import {m}" for m in train))
    assert not {m for m in loaded if m.startswith("smallcode.eval")}


def test_the_fine_tuning_loader_reads_mbpp_without_eval() -> None:
    loaded = smallcode_modules_after("from smallcode.train.sft import load_mbpp_train\n"
                                     "assert len(load_mbpp_train()) == 374")
    assert "smallcode.tasks.mbpp" in loaded
    assert not {m for m in loaded if m.startswith("smallcode.eval")}


def test_eval_never_imports_train() -> None:
    """The evaluation (held-out bits per byte included) scores models without the training code;
    ``smallcode.pipeline`` is the one module that runs both."""
    evals = submodules("smallcode.eval")
    assert "smallcode.eval.heldout" in evals and "smallcode.eval.samples" in evals
    loaded = smallcode_modules_after("\n".join(f"import {m}" for m in evals))
    assert not {m for m in loaded if m.startswith("smallcode.train")}
