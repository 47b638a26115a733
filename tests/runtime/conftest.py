"""The run's shared tiny tokenizer (``infer_tokenizer``, the name these tests use) and the tiny random
model sized to it."""

from __future__ import annotations

import pytest

from factories import make_model  # type: ignore[import-not-found]
from smallcode.runtime import Engine
from smallcode.tokenizer import CodeTokenizer


@pytest.fixture(scope="session")
def infer_tokenizer(tiny_tokenizer: CodeTokenizer) -> CodeTokenizer:
    return tiny_tokenizer


@pytest.fixture
def engine(infer_tokenizer: CodeTokenizer) -> Engine:
    return Engine(make_model(), infer_tokenizer)
