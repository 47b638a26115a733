"""Fixtures of the client tests: the tiny engine of tests/factories.py, and the serve tests' helpers
(the real server on loopback) and the backend tests' scripted HTTP server on the import path."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

TESTS = Path(__file__).resolve().parents[1]
for helpers in ("serve", "backends"):
    if str(TESTS / helpers) not in sys.path:
        sys.path.insert(0, str(TESTS / helpers))


@pytest.fixture(scope="module")
def engine() -> Any:
    from factories import make_model, tiny_tokenizer
    from smallcode.runtime.engine import Engine

    return Engine(make_model(), tiny_tokenizer())
