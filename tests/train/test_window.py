"""Windowing a full-attention model: the function kept inside the window, changed past it, recorded, and
brought back towards the original by a few steps of exact logit distillation from it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from trainer_helpers import tiny_shards  # tests/train/trainer_helpers.py

from smallcode.config import ConfigError
from smallcode.data import ShardLoader
from smallcode.model import ModelConfig, SmallCodeLM
from smallcode.model.checkpoint import Checkpoint, save_checkpoint
from smallcode.tokenizer import load_tokenizer
from smallcode.train.config import DistillConfig
from smallcode.train.distill import DistillObjective
from smallcode.train.teacher import Teacher
from smallcode.train.window import is_full_attention, long_range_loss, window_checkpoint, window_model

FULL = {"n_experts": 1, "top_k": 1, "window": 128, "n_global": 0, "max_seq_len": 128}


def full_model(gain: float = 3.0, **overrides: object) -> SmallCodeLM:
    torch.manual_seed(0)
    model = SmallCodeLM(ModelConfig.preset("tiny", **{**FULL, **overrides}))
    with torch.no_grad():  # larger than the init, so attention over far positions matters to the logits
        for p in model.parameters():
            if p.dim() > 1:
                p.mul_(gain)
    return model.eval()


def test_windowing_keeps_the_function_within_the_window_and_changes_it_past_it() -> None:
    full = full_model()
    assert is_full_attention(full.config)
    win = window_model(full, 16, 2)
    assert (win.config.window, win.config.n_global) == (16, 2) and not is_full_attention(win.config)
    assert win.config.replace(window=128, n_global=0) == full.config  # nothing else changed
    for a, b in zip(full.state_dict().values(), win.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    tokens = torch.randint(0, 256, (3, 40))
    with torch.no_grad():
        want, got = full(tokens).logits, win(tokens).logits
        # a sequence no longer than the window: every key is still in view
        torch.testing.assert_close(win(tokens[:, :16]).logits, full(tokens[:, :16]).logits, atol=1e-5, rtol=1e-5)
    # query i sees the sinks [0, 2) and (i - 16, i]: everything while i < 16 + 2, less from there on
    torch.testing.assert_close(got[:, :18], want[:, :18], atol=1e-5, rtol=1e-5)
    changed = (got - want).abs().amax(dim=(0, 2))
    assert (changed[18:] > 1e-3).all()


def test_window_checkpoint_records_its_parent_and_refuses_what_it_cannot_window(tmp_path) -> None:
    tok = tmp_path / "tokenizer.json"
    tok.write_text('{"stand-in": "copied byte for byte"}\n')
    parent = save_checkpoint(full_model(), tmp_path / "full", tokenizer_file=tok)
    out = window_checkpoint(parent, tmp_path / "win", 32, 4)
    ckpt = Checkpoint.open(out)
    assert (ckpt.config.window, ckpt.config.n_global) == (32, 4)
    assert ckpt.extra["window"] == {"window": 32, "n_global": 4}
    assert ckpt.extra["windowed_from"]["path"] == str(parent.resolve())
    assert (out / "tokenizer.json").read_bytes() == tok.read_bytes()
    with pytest.raises(ConfigError, match="already attends over a window of 32 positions with 4 global"):
        window_checkpoint(out, tmp_path / "again", 16, 4)
    with pytest.raises(ConfigError, match=r"window must be an integer in \[1, max_seq_len\)"):
        window_checkpoint(parent, tmp_path / "x", 128, 4)
    with pytest.raises(ConfigError, match="n_global must be an integer >= 0"):
        window_checkpoint(parent, tmp_path / "x", 16, -1)
    with pytest.raises(ConfigError, match="is the parent checkpoint itself"):
        window_checkpoint(parent, parent, 16, 4)
    assert not (tmp_path / "again").exists() and not (tmp_path / "x").exists()


def test_long_range_loss_is_the_cross_entropy_of_the_first_validation_sequences() -> None:
    shards = tiny_shards()
    vocab = load_tokenizer(shards / "tokenizer.json").vocab_size
    model = full_model(gain=1.0, vocab_size=vocab)
    got = long_range_loss(model, shards, 48, rows=3, batch_size=2)
    rows = torch.cat(list(ShardLoader(shards, 2, 48, seed=0).validation()))[:3].long()
    with torch.no_grad():
        logits = model(rows[:, :-1]).logits
    want = F.cross_entropy(logits.flatten(0, 1), rows[:, 1:].flatten()).item()
    assert got["rows"] == 3 and got["tokens"] == 3 * 48 and got["seq_len"] == 48
    assert got["loss"] == pytest.approx(want, abs=1e-5)
    with pytest.raises(ConfigError, match="holds no sequence of 100001 tokens"):
        long_range_loss(model, shards, 100_000)


def test_distillation_from_the_full_attention_original_lowers_the_long_range_loss() -> None:
    # Sequences of 4 x the window sampled from the original: it is their true distribution, so any other
    # model scores worse on them, and learning the original's logits is the way back.
    window, vocab = 8, 64
    teacher = full_model(gain=6.0, vocab_size=vocab)

    @torch.no_grad()
    def sample(n: int, seed: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed)
        ids = torch.randint(0, vocab, (n, 1), generator=gen)
        for _ in range(4 * window):
            ids = torch.cat([ids, torch.multinomial(teacher(ids).logits[:, -1].softmax(-1), 1, generator=gen)], 1)
        return ids

    train, held = sample(64, 1), sample(32, 2)

    def loss(m: SmallCodeLM) -> float:
        with torch.no_grad():
            return F.cross_entropy(m(held[:, :-1]).logits.flatten(0, 1), held[:, 1:].flatten()).item()

    student = window_model(teacher, window, 2).train()
    before = loss(student)
    assert before > loss(teacher) + 0.05  # windowing costs at 4 x the window
    kd = DistillObjective(DistillConfig(teacher="the original", alpha=0.0),
                          teacher=Teacher(teacher, "smallcode", "the original", vocab, "cpu"))
    opt = torch.optim.AdamW(student.parameters(), lr=1e-3)
    for step in range(8):
        rows = train[step * 16 % 64:][:16]
        total, _, metrics = kd(student, {"input_ids": rows[:, :-1], "labels": rows[:, 1:]})
        assert total == metrics["kd_loss"]  # alpha 0: the logit KL alone
        opt.zero_grad()
        total.backward()
        opt.step()
    after = loss(student)
    assert after < before - 0.005, (before, after)
