"""A tokenizer trained on the json package and a tiny random model sized to it."""

from __future__ import annotations

import sysconfig
from pathlib import Path

import pytest

from factories import make_model  # type: ignore[import-not-found]
from smallcode.runtime import Engine
from smallcode.tokenizer import CodeTokenizer, load_tokenizer, train_tokenizer


@pytest.fixture(scope="session")
def infer_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> CodeTokenizer:
    out = tmp_path_factory.mktemp("infer-tok")
    train_tokenizer([Path(sysconfig.get_paths()["stdlib"]) / "json"], 400, out, show_progress=False)
    return load_tokenizer(out)


@pytest.fixture
def engine(infer_tokenizer: CodeTokenizer) -> Engine:
    return Engine(make_model(), infer_tokenizer)
