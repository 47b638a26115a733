"""Recipe estimates follow from the configs: tokens, FLOPs and GPU-hours by hand, memory's trends."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from smallcode.config import ConfigError
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
    # every stage fits an 80 GB GPU by this count; the student only at batch 1 (grad_accum 8): its online
    # teacher (11.5B, float32) is whole on every GPU and the full-vocabulary logits are not chunked
    assert all(s.memory_gib < 80 for s in stages.values())
    teacher = stages["teacher"].model
    assert stages["student"].memory_gib * 2**30 > 4 * teacher.num_params() + 7 * 4 * 1 * 8192 * 49152


# ---------------------------------------------------------------- recipes that import a Hugging Face model

QWEN2 = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "vocab_size": 1000, "hidden_size": 128,
         "intermediate_size": 384, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
         "max_position_embeddings": 1024, "tie_word_embeddings": True, "rope_theta": 10000.0, "rms_norm_eps": 1e-6}


def import_recipe(tmp_path: Path, adapt_objective: str = "distill", **import_stage: object) -> Path:
    adapt = {"objective": adapt_objective, "init": "x", "data": {"kind": "shards", "path": "x", "seq_len": 512},
             "steps": 10, "batch_size": 2, "grad_accum": 2, "parallel": "fsdp"}
    if adapt_objective == "distill":
        adapt["distill"] = {"teacher": "x", "alpha": 0.0}
    (tmp_path / "adapt.yaml").write_text(yaml.safe_dump(adapt))
    (tmp_path / "moe.yaml").write_text(yaml.safe_dump({**adapt, "objective": "next_token", "distill": None}))
    recipe = {"gpus": 4, "stages": [
        {"name": "imported", **(import_stage or {"import_from": str(tmp_path / "hf")})},
        {"name": "windowed", "window_from": "imported", "window": 128, "n_global": 4},
        {"name": "adapt", "config": str(tmp_path / "adapt.yaml"), "init_from": "windowed",
         **({"teacher_from": "imported"} if adapt_objective == "distill" else {})},
        {"name": "upcycled", "upcycle_from": "adapt", "experts": 8, "top_k": 2, "granularity": 2},
        {"name": "moe", "config": str(tmp_path / "moe.yaml"), "init_from": "upcycled"}]}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    return tmp_path / "r.yaml"


def test_an_import_recipe_follows_the_models_shapes_and_counts_distillations_memory(tmp_path: Path) -> None:
    from smallcode.export.hf_import import hf_model_config

    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text(json.dumps(QWEN2))
    imported = hf_model_config(QWEN2)
    adapt, moe = estimate_recipe(import_recipe(tmp_path))
    assert adapt.model == imported.replace(window=128, n_global=4)
    assert moe.model == imported.replace(window=128, n_global=4, n_experts=8, top_k=2, d_ff=192)
    # the teacher's forward pass is paid per token: the imported model at its full attention
    per_token = adapt.model.flops_per_token(512) + imported.flops_per_token(512, training=False)
    assert adapt.flops == pytest.approx(per_token * 10 * 2 * 512 * 2 * 4)
    # what distillation adds to memory, by hand: the imported teacher whole in bf16 on every GPU, and seven
    # float32 tensors of the micro-batch's full-vocabulary logits
    plain, _ = estimate_recipe(_plain(tmp_path))
    added = (adapt.memory_gib - plain.memory_gib) * 2**30
    assert added == pytest.approx(2 * imported.num_params() + 7 * 4 * 2 * 512 * 1000)


def _plain(tmp_path: Path) -> Path:
    other = tmp_path / "plain"
    other.mkdir()
    (other / "hf").symlink_to(tmp_path / "hf")
    return import_recipe(other, "next_token")


def test_an_import_is_estimated_from_its_config_file_when_the_weights_are_elsewhere(tmp_path: Path) -> None:
    (tmp_path / "shape.json").write_text(json.dumps(QWEN2))
    shape = str(tmp_path / "shape.json")
    stages = estimate_recipe(import_recipe(tmp_path, import_from="not/here", import_config=shape))
    assert stages[0].model.d_model == 128
    with pytest.raises(ConfigError, match="not/here/config.json is not on this machine and the stage names no "
                                          "import_config"):
        estimate_recipe(import_recipe(tmp_path, import_from="not/here"))


@pytest.mark.parametrize(("name", "experts"), [("qwen2.5-coder-1.5b", 8), ("qwen2.5-coder-1.5b-8gpu", 32)])
def test_the_shipped_1_5b_import_recipes(name: str, experts: int) -> None:
    stages = {s.name: s for s in estimate_recipe(ROOT / "configs" / "import" / name / "recipe.yaml")}
    adapt, moe = stages["adapt"].model, stages["moe"].model
    # Qwen2.5-Coder-1.5B: 1,543,714,304 parameters, tied, q/k/v bias, windowed to 2048 + 4 sinks
    assert adapt.replace(window=32768, n_global=0).num_params() == 1_543_714_304
    assert adapt.qkv_bias and adapt.tie_embeddings and (adapt.window, adapt.n_global) == (2048, 4)
    assert (moe.n_experts, moe.top_k, moe.d_ff) == (experts, 4, 2240)
    assert moe.num_active_params() == pytest.approx(adapt.num_params() + moe.param_breakdown()["router"])
    assert all(s.memory_gib < 80 for s in stages.values())  # one 80 GB GPU each, by this count
