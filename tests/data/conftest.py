"""A tiny tokenizer and a small synthetic corpus for the data pipeline tests."""

from __future__ import annotations

import sysconfig
from pathlib import Path

import pytest

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


def make_module(i: int, lines: int = 40) -> str:
    """A distinct, realistic-looking Python module (distinct enough not to be a near-duplicate)."""
    body = [f'"""Module number {i}: helpers for case {i * 7919 % 1000}."""', "", "import math", ""]
    for j in range(lines):
        body.append(f"def f_{i}_{j}(x_{j}, y={(i * 31 + j * 17) % 97}):")
        body.append(f"    return math.sqrt(x_{j} ** {j % 5 + 1} + y * {i + j})  # note {(i * j) % 13}")
    return "\n".join(body) + "\n"


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
