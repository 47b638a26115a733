"""Checkpoint directories: bit-exact round trip, atomic replacement, clear errors on bad files."""

from __future__ import annotations

import json

import pytest
import torch

from smallcode.model import ModelConfig, SmallCodeLM
from smallcode.model.checkpoint import Checkpoint, CheckpointError, model_directory_kind, save_checkpoint


@pytest.mark.parametrize("overrides", [{}, {"tie_embeddings": True}, {"n_experts": 1, "top_k": 1}])
def test_round_trip_is_bit_exact(tmp_path, overrides: dict) -> None:
    model = SmallCodeLM(ModelConfig.preset("tiny", **overrides))
    tok = tmp_path / "tokenizer.json"
    tok.write_text('{"fake": true}')
    save_checkpoint(model, tmp_path / "ck", tokenizer_file=tok)
    loaded = Checkpoint.open(tmp_path / "ck").load_model()
    assert loaded.config == model.config
    for (k, a), (k2, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(a, b)
    ids = torch.randint(0, 256, (2, 40))
    assert torch.equal(model(ids).logits, loaded(ids).logits)
    assert (tmp_path / "ck" / "tokenizer.json").read_text() == '{"fake": true}'
    assert json.loads((tmp_path / "ck" / "config.json").read_text())["format_version"] == 1


def test_every_file_is_readable_by_others_as_open_makes_it(tmp_path) -> None:
    """Weights are no secret: a checkpoint on a shared machine is readable by the others (safetensors
    alone writes model.safetensors 0600); the mode is open()'s, 0666 less the umask."""
    import os

    old = os.umask(0o022)
    try:
        save_checkpoint(SmallCodeLM(ModelConfig.preset("tiny")), tmp_path / "ck")
    finally:
        os.umask(old)
    for f in (tmp_path / "ck").iterdir():
        assert f.stat().st_mode & 0o777 == 0o644, f.name


def test_overwrite_leaves_no_temporaries(tmp_path) -> None:
    a, b = SmallCodeLM(ModelConfig.preset("tiny")), SmallCodeLM(ModelConfig.preset("tiny"))
    save_checkpoint(a, tmp_path / "ck")
    save_checkpoint(b, tmp_path / "ck")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]
    assert torch.equal(Checkpoint.open(tmp_path / "ck").load_model().embed.weight, b.embed.weight)


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
    assert torch.equal(Checkpoint.open(tmp_path / "ck").load_model().embed.weight, good.embed.weight)


@pytest.fixture
def ck(tmp_path):
    save_checkpoint(SmallCodeLM(ModelConfig.preset("tiny")), tmp_path / "ck")
    return tmp_path / "ck"


def test_missing_files(ck, tmp_path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        Checkpoint.open(tmp_path / "nowhere").load_model()
    (ck / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"model\.safetensors: missing"):
        Checkpoint.open(ck).load_model()
    (ck / "config.json").unlink()
    with pytest.raises(CheckpointError, match=r"config\.json: missing"):
        Checkpoint.open(ck).load_model()


def test_truncated_weights(ck) -> None:
    f = ck / "model.safetensors"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"model\.safetensors: unreadable or truncated"):
        Checkpoint.open(ck).load_model()


def test_garbage_config_and_wrong_version(ck) -> None:
    cfg = ck / "config.json"
    meta = json.loads(cfg.read_text())
    cfg.write_text("{not json")
    with pytest.raises(CheckpointError, match=r"config\.json: not valid JSON"):
        Checkpoint.open(ck).load_model()
    cfg.write_text(json.dumps({**meta, "format_version": 99}))
    with pytest.raises(CheckpointError, match="format_version 99"):
        Checkpoint.open(ck).load_model()
    cfg.write_text(json.dumps({**meta, "model": {**meta["model"], "top_k": 9}}))
    with pytest.raises(CheckpointError, match="top_k"):
        Checkpoint.open(ck).load_model()


def test_weights_that_do_not_match_the_config(ck) -> None:
    cfg = ck / "config.json"
    meta = json.loads(cfg.read_text())
    cfg.write_text(json.dumps({**meta, "model": {**meta["model"], "d_ff": 128}}))
    with pytest.raises(CheckpointError, match=r"w_gate_up.*shape"):
        Checkpoint.open(ck).load_model()
    cfg.write_text(json.dumps({**meta, "model": {**meta["model"], "n_layers": 3}}))
    with pytest.raises(CheckpointError, match=r"missing \['blocks\.2"):
        Checkpoint.open(ck).load_model()


def test_open_reads_the_config_and_records_without_the_weights(tmp_path) -> None:
    model = SmallCodeLM(ModelConfig.preset("tiny"))
    save_checkpoint(model, tmp_path / "ck", extra={"train_step": 7, "tokenizer_hash": "ab" * 32})
    (tmp_path / "ck" / "model.safetensors").write_bytes(b"not read by open")
    ckpt = Checkpoint.open(tmp_path / "ck")
    assert ckpt.config == model.config and ckpt.directory == tmp_path / "ck"
    assert ckpt.extra == {"train_step": 7, "tokenizer_hash": "ab" * 32}
    assert ckpt.meta["format_version"] == 1 and ckpt.meta["model"] == model.config.to_dict()
    assert ckpt.weights_file == tmp_path / "ck" / "model.safetensors" and ckpt.tokenizer_file is None
    with pytest.raises(CheckpointError, match="tokenizer.json: missing"):
        ckpt.load_tokenizer()
    with pytest.raises(CheckpointError, match="unreadable or truncated"):
        ckpt.weights()


def test_tied_weights_load_as_a_full_state_dict_and_stay_tied(tmp_path) -> None:
    model = SmallCodeLM(ModelConfig.preset("tiny", tie_embeddings=True))
    save_checkpoint(model, tmp_path / "ck")
    ckpt = Checkpoint.open(tmp_path / "ck")
    state = ckpt.weights()
    assert set(state) == set(model.state_dict())
    assert torch.equal(state["lm_head.weight"], model.embed.weight)
    loaded = ckpt.load_model()
    assert loaded.lm_head.weight is loaded.embed.weight


def test_load_model_in_another_dtype(ck) -> None:
    ckpt = Checkpoint.open(ck)
    full, half = ckpt.load_model(), ckpt.load_model(dtype=torch.bfloat16)
    assert all(p.dtype == torch.bfloat16 for p in half.parameters())
    assert torch.equal(half.embed.weight, full.embed.weight.to(torch.bfloat16))


def test_recognising_model_directories(ck, tmp_path) -> None:
    assert Checkpoint.is_checkpoint(ck) and model_directory_kind(ck) == "smallcode"
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_text(json.dumps({"model_type": "mistral", "vocab_size": 256}))
    assert model_directory_kind(hf) == "huggingface" and not Checkpoint.is_checkpoint(hf)
    assert not Checkpoint.is_checkpoint(tmp_path / "nowhere") and not Checkpoint.is_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match="not a directory"):
        model_directory_kind(tmp_path / "nowhere")
    with pytest.raises(CheckpointError, match="no config.json"):
        model_directory_kind(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"hello": 1}))
    with pytest.raises(CheckpointError, match="neither a smallcode checkpoint config nor a Hugging Face config"):
        model_directory_kind(tmp_path)
    assert not Checkpoint.is_checkpoint(tmp_path)
    (ck / "model.safetensors").unlink()  # a config without its weights is not a checkpoint to use
    assert model_directory_kind(ck) == "smallcode" and not Checkpoint.is_checkpoint(ck)
