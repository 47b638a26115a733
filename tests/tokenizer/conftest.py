"""A tiny tokenizer trained once per session on a few standard-library packages."""

from __future__ import annotations

import sysconfig
from pathlib import Path

import pytest

from smallcode.tokenizer import CodeTokenizer, load_tokenizer, train_tokenizer

STDLIB = Path(sysconfig.get_paths()["stdlib"])
TINY_CORPUS = [STDLIB / "json", STDLIB / "collections", STDLIB / "textwrap.py", STDLIB / "string.py"]
TINY_VOCAB = 1000


@pytest.fixture(scope="session")
def tiny_corpus() -> tuple[list[Path], int]:
    """The corpus and vocabulary size of the session's tiny tokenizer."""
    return TINY_CORPUS, TINY_VOCAB


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tok")
    train_tokenizer(TINY_CORPUS, TINY_VOCAB, out, show_progress=False)
    return out


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_tokenizer_dir: Path) -> CodeTokenizer:
    return load_tokenizer(tiny_tokenizer_dir)
