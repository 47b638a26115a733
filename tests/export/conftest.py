"""A fixture every export test file uses: one torch thread (the tokenizer is the run's shared
``tiny_tokenizer_dir``)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread: None) -> None:
    """Every export test module on one torch thread (the fixture is the suite's ``one_thread``)."""
