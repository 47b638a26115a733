"""A Hugging Face directory as a backend (the one in-process backend, over ``runtime.hf``) on a tiny
random GPT-2 that the test saves itself."""

from __future__ import annotations

from pathlib import Path

import pytest

from smallcode.client import ClientError


@pytest.fixture
def tiny_dir(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    d = tmp_path_factory.mktemp("tiny-gpt2")
    tok = PreTrainedTokenizerFast(
        tokenizer_file=str(shared_data / "tokenizers" / "gpt2" / "tokenizer.json"), eos_token="<|endoftext|>"
    )
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=len(tok), n_positions=128, n_embd=32, n_layer=2, n_head=2)
    GPT2LMHeadModel(cfg).save_pretrained(d)
    tok.save_pretrained(d)
    return d


def test_generates_and_truncates(tiny_dir: Path) -> None:
    from smallcode.backends.local import LocalBackend

    b = LocalBackend(tiny_dir, device="cpu")  # float32 on the CPU
    assert b.name.startswith("hf:")
    greedy = b.generate(["def add(a, b):\n", "x = 1\n"], 2, 0.0, 1.0, 12, [])
    assert len(greedy) == 2 and all(len(g) == 2 for g in greedy)
    assert greedy[0][0] == greedy[0][1] and isinstance(greedy[0][0], str) and greedy[0][0]
    # The same text cut at its own characters: stop sequences apply to the decoded completion.
    stop_at = greedy[0][0][3:6]
    cut = b.generate(["def add(a, b):\n"], 1, 0.0, 1.0, 12, [stop_at])[0][0]
    assert cut == greedy[0][0][: greedy[0][0].find(stop_at)]
    sampled = b.generate(["def add(a, b):\n"], 3, 1.0, 0.9, 8, [])
    assert len(sampled[0]) == 3


def test_not_a_model_directory(tmp_path: Path) -> None:
    from smallcode.backends.local import LocalBackend

    with pytest.raises(ClientError, match="not a Hugging Face model directory"):
        LocalBackend(tmp_path, kind="huggingface")
