"""Shards prepared with a Hugging Face model's own tokenizer (an imported model's): its files beside the
shards, FIM examples in its family's tokens, and FIM refused for a tokenizer that has none."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from data_helpers import make_module  # tests/data/data_helpers.py

from hf_tokenizers import FAMILY_SPECIALS, byte_level, family_tokenizer  # type: ignore[import-not-found]
from smallcode.corpus import DataError
from smallcode.data import ShardLoader, prepare
from smallcode.data.config import PrepareConfig


def test_prepared_shards_of_a_foreign_tokenizer_train_with_its_fim_tokens(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(12):
        (corpus / f"m{i}.py").write_text(make_module(i, lines=12))
    config = PrepareConfig(workers=1, val_fraction=0.2, decontaminate=False)
    hf = family_tokenizer("qwen2.5-coder")
    hf.save_pretrained(tmp_path / "tok")
    shards = tmp_path / "shards"
    prepare([corpus], tmp_path / "tok", shards, config, progress=False)
    assert (shards / "tokenizer_config.json").read_bytes() == (tmp_path / "tok" / "tokenizer_config.json").read_bytes()
    loader = ShardLoader(shards, batch_size=4, seq_len=128, seed=0, fim_rate=1.0)
    rows = torch.cat([loader.batch(i) for i in range(3)])
    ids = hf.convert_tokens_to_ids
    for name in ("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>", "<|endoftext|>"):
        assert (rows == ids(name)).any(), name
    row = next(r for r in rows.tolist() if ids("<|fim_prefix|>") in r)
    # Each FIM'd document reads, by transformers' decoding, as the family's layout of real text.
    text = hf.decode(row)
    assert text.index("<|fim_prefix|>") < text.index("<|fim_suffix|>") or "<|fim_prefix|><|fim_suffix|>" in text

    plain = byte_level(**{**FAMILY_SPECIALS["plain"], "specials": ["<|endoftext|>", "<pad>"]})
    plain.pad_token = "<pad>"
    plain.save_pretrained(tmp_path / "plain-tok")
    prepare([corpus], tmp_path / "plain-tok", tmp_path / "plain-shards", config, progress=False)
    ShardLoader(tmp_path / "plain-shards", batch_size=4, seq_len=128, seed=0)  # without FIM it loads
    with pytest.raises(DataError, match="no fill-in-the-middle tokens") as info:
        ShardLoader(tmp_path / "plain-shards", batch_size=4, seq_len=128, seed=0, fim_rate=0.5)
    assert "\n" not in str(info.value)


def test_training_an_imported_model_on_its_shards_keeps_its_tokenizer(tmp_path: Path) -> None:
    """Init from an imported checkpoint, FIM on, distilled from itself: the trained checkpoint holds the
    model's tokenizer files and is served with its Hugging Face tokenizer."""
    from smallcode.model import ModelConfig, SmallCodeLM
    from smallcode.model.checkpoint import Checkpoint, save_checkpoint
    from smallcode.runtime.engine import Engine
    from smallcode.runtime.formats import HFTokenizer
    from smallcode.train.config import DataConfig, DistillConfig, TrainConfig
    from smallcode.train.trainer import Trainer

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(12):
        (corpus / f"m{i}.py").write_text(make_module(i, lines=12))
    hf = family_tokenizer("qwen2.5-coder")
    hf.save_pretrained(tmp_path / "tok")
    prepare([corpus], tmp_path / "tok", tmp_path / "shards", PrepareConfig(workers=1, val_fraction=0.2,
                                                                           decontaminate=False), progress=False)
    torch.manual_seed(0)
    config = ModelConfig.preset("tiny", vocab_size=len(hf), n_experts=1, top_k=1, window=128, max_seq_len=128,
                                n_global=0)
    parent = save_checkpoint(SmallCodeLM(config), tmp_path / "imported", tokenizer_file=tmp_path / "tok" /
                             "tokenizer.json", extra={"tokenizer_kind": "huggingface"})
    train = TrainConfig(objective="distill", model=None, init=str(parent), distill=DistillConfig(teacher=str(parent)),
                        data=DataConfig(kind="shards", path=str(tmp_path / "shards"), seq_len=32, fim_rate=0.5),
                        steps=2, batch_size=2, warmup_steps=1, eval_every=0, eval_batches=1, save_every=2)
    Trainer(train, tmp_path / "run").run()
    final = next(p.parent for p in (tmp_path / "run").rglob("model.safetensors"))
    for name in ("tokenizer_config.json", "chat_template.jinja"):
        assert (final / name).read_bytes() == (tmp_path / "tok" / name).read_bytes(), name
    assert not Checkpoint.open(final).load_tokenizer().native
    engine = Engine.from_checkpoint(final)
    assert isinstance(engine.tokenizer, HFTokenizer) and engine.tokenizer.encode("x = 1") == hf.encode("x = 1")
