"""A small synthetic corpus for the data pipeline tests (the tokenizer is the run's shared
``tiny_tokenizer``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from data_helpers import make_module  # tests/data/data_helpers.py

from smallcode.data.config import PrepareConfig


@pytest.fixture
def small_corpus(tmp_path: Path) -> Path:
    """30 distinct modules in nested directories, plus a cache dir that must be ignored."""
    root = tmp_path / "corpus"
    for i in range(30):
        d = root / f"pkg{i % 3}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"mod{i:02d}.py").write_text(make_module(i))
    (root / "__pycache__").mkdir()
    (root / "__pycache__" / "ignored.py").write_text("x = 1\n")
    return root


@pytest.fixture
def fast_config() -> PrepareConfig:
    return PrepareConfig(workers=1, val_fraction=0.2, encode_batch_docs=7)
