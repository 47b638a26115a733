"""The import recipe under torchrun: two gloo processes train its stages together; the first alone
imports, windows, upcycles, scores and reports while the other waits for its files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml
from test_recipe_import import WINDOW, hf_model  # tests/train/test_recipe_import.py
from trainer_helpers import STDLIB  # tests/train/trainer_helpers.py

from smallcode.model.checkpoint import Checkpoint
from smallcode.train.checkpoint import latest_checkpoint, load_train_state
from smallcode.train.trainer import read_metrics


def test_two_processes_run_the_import_recipe(tmp_path: Path) -> None:
    hf = hf_model(tmp_path)
    adapt = {"objective": "distill", "init": "x", "data": {"kind": "shards", "path": "x", "seq_len": 64},
             "distill": {"teacher": "x", "alpha": 0.0}, "batch_size": 1, "steps": 2, "lr": 1e-3, "warmup_steps": 1,
             "eval_every": 0, "eval_batches": 1, "save_every": 1, "parallel": "fsdp"}
    (tmp_path / "adapt.yaml").write_text(yaml.safe_dump(adapt))
    recipe = {"out": str(tmp_path / "run"), "corpus": [str(STDLIB / "json")], "val_fraction": 0.5, "held_out": False,
              "eval_suites": [], "hf_model": str(hf), "stages": [
                  {"name": "imported", "import_from": "placeholder"},
                  {"name": "windowed", "window_from": "imported", "window": WINDOW, "long_range_rows": 2},
                  {"name": "adapt", "config": str(tmp_path / "adapt.yaml"), "init_from": "windowed",
                   "teacher_from": "imported"},
                  {"name": "upcycled", "upcycle_from": "adapt", "experts": 4, "top_k": 2, "granularity": 2}]}
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "-m", "smallcode.cli.main", "recipe", str(tmp_path / "recipe.yaml"), "--quiet"],
        env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "run"
    assert proc.stdout.count("# smallcode recipe report") == 1  # one process reports
    state = load_train_state(latest_checkpoint(out / "adapt"))
    assert state["world_size"] == 2  # the stage was trained by both processes
    assert [r["step"] for r in read_metrics(out / "adapt" / "metrics.jsonl") if r["type"] == "train"] == [1, 2]
    assert Checkpoint.open(out / "upcycled").config.n_experts == 4
    assert list(json.loads((out / "windowed" / "window.json").read_text())["losses"]) == \
        ["before", "after", "adapt", "upcycled"]
    assert set(json.loads((out / "recipe_times.json").read_text())) >= {"imported", "shards", "adapt", "upcycled"}
