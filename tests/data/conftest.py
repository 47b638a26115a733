"""A tiny tokenizer and a small synthetic corpus for the data pipeline tests."""

from __future__ import annotations

import sysconfig
from pathlib import Path

import pytest
from data_helpers import make_module  # tests/data/data_helpers.py

from smallcode.data.config import PrepareConfig
from smallcode.tokenizer import CodeTokenizer, load_tokenizer, train_tokenizer

STDLIB = Path(sysconfig.get_paths()["stdlib"])


@pytest.fixture(scope="session")
def data_tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("data_tok")
    train_tokenizer([STDLIB / "json", STDLIB / "textwrap.py"], 500, out, show_progress=False)
    return out


@pytest.fixture(scope="session")
def data_tokenizer(data_tokenizer_dir: Path) -> CodeTokenizer:
    return load_tokenizer(data_tokenizer_dir)


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
