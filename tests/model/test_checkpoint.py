"""Checkpoint directories: bit-exact round trip, atomic replacement, clear errors on bad files."""

from __future__ import annotations

import json

import pytest
import torch

from smallcode.model import ModelConfig, SmallCodeLM
from smallcode.model.checkpoint import CheckpointError, load_checkpoint, save_checkpoint


@pytest.mark.parametrize("overrides", [{}, {"tie_embeddings": True}, {"n_experts": 1, "top_k": 1}])
def test_round_trip_is_bit_exact(tmp_path, overrides: dict) -> None:
    model = SmallCodeLM(ModelConfig.preset("tiny", **overrides))
    tok = tmp_path / "tokenizer.json"
    tok.write_text('{"fake": true}')
    save_checkpoint(model, tmp_path / "ck", tokenizer_file=tok)
    loaded = load_checkpoint(tmp_path / "ck")
    assert loaded.config == model.config
    for (k, a), (k2, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(a, b)
    ids = torch.randint(0, 256, (2, 40))
    assert torch.equal(model(ids).logits, loaded(ids).logits)
    assert (tmp_path / "ck" / "tokenizer.json").read_text() == '{"fake": true}'
    assert json.loads((tmp_path / "ck" / "config.json").read_text())["format_version"] == 1


def test_overwrite_leaves_no_temporaries(tmp_path) -> None:
    a, b = SmallCodeLM(ModelConfig.preset("tiny")), SmallCodeLM(ModelConfig.preset("tiny"))
    save_checkpoint(a, tmp_path / "ck")
    save_checkpoint(b, tmp_path / "ck")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]
    assert torch.equal(load_checkpoint(tmp_path / "ck").embed.weight, b.embed.weight)


def test_failed_save_keeps_previous(tmp_path, monkeypatch) -> None:
    good = SmallCodeLM(ModelConfig.preset("tiny"))
    save_checkpoint(good, tmp_path / "ck")
    import smallcode.model.checkpoint as ckpt

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(ckpt, "save_file", boom)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(SmallCodeLM(ModelConfig.preset("tiny")), tmp_path / "ck")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]
    assert torch.equal(load_checkpoint(tmp_path / "ck").embed.weight, good.embed.weight)


@pytest.fixture
def ck(tmp_path):
    save_checkpoint(SmallCodeLM(ModelConfig.preset("tiny")), tmp_path / "ck")
    return tmp_path / "ck"


def test_missing_files(ck, tmp_path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nowhere")
    (ck / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"model\.safetensors: missing"):
        load_checkpoint(ck)
    (ck / "config.json").unlink()
    with pytest.raises(CheckpointError, match=r"config\.json: missing"):
        load_checkpoint(ck)


def test_truncated_weights(ck) -> None:
    f = ck / "model.safetensors"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"model\.safetensors: unreadable or truncated"):
        load_checkpoint(ck)


def test_garbage_config_and_wrong_version(ck) -> None:
    cfg = ck / "config.json"
    meta = json.loads(cfg.read_text())
    cfg.write_text("{not json")
    with pytest.raises(CheckpointError, match=r"config\.json: not valid JSON"):
        load_checkpoint(ck)
    cfg.write_text(json.dumps({**meta, "format_version": 99}))
    with pytest.raises(CheckpointError, match="format_version 99"):
        load_checkpoint(ck)
    cfg.write_text(json.dumps({**meta, "model": {**meta["model"], "top_k": 9}}))
    with pytest.raises(CheckpointError, match="top_k"):
        load_checkpoint(ck)


def test_weights_that_do_not_match_the_config(ck) -> None:
    cfg = ck / "config.json"
    meta = json.loads(cfg.read_text())
    cfg.write_text(json.dumps({**meta, "model": {**meta["model"], "d_ff": 128}}))
    with pytest.raises(CheckpointError, match=r"w_gate_up.*shape"):
        load_checkpoint(ck)
    cfg.write_text(json.dumps({**meta, "model": {**meta["model"], "n_layers": 3}}))
    with pytest.raises(CheckpointError, match=r"missing \['blocks\.2"):
        load_checkpoint(ck)
