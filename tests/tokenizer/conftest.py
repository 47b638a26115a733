"""The tokenizer tests use the run's shared tiny tokenizer (``tests/factories.py``); ``tiny_corpus``
says what it was trained on, for the tests that train it again."""

from __future__ import annotations

from pathlib import Path

import pytest

from factories import TOKENIZER_CORPUS, TOKENIZER_VOCAB


@pytest.fixture(scope="session")
def tiny_corpus() -> tuple[list[Path], int]:
    """The corpus and vocabulary size of the session's tiny tokenizer."""
    return TOKENIZER_CORPUS, TOKENIZER_VOCAB
