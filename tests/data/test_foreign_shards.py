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
