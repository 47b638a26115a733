"""The smallcode-checkpoint backend: engine completions, stops, n samples, and the CLI path."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from smallcode.backends.local import LocalBackend
from smallcode.client import ClientError
from smallcode.model import ModelConfig, SmallCodeLM
from smallcode.model.checkpoint import Checkpoint, save_checkpoint
from smallcode.runtime import Engine, SamplingParams
from smallcode.tokenizer import CodeTokenizer, load_tokenizer


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory, tiny_tokenizer: CodeTokenizer) -> Path:
    root = tmp_path_factory.mktemp("local")
    tok = tiny_tokenizer.save(root / "tok")
    torch.manual_seed(0)
    model = SmallCodeLM(ModelConfig.preset("tiny", vocab_size=512))
    return save_checkpoint(model, root / "ck", tokenizer_file=tok, extra={"tokenizer_hash": load_tokenizer(tok).hash})


def test_completions_come_from_the_engine(ckpt: Path) -> None:
    backend = LocalBackend(ckpt, seed=5)
    prompts = ["def add(a, b):\n", "import json\n", "x = ["]
    got = backend.generate(prompts, 3, 0.8, 0.95, 12, ["\ndef"])
    assert [len(g) for g in got] == [3, 3, 3]
    engine = Engine.from_checkpoint(ckpt)
    expected = engine.generate(prompts, SamplingParams(max_tokens=12, temperature=0.8, top_p=0.95, seed=5,
                                                       stop=["\ndef"]), n=3)
    assert [c for row in got for c in row] == [c.text for c in expected]
    assert all("\ndef" not in c for row in got for c in row)
    # fixed seed: a resumed run regenerates the same samples
    assert backend.generate(prompts, 3, 0.8, 0.95, 12, ["\ndef"]) == got


def test_recognises_and_refuses(ckpt: Path, tmp_path: Path) -> None:
    assert Checkpoint.is_checkpoint(ckpt)
    assert not Checkpoint.is_checkpoint(tmp_path)
    with pytest.raises(ClientError, match="cannot load"):
        LocalBackend(tmp_path)
    with pytest.raises(ClientError, match="empty prompt"):
        LocalBackend(ckpt).generate([""], 1, 0.0, 1.0, 4, [])
