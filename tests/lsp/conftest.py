"""Fixtures of the language-server tests: the run's shared tiny tokenizer and model, saved as a
checkpoint with the project's checkpoint writer (the server under test loads it from disk)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from factories import make_model
from smallcode.model.checkpoint import save_checkpoint
from smallcode.tokenizer import CodeTokenizer

# The endpoint tests serve the model with the serve tests' helpers (tests/serve/app_helpers.py).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "serve"))


@pytest.fixture(scope="session")
def lsp_tokenizer(tiny_tokenizer: CodeTokenizer) -> CodeTokenizer:
    return tiny_tokenizer


@pytest.fixture(scope="session")
def checkpoint(tiny_tokenizer_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model (peaked random weights, ``factories.make_model``) as a checkpoint directory."""
    out = tmp_path_factory.mktemp("lsp-ckpt")
    return save_checkpoint(make_model(), out / "ckpt", tokenizer_file=tiny_tokenizer_dir / "tokenizer.json")
