"""Recipe estimates follow from the configs: tokens, FLOPs and GPU-hours by hand, memory's trends."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from smallcode.model import ModelConfig
from smallcode.train.estimate import estimate_recipe

ROOT = Path(__file__).resolve().parents[2]


def write_recipe(tmp_path: Path, checkpointing: bool) -> Path:
    stage = {"model": "small", "data": {"kind": "shards", "path": "x", "seq_len": 2048}, "steps": 1000,
             "batch_size": 4, "grad_accum": 3, "activation_checkpointing": checkpointing}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(stage))
    recipe = {"gpus": 8, "stages": [{"name": "a", "config": str(tmp_path / "s.yaml")},
                                    {"name": "up", "upcycle_from": "a", "experts": 16, "top_k": 2}]}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    return tmp_path / "r.yaml"


def test_tokens_flops_and_hours_by_hand(tmp_path: Path) -> None:
    (est,) = estimate_recipe(write_recipe(tmp_path, False), peak_tflops=100.0, mfu=0.5)
    tokens = 1000 * 4 * 2048 * 3 * 8
    assert est.tokens == tokens
    flops = ModelConfig.preset("small").flops_per_token(2048) * tokens
    assert est.flops == pytest.approx(flops)
    assert est.gpu_hours == pytest.approx(flops / 50e12 / 3600)
    # the weights, gradients and AdamW moments alone, sharded over 8 GPUs, are a floor of the memory
    assert est.memory_gib * 2**30 > 16 * ModelConfig.preset("small").num_params() / 8


def test_memory_falls_with_more_gpus_and_with_checkpointing(tmp_path: Path) -> None:
    plain = estimate_recipe(write_recipe(tmp_path, False))[0].memory_gib
    assert estimate_recipe(write_recipe(tmp_path, False), gpus=64)[0].memory_gib < plain
    assert estimate_recipe(write_recipe(tmp_path, True))[0].memory_gib < plain


def test_the_flagship_recipe_is_the_flagship() -> None:
    stages = {s.name: s for s in estimate_recipe(ROOT / "configs" / "smallcode-16b-a4b" / "recipe.yaml")}
    assert stages["moe"].model == ModelConfig.preset("smallcode-16b-a4b")
    assert stages["teacher"].model.num_params() > 3 * stages["student"].model.num_params()
    assert all(s.memory_gib < 80 for s in stages.values())  # fits an 80 GB GPU by this count
