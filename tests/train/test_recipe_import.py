"""The seed's recipe on an imported model, end to end at the tiny size: a transformers Qwen2 with a
Qwen2.5-Coder-style tokenizer is imported, windowed, adapted by distillation from itself, upcycled into
fine-grained experts and trained on as a MoE with itself as teacher; run again, every step is skipped."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from trainer_helpers import STDLIB  # tests/train/trainer_helpers.py

from hf_tokenizers import family_tokenizer  # type: ignore[import-not-found]
from smallcode.config import ConfigError
from smallcode.model.checkpoint import Checkpoint
from smallcode.tokenizer import canonical_hash
from smallcode.train.recipe import RecipeConfig, run_recipe
from smallcode.train.trainer import read_metrics

WINDOW = 16


def hf_model(root: Path) -> Path:
    """A tiny full-attention Qwen2 (q/k/v bias, tied embeddings) saved as a user would have it."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tok = family_tokenizer("qwen2.5-coder")
    config = Qwen2Config(vocab_size=len(tok), hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                         tie_word_embeddings=True, eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config)
    with torch.no_grad():  # larger than transformers' init, so windowing shows at 4x the window
        for p in model.parameters():
            if p.dim() > 1:
                p.mul_(4)
    model.save_pretrained(root / "hf")
    tok.save_pretrained(root / "hf")
    return root / "hf"


def stage_files(root: Path) -> dict[str, str]:
    common = {"objective": "distill", "init": "filled-in", "data": {"kind": "shards", "path": "unused", "seq_len": 64},
              "distill": {"teacher": "filled-in", "alpha": 0.5}, "batch_size": 2, "lr": 1e-3, "steps": 2,
              "warmup_steps": 1, "eval_every": 0, "eval_batches": 1, "save_every": 1}
    paths = {}
    for name in ("adapt", "moe"):
        paths[name] = str(root / f"{name}.yaml")
        Path(paths[name]).write_text(yaml.safe_dump(common))
    return paths


def import_recipe(root: Path, hf: Path, n_stages: int = 5) -> RecipeConfig:
    files = stage_files(root)
    stages = [
        {"name": "imported", "import_from": "the shipped placeholder"},
        {"name": "windowed", "window_from": "imported", "window": WINDOW, "n_global": 4, "long_range_rows": 2},
        {"name": "adapt", "config": files["adapt"], "init_from": "windowed", "teacher_from": "imported"},
        {"name": "upcycled", "upcycle_from": "adapt", "experts": 8, "top_k": 4, "granularity": 2},
        {"name": "moe", "config": files["moe"], "init_from": "upcycled", "teacher_from": "imported"},
    ]
    return RecipeConfig(out=str(root / "run"), corpus=[str(STDLIB / "json")], val_fraction=0.5,
                        stages=stages[:n_stages], hf_model=str(hf), held_out_bytes=2000, eval_suites=[],
                        line_cursors=0)


def test_the_import_recipe_runs_every_stage_reports_and_continues(tmp_path: Path) -> None:
    hf = hf_model(tmp_path)
    out = tmp_path / "run"
    run_recipe(import_recipe(tmp_path, hf, n_stages=3), progress=False)  # stopped after the adaptation
    adapt_metrics = (out / "adapt" / "metrics.jsonl").read_text()
    report = run_recipe(import_recipe(tmp_path, hf), progress=False)
    assert (out / "adapt" / "metrics.jsonl").read_text() == adapt_metrics  # not trained again

    # no tokenizer trained: the model's own files, unchanged, tokenised the shards
    assert (out / "tokenizer" / "tokenizer.json").read_bytes() == (hf / "tokenizer.json").read_bytes()
    assert (out / "tokenizer" / "tokenizer_config.json").read_bytes() == (hf / "tokenizer_config.json").read_bytes()
    index = json.loads((out / "shards" / "index.json").read_text())
    assert index["tokenizer_hash"] == canonical_hash((hf / "tokenizer.json").read_text())
    imported = Checkpoint.open(out / "imported")
    assert imported.config.qkv_bias and imported.config.tie_embeddings and imported.config.window >= 128
    windowed = Checkpoint.open(out / "windowed").config
    assert (windowed.window, windowed.n_global) == (WINDOW, 4)
    moe = Checkpoint.open(out / "moe" / "final")
    assert (moe.config.n_experts, moe.config.top_k, moe.config.d_ff, moe.config.window) == (8, 4, 48, WINDOW)
    assert (out / "moe" / "final" / "tokenizer_config.json").is_file()  # the model's files travel along
    for stage in ("adapt", "moe"):  # distilled from the imported original, the MoE with its balance loss
        rows = [r for r in read_metrics(out / stage / "metrics.jsonl") if r["type"] == "train"]
        assert len(rows) == 2 and all("kd_loss" in r for r in rows)
    assert all(r["balance_loss"] > 0 for r in read_metrics(out / "moe" / "metrics.jsonl") if r["type"] == "train")

    # the long-range losses: before, right after the conversion, and every model built on the windowed one
    window = json.loads((out / "windowed" / "window.json").read_text())
    assert window["seq_len"] == 4 * WINDOW and window["rows"] == 2 and window["tokens"] == 2 * 4 * WINDOW
    losses = window["losses"]
    assert list(losses) == ["before", "after", "adapt", "upcycled", "moe"]
    assert abs(losses["after"] - losses["before"]) > 1e-3  # windowing changed the function at 4x the window
    assert losses["upcycled"] == pytest.approx(losses["adapt"], abs=2e-4)  # fine-grained upcycling is exact
    text = report.read_text()
    for name in ("imported", "windowed", "adapt", "upcycled", "moe"):
        assert f"| {name} |" in text
    assert f"| imported | import `{hf}` (Hugging Face) |" in text
    assert f"window imported: {WINDOW} positions + 4 sinks" in text and "granularity 2" in text
    assert "## Long range after windowing (`windowed`)" in text
    assert f"| `adapt` | {losses['adapt']:.4f} | {losses['adapt'] / losses['before'] - 1:+.2%} |" in text

    # run again: every step is skipped, nothing is rewritten
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.name != "report.md"
              and p.name != "report.png"}
    run_recipe(import_recipe(tmp_path, hf), progress=False)
    assert before == {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.name != "report.md"
                      and p.name != "report.png"}


def test_import_stage_rules() -> None:
    with pytest.raises(ConfigError, match="import_from is for the first stage only"):
        RecipeConfig(stages=[{"name": "a", "config": "x.yaml"}, {"name": "b", "import_from": "hf"}])
    with pytest.raises(ConfigError, match="hf_model is given but the recipe's first stage imports nothing"):
        RecipeConfig(stages=[{"name": "a", "config": "x.yaml"}], hf_model="hf")
    with pytest.raises(ConfigError, match="exactly one of"):
        RecipeConfig(stages=[{"name": "a", "import_from": "hf", "window_from": "a"}])
    with pytest.raises(ConfigError, match="not an earlier stage"):
        RecipeConfig(stages=[{"name": "a", "import_from": "hf"}, {"name": "w", "window_from": "z"}])
