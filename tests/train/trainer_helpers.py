"""A tiny tokenizer and token shards for the trainer tests, built once per test session."""

from __future__ import annotations

import atexit
import shutil
import sysconfig
import tempfile
from collections.abc import Callable
from functools import cache
from pathlib import Path

from smallcode.data.build import prepare
from smallcode.data.config import PrepareConfig
from smallcode.tokenizer import load_tokenizer, train_tokenizer
from smallcode.train.config import DataConfig, TrainConfig
from smallcode.train.objectives import next_token_objective

STDLIB = Path(sysconfig.get_paths()["stdlib"])


@cache
def tiny_shards() -> Path:
    """Shards of a few stdlib packages under a 320-token BPE (vocab matches ``tiny_model_overrides``)."""
    root = Path(tempfile.mkdtemp(prefix="smallcode-train-test-"))
    atexit.register(shutil.rmtree, root, True)
    # Its own tokenizer, not the shared one: the two-process FSDP test compares final weights at 1e-4,
    # a bound that holds for the batches of this vocabulary (under the shared one, two of 12288 expert
    # weights with a near-zero gradient differ by 1.8e-4 between the one- and two-process runs).
    train_tokenizer([STDLIB / "json", STDLIB / "textwrap.py"], 320, root / "tok", show_progress=False)
    prepare([STDLIB / "json", STDLIB / "email"], root / "tok", root / "shards",
            PrepareConfig(workers=1, val_fraction=0.1), progress=False)
    return root / "shards"


def tiny_model_overrides() -> dict:
    return {"vocab_size": load_tokenizer(tiny_shards() / "tokenizer.json").vocab_size}


def tiny_config(**changes: object) -> TrainConfig:
    """A dense tiny model on the tiny shards: a few steps take well under a second."""
    base = TrainConfig(model="tiny", model_overrides={**tiny_model_overrides(), "n_experts": 1, "top_k": 1},
                       data=DataConfig(kind="shards", path=str(tiny_shards()), seq_len=32), steps=6,
                       batch_size=4, lr=1e-2, warmup_steps=2, eval_every=3, eval_batches=2, save_every=2)
    return base.replace(**changes) if changes else base


class Interrupt(Exception):
    """Raised by ``dies_at_call``: stands for the process dying in the middle of a step."""


def dies_at_call(n: int) -> Callable:
    """The next-token objective, except that its ``n``-th call (1-based) raises ``Interrupt``."""
    calls = {"n": 0}

    def objective(model, batch):  # noqa: ANN001, ANN202
        calls["n"] += 1
        if calls["n"] == n:
            raise Interrupt
        return next_token_objective(model, batch)

    return objective
