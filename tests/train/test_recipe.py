"""The recipe runner end to end at the tiny size: every stage, the report, continuing a partial run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from trainer_helpers import STDLIB  # tests/train/trainer_helpers.py

from smallcode.config import ConfigError
from smallcode.model.checkpoint import Checkpoint
from smallcode.pipeline import run_main_job
from smallcode.train.recipe import RecipeConfig, run_recipe
from smallcode.train.trainer import read_metrics

TINY = {"d_model": 64, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2, "d_ff": 96, "window": 16, "n_global": 2,
        "max_seq_len": 512, "vocab_size": 320}


def stage_files(root: Path) -> dict[str, str]:
    common = {"data": {"kind": "shards", "path": "unused", "seq_len": 32}, "batch_size": 4, "lr": 1e-2,
              "warmup_steps": 1, "eval_every": 0, "eval_batches": 2, "save_every": 2}
    stages = {
        "teacher": {**common, "model": "nano-dense", "model_overrides": TINY, "steps": 4, "optimizer": "muon",
                    "schedule": "wsd"},
        "distill": {**common, "objective": "distill", "model": "nano-dense", "steps": 3,
                    "distill": {"teacher": "filled-in", "kind": "forward", "alpha": 0.5, "mode": "online"}},
        "moe": {**common, "steps": 2, "init": "filled-in"},
        "finetune": {**common, "steps": 2, "init": "filled-in", "data": {"kind": "mbpp", "seq_len": 512}},
    }
    paths = {}
    for name, body in stages.items():
        paths[name] = str(root / f"{name}.yaml")
        Path(paths[name]).write_text(yaml.safe_dump(body))
    return paths


def recipe(root: Path, stages: list[dict], **more: object) -> RecipeConfig:
    # no MBPP directory: the fine-tuning stage reads the copy shipped in the package
    return RecipeConfig(out=str(root / "run"), corpus=[str(STDLIB / "json"), str(STDLIB / "email")], vocab_size=320,
                        val_fraction=0.2, stages=stages, held_out_bytes=3000, eval_suites=["humaneval"],
                        eval_limit=2, eval_max_tokens=16, line_cursors=3, **more)


def test_the_tiny_recipe_runs_every_stage_and_continues(tmp_path: Path) -> None:
    files = stage_files(tmp_path)
    stages = [
        {"name": "teacher", "config": files["teacher"]},
        {"name": "pruned", "prune_from": "teacher", "d_ff": 48},
        {"name": "student", "config": files["distill"], "init_from": "pruned", "teacher_from": "teacher"},
        {"name": "upcycled", "upcycle_from": "student", "experts": 4, "top_k": 2},
        {"name": "moe", "config": files["moe"], "init_from": "upcycled"},
        {"name": "finetune", "config": files["finetune"], "init_from": "moe"},
    ]
    # first only the teacher, as if the run had been stopped there
    run_recipe(recipe(tmp_path, stages[:1]), progress=False)
    out = tmp_path / "run"
    teacher_metrics = (out / "teacher" / "metrics.jsonl").read_text()
    report = run_main_job(recipe(tmp_path, stages), progress=False)
    assert (out / "teacher" / "metrics.jsonl").read_text() == teacher_metrics  # not trained again
    text = report.read_text()
    for name in ("teacher", "pruned", "student", "upcycled", "moe", "finetune"):
        assert f"| {name} |" in text
    assert "MBPP validation" in text and "corpus validation" in text
    # every stage scored on held-out code, the final model sampled and evaluated in the sandbox
    held = json.loads((out / "heldout.json").read_text())
    assert set(held["stages"]) == {"teacher", "pruned", "student", "upcycled", "moe", "finetune"}
    assert all(0 < s["bits_per_byte"] < 20 for s in held["stages"].values())
    assert held["stages"]["upcycled"]["bits_per_byte"] == pytest.approx(held["stages"]["student"]["bits_per_byte"],
                                                                        abs=1e-3)  # the same function
    assert "held-out bits/byte" in text and "Expert load at the end of `moe`" in text
    # and on next-line completion (the reporting half), beside bits/byte: the cell is each stage's own run
    line_scores = json.loads((out / "lines.json").read_text())
    assert line_scores["split"] == "report" and line_scores["cursors"] == 3
    for name, s in line_scores["stages"].items():
        run = json.loads((out / "lines" / name / "summary.json").read_text())["all"]
        assert run["tasks"] == 3 and s["exact_match"] == run["exact_match"]
        row = next(line for line in text.splitlines() if line.startswith(f"| {name} |"))
        half = held["stages"][name]["report_bits_per_byte"]
        assert f"| {half:.3f} / {100 * s['exact_match']:.1f}% / {s['chars_saved_per_100']:.1f} |" in row
    assert set(line_scores["stages"]) == set(held["stages"]) and "Reporting half" in text
    # the reporting half alone: its own score, not the whole set's
    assert all(0 < s["report_bits_per_byte"] < 20 for s in held["stages"].values())
    assert held["report_set"] != held["set"]
    # each stage's row says what it bought against the stage it started from
    moe_change = held["stages"]["moe"]["bits_per_byte"] - held["stages"]["upcycled"]["bits_per_byte"]
    moe_row = next(line for line in text.splitlines() if line.startswith("| moe |"))
    assert f"({moe_change:+.3f})" in moe_row
    assert "(" not in next(line for line in text.splitlines() if line.startswith("| teacher |")).split("|")[8]
    samples = json.loads((out / "samples.json").read_text())
    assert {r["settings"] for r in samples} == {"greedy", "default"} and all(0 <= r["distinct_4"] <= 1 for r in samples)
    assert "def fibonacci(n):" in text
    summary = json.loads((out / "eval" / "summary.json").read_text())
    assert summary["suites"]["humaneval"]["tasks"] == 2 and "| humaneval | 2 |" in text
    assert Checkpoint.open(out / "pruned").config.d_ff == 48
    assert "--suite humaneval,mbpp --out" in text  # the packaged data: no --data-dir to pass
    assert (out / "report.png").read_bytes()[:4] == b"\x89PNG"
    # the chain is what the recipe says: the student learnt from the teacher, moe started from the upcycled student
    student_rows = [r for r in read_metrics(out / "student" / "metrics.jsonl") if r["type"] == "train"]
    assert all("kd_loss" in r for r in student_rows)
    upcycled = Checkpoint.open(out / "upcycled").config
    assert upcycled.n_experts == 4 and Checkpoint.open(out / "finetune" / "final").config.n_experts == 4
    moe_rows = [r for r in read_metrics(out / "moe" / "metrics.jsonl") if r["type"] == "train"]
    assert moe_rows[0]["balance_loss"] > 0
    student_cfg = Checkpoint.open(out / "student" / "final").config
    assert student_cfg.d_ff == 48 and student_cfg.d_model == Checkpoint.open(out / "teacher" / "final").config.d_model
    # upcycling kept the student's function
    ids = torch.randint(9, 320, (2, 40))
    with torch.no_grad():
        torch.testing.assert_close(Checkpoint.open(out / "upcycled").load_model()(ids).logits,
                                   Checkpoint.open(out / "student" / "final").load_model()(ids).logits,
                                   atol=1e-5, rtol=1e-5)
    # a finished recipe runs again as a no-op
    before = {p: p.stat().st_mtime_ns for p in out.rglob("model.safetensors")}
    run_main_job(recipe(tmp_path, stages), progress=False)
    assert before == {p: p.stat().st_mtime_ns for p in out.rglob("model.safetensors")}


def test_stage_references_must_point_backwards(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not an earlier stage"):
        RecipeConfig(stages=[{"name": "a", "config": "x.yaml", "init_from": "b"}, {"name": "b", "config": "y.yaml"}])
    with pytest.raises(ConfigError, match="exactly one of"):
        RecipeConfig(stages=[{"name": "a"}])


def test_mbpp_data_default_to_the_package_and_can_be_overridden(tmp_path: Path, shared_data: Path) -> None:
    from smallcode.train.recipe import stage_config

    files = stage_files(tmp_path)
    spec = {"name": "finetune", "config": files["finetune"]}
    assert RecipeConfig().mbpp is None
    default = recipe(tmp_path, [spec])
    packaged = stage_config(default, default.stages[0], tmp_path)
    assert packaged.data.kind == "mbpp" and packaged.data.path == ""
    chosen = RecipeConfig(mbpp=str(shared_data), stages=[spec])
    assert stage_config(chosen, chosen.stages[0], tmp_path).data.path == str(shared_data)


@pytest.mark.parametrize("scale", ["nano", "smallcode-16b-a4b"])
def test_the_shipped_recipes_need_no_data_directory(scale: str) -> None:
    from smallcode.train.config import TrainConfig

    root = Path(__file__).resolve().parents[2]
    cfg = RecipeConfig.load(root / "configs" / scale / "recipe.yaml")
    assert cfg.mbpp is None
    finetune = TrainConfig.load(root / next(s for s in cfg.stages if s.name == "finetune").config)
    assert finetune.data.kind == "mbpp" and finetune.data.path == ""


def test_the_shipped_nano_recipe_is_consistent() -> None:
    """configs/nano: vocabularies agree, the student is the teacher pruned to nano-dense's width, the upcycled
    student has nano's shape, every stage file loads."""
    from smallcode.model import ModelConfig
    from smallcode.train.config import TrainConfig

    root = Path(__file__).resolve().parents[2]
    cfg = RecipeConfig.load(root / "configs" / "nano" / "recipe.yaml")
    by_name = {s.name: s for s in cfg.stages}
    teacher = TrainConfig.load(root / by_name["teacher"].config)
    teacher_model = ModelConfig.preset(teacher.model, **teacher.model_overrides)
    assert by_name["pruned"].prune_from == "teacher" and by_name["student"].init_from == "pruned"
    student_model = teacher_model.replace(d_ff=by_name["pruned"].d_ff)
    assert teacher_model.vocab_size == cfg.vocab_size
    assert student_model == ModelConfig.preset("nano-dense") and teacher_model.d_ff > student_model.d_ff
    up = by_name["upcycled"]
    assert student_model.replace(n_experts=up.experts, top_k=up.top_k) == ModelConfig.preset("nano")
    for s in cfg.stages:
        if s.config:
            TrainConfig.load(root / s.config)


@pytest.mark.parametrize("name", ["demo", "qwen2.5-coder-1.5b", "qwen2.5-coder-1.5b-8gpu"])
def test_the_shipped_import_recipes_are_consistent(name: str) -> None:
    """configs/import: import, window, adapt from the import at 4x the window, upcycle fine-grained, MoE with the
    import as teacher; every stage file loads and is a distillation at the window's multiples."""
    from smallcode.train.config import TrainConfig

    root = Path(__file__).resolve().parents[2]
    cfg = RecipeConfig.load(root / "configs" / "import" / name / "recipe.yaml")
    assert cfg.imports and [s.name for s in cfg.stages] == ["imported", "windowed", "adapt", "upcycled", "moe"]
    by_name = {s.name: s for s in cfg.stages}
    win, up = by_name["windowed"], by_name["upcycled"]
    assert win.window_from == "imported" and win.n_global == 4
    assert by_name["adapt"].init_from == "windowed" and up.upcycle_from == "adapt"
    assert up.granularity > 1 and up.top_k % up.granularity == 0 and up.experts % up.granularity == 0
    adapt, moe = (TrainConfig.load(root / by_name[n].config) for n in ("adapt", "moe"))
    assert adapt.data.seq_len == 4 * win.window  # adapted at the length the long-range loss is scored at
    for stage, train in (("adapt", adapt), ("moe", moe)):
        assert by_name[stage].teacher_from == "imported" and train.objective == "distill"
        assert train.distill is not None and train.distill.mode == "online"  # exact logits, the same tokenizer
    if name != "demo":
        assert (adapt.precision, moe.precision) == ("bfloat16", "bfloat16")
        assert adapt.activation_checkpointing and moe.activation_checkpointing
        assert (adapt.parallel == "fsdp") == (cfg.gpus > 1) == (moe.parallel == "fsdp")
