"""Fixtures of the language-server tests: the serve tests' tiny tokenizer and model, saved as a
checkpoint with the project's checkpoint writer (the server under test loads it from disk)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from smallcode.model.checkpoint import save_checkpoint
from smallcode.tokenizer import CodeTokenizer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "serve"))
from app_helpers import make_engine, make_tokenizer  # type: ignore[import-not-found]  # noqa: E402


@pytest.fixture(scope="session")
def lsp_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> CodeTokenizer:
    return make_tokenizer(Path(tmp_path_factory.mktemp("lsp-tokenizer")))


@pytest.fixture(scope="session")
def checkpoint(lsp_tokenizer: CodeTokenizer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The serve tests' tiny model (peaked random weights) as a checkpoint directory."""
    out = tmp_path_factory.mktemp("lsp-ckpt")
    lsp_tokenizer.save(out / "tokenizer")
    engine = make_engine(lsp_tokenizer)
    return save_checkpoint(engine.model, out / "ckpt", tokenizer_file=out / "tokenizer" / "tokenizer.json")


