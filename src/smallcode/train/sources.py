"""Where a stage's batches come from: token shards, or prompt/completion examples.

Every source has the same two methods the trainer uses::

    source.batch(i)            # micro-batch i on this process: {"input_ids": (B, T), "labels": (B, T), ...}
    source.validation(n)       # up to n held-out batches, in order, for this process

``batch`` is a pure function of ``i`` (and the seed, rank and world size), which is what makes
resume exact: the trainer stores only the step. Labels are next-token targets with -100 where
no loss is taken (FIM padding, prompts, padding). Shard batches also carry ``sample_ids``, the
global indices of their rows, by which an offline teacher cache is looked up.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import torch

from smallcode.config import ConfigError
from smallcode.data import ShardLoader
from smallcode.tokenizer import CodeTokenizer, load_tokenizer
from smallcode.tokenizer.code_tokenizer import TOKENIZER_FILE
from smallcode.train.config import DataConfig

IGNORE = -100
Batch = dict[str, torch.Tensor]


class DataSource(Protocol):
    tokenizer: CodeTokenizer
    tokenizer_file: Path

    def batch(self, index: int) -> Batch: ...

    def validation(self, max_batches: int) -> Iterator[Batch]: ...


def _split(rows_BT1: torch.Tensor, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    labels = rows_BT1[:, 1:].clone()
    labels[labels == pad_id] = IGNORE  # FIM windows that came out short are padded
    return rows_BT1[:, :-1], labels


class ShardSource:
    """Pretraining and distillation batches from ``smallcode data prepare`` shards."""

    def __init__(self, directory: str | Path, batch_size: int, seq_len: int, seed: int, rank: int = 0,
                 world_size: int = 1, fim_rate: float = 0.0) -> None:
        self.loader = ShardLoader(directory, batch_size, seq_len, seed, rank=rank, world_size=world_size,
                                  fim_rate=fim_rate)
        self.tokenizer = self.loader.tokenizer
        self.tokenizer_file = Path(directory) / TOKENIZER_FILE  # its Hugging Face files beside it, if any
        self.batch_size = batch_size
        self.pad_id = self.tokenizer.pad_id  # a tokenizer that cannot pad is refused before training starts

    def batch(self, index: int) -> Batch:
        inputs, labels = _split(self.loader.batch(index), self.pad_id)
        return {"input_ids": inputs, "labels": labels,
                "sample_ids": torch.from_numpy(self.loader.sample_indices(index).astype("int64"))}

    def validation(self, max_batches: int) -> Iterator[Batch]:
        for rows in self.loader.validation(max_batches=max_batches):
            inputs, labels = _split(rows, self.tokenizer.pad_id)
            yield {"input_ids": inputs, "labels": labels}


def resolve_tokenizer_file(path: str | Path) -> Path:
    """A tokenizer given as its file or as a directory that holds ``tokenizer.json``."""
    p = Path(path)
    if p.is_dir():
        p = p / TOKENIZER_FILE
    if not p.is_file():
        raise ConfigError(f"data.tokenizer: {p} does not exist")
    return p


def build_source(data: DataConfig, batch_size: int, seed: int, rank: int, world_size: int) -> DataSource:
    if data.kind == "shards":
        return ShardSource(data.path, batch_size, data.seq_len, seed, rank, world_size, data.fim_rate)
    if data.tokenizer is None:
        raise ConfigError(f"data.tokenizer is required for data.kind {data.kind!r}")
    tokenizer_file = resolve_tokenizer_file(data.tokenizer)
    return SFTSource(data, load_tokenizer(tokenizer_file), tokenizer_file, batch_size, seed, rank, world_size)


class SFTSource:
    """Fine-tuning batches: JSONL prompt/completion or chat examples, or MBPP's training split."""

    def __init__(self, data: DataConfig, tokenizer: CodeTokenizer, tokenizer_file: Path, batch_size: int,
                 seed: int, rank: int, world_size: int) -> None:
        from smallcode.tasks.base import DEFAULT_STOP
        from smallcode.train.sft import (
            SFTLoader,
            end_at_code,
            load_mbpp_train,
            load_mbpp_validation,
            read_jsonl,
            tokenize_examples,
            without_stops,
        )

        self.dropped: list[dict] = []
        if data.kind == "mbpp":
            # references the evaluation would cut at a stop sequence are left out (see without_stops);
            # the validation loss stays on the whole validation split
            train, self.dropped = without_stops(load_mbpp_train(data.path), DEFAULT_STOP)
            train, val = end_at_code(train), end_at_code(load_mbpp_validation(data.path))
        else:
            train = read_jsonl(data.path)
            val = read_jsonl(data.validation_path) if data.validation_path else []
        # truncated examples keep their prompt and the head of their completion: better than nothing
        examples, self.stats = tokenize_examples(train, tokenizer, data.seq_len, overflow="truncate")
        held_out, self.validation_stats = tokenize_examples(val, tokenizer, data.seq_len, overflow="truncate")
        if self.stats.kept < batch_size * world_size:
            raise ConfigError(f"{data.path}: {self.stats.kept} of {self.stats.examples} examples keep a target "
                              f"within data.seq_len={data.seq_len} (longest {self.stats.longest} tokens), fewer "
                              f"than one global batch of {batch_size * world_size}")
        self.loader = SFTLoader(examples, batch_size, data.seq_len, seed, rank, world_size, tokenizer.pad_id,
                                validation=held_out)
        self.tokenizer, self.tokenizer_file = tokenizer, tokenizer_file

    def batch(self, index: int) -> Batch:
        return self.loader.batch(index)

    def validation(self, max_batches: int) -> Iterator[Batch]:
        for j, batch in enumerate(self.loader.validation()):
            if j >= max_batches:
                return
            yield batch
