"""Shared fixtures: the tiny model config of STYLE.md, the shared data directory, determinism, and a
Python that sees a copy of the package with no ../shared beside it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
# ../shared/data beside the checkout, as laid out for developers and CI.
SHARED_DATA = Path(os.environ.get("SMALLCODE_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def tiny_tokenizer_dir() -> Path:
    """The one test tokenizer's directory (``factories.tiny_tokenizer_dir``), trained once per run."""
    from factories import tiny_tokenizer_dir as build

    return build()


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_tokenizer_dir: Path) -> Any:
    """The one test tokenizer, loaded."""
    from smallcode.tokenizer import load_tokenizer

    return load_tokenizer(tiny_tokenizer_dir)


@pytest.fixture(autouse=True)
def _seed_and_threads() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """torch on one thread for a module of tiny models: with other jobs on the cores, handing each
    small op to a thread pool costs far more than the op."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"shared data not found at {SHARED_DATA}; set SMALLCODE_SHARED_DATA")
    return SHARED_DATA


@pytest.fixture(scope="session")
def offline_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of ``src/smallcode`` in a temporary directory: nothing beside it, no ../shared."""
    root = tmp_path_factory.mktemp("offline")
    shutil.copytree(REPO / "src" / "smallcode", root / "src" / "smallcode",
                    ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    return root / "src"


@pytest.fixture
def offline_python(offline_package: Path, tmp_path: Path) -> Callable[..., subprocess.CompletedProcess]:
    """Run ``python ARGS`` on the package copy as a user of a fresh install would: the working
    directory and HOME in a temporary directory, SMALLCODE_SHARED_DATA and XDG_* unset."""
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    home.mkdir()
    cwd.mkdir()
    env = {k: v for k, v in os.environ.items()
           if k not in ("SMALLCODE_SHARED_DATA", "PYTHONPATH") and not k.startswith("XDG_")}
    env.update(HOME=str(home), PYTHONPATH=str(offline_package))

    def run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True,
                              timeout=timeout)

    return run
