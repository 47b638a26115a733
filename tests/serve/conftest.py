"""Fixtures of the server tests: one tiny tokenizer and model per session, and one live server on
loopback (the real scheduler behind the app) that the app tests share. Tests that need another
configuration (a key, a small queue, small prefill chunks) start their own with ``running_server``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from app_helpers import CONTEXT, make_engine, running_server  # type: ignore[import-not-found]

from smallcode.runtime.engine import Engine
from smallcode.serve.app import Limits
from smallcode.tokenizer import CodeTokenizer


@pytest.fixture(scope="session")
def tokenizer(tiny_tokenizer: CodeTokenizer) -> CodeTokenizer:
    """The shared test tokenizer (``tests/conftest.py``), under the name these tests use."""
    return tiny_tokenizer


@pytest.fixture(scope="session")
def reference(tokenizer: CodeTokenizer) -> Engine:
    """An engine with the served model's weights, used alone: what a request gets without a server."""
    return make_engine(tokenizer, CONTEXT)


@pytest.fixture(scope="session")
def prompt_format(tokenizer: CodeTokenizer) -> Any:
    from smallcode.runtime.formats import prompt_format

    return prompt_format(tokenizer)


@pytest.fixture(scope="session")
def live(tokenizer: CodeTokenizer) -> Iterator[tuple[str, Any]]:
    """(base URL, scheduler) of the shared server: context CONTEXT tokens, the default limits but
    ``max_tokens`` 256, so that a request without one stays short."""
    with running_server(make_engine(tokenizer, CONTEXT), limits=Limits(max_tokens=256)) as served:
        yield served
