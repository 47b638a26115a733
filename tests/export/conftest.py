"""Fixtures both export test files use: one torch thread, and a small tokenizer trained once."""

from __future__ import annotations

import sysconfig
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from smallcode.tokenizer import train_tokenizer


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    # Tiny matrices: with other jobs on the cores, handing each op to a thread pool costs 100x the op.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tok")
    train_tokenizer([Path(sysconfig.get_paths()["stdlib"]) / "json"], 400, out, show_progress=False)
    return out
