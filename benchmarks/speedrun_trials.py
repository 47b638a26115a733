"""The short trials behind the nano recipe's settings: one change at a time, equal tokens, held-out bits/byte.

Each trial trains (or continues) one stage for a fixed number of steps on the shards of a speedrun
run and scores the result on the held-out set (``smallcode.eval.heldout``), so trials compare at
equal tokens; a trial that changes the cost of a step (the batch size, the optimizer) also prints
its wall time. The trials and their figures are in docs/training.md ("Settings, measured").

    python benchmarks/speedrun_trials.py --run runs/speedrun/recipe                 # every trial
    python benchmarks/speedrun_trials.py --run runs/speedrun/recipe --only teacher-lr0.1

``--run`` is a finished ``benchmarks/speedrun.py`` recipe directory: its shards feed every trial,
and the continuation trials start from its ``pruned``, ``teacher`` and ``upcycled`` checkpoints.
Results are appended to ``--out/results.jsonl``, one JSON object a trial; a trial already there is
not run again, so an interrupted sweep continues.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import yaml

from smallcode.eval.heldout import bits_per_byte, held_out_set
from smallcode.model.checkpoint import Checkpoint
from smallcode.train.config import TrainConfig
from smallcode.train.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs" / "nano"
TEACHER_120 = {"steps": 120, "warmup_steps": 10, "zero_init": False, "lr": 3e-3, "betas": [0.9, 0.95]}
ADAMW_BASELINE = {"optimizer": "adamw", "lr": 1e-3, "betas": [0.9, 0.99], "weight_decay": 0.1, "grad_clip": 1.0,
                  "schedule": "cosine", "min_lr_ratio": 0.1, "warmup_steps": 12}

# name -> (stage file, changes to it); "{run}" stands for the --run directory
TRIALS: dict[str, tuple[str, dict[str, Any]]] = {
    "teacher-adamw-baseline": ("teacher.yaml", {**TEACHER_120, **ADAMW_BASELINE}),
    "teacher-muon-lr3e-3": ("teacher.yaml", TEACHER_120),
    "teacher-batch8": ("teacher.yaml", {**TEACHER_120, "steps": 240, "warmup_steps": 20, "batch_size": 8}),
    "teacher-muon0.04": ("teacher.yaml", {**TEACHER_120, "muon_lr": 0.04}),
    "teacher-lr1e-2": ("teacher.yaml", {**TEACHER_120, "lr": 1e-2}),
    "teacher-lr3e-2": ("teacher.yaml", {**TEACHER_120, "lr": 3e-2}),
    "teacher-lr0.1": ("teacher.yaml", {**TEACHER_120, "lr": 0.1}),
    "teacher-lr1e-2-zero": ("teacher.yaml", {**TEACHER_120, "lr": 1e-2, "zero_init": True}),
    "teacher-lr3e-2-zero": ("teacher.yaml", {**TEACHER_120, "lr": 3e-2, "zero_init": True}),
    "teacher-lr1e-2-beta0.8": ("teacher.yaml", {**TEACHER_120, "lr": 1e-2, "betas": [0.8, 0.95]}),
    "teacher-lr0.1-zero-beta0.8": ("teacher.yaml", {**TEACHER_120, "lr": 0.1, "zero_init": True,
                                                    "betas": [0.8, 0.95]}),
    "student-lr3e-3": ("distill.yaml", {"steps": 30, "warmup_steps": 3, "lr": 3e-3}),
    "student-lr1e-2-muon0.01": ("distill.yaml", {"steps": 30, "warmup_steps": 3, "lr": 1e-2, "muon_lr": 0.01}),
    "student-lr3e-2": ("distill.yaml", {"steps": 30, "warmup_steps": 3, "lr": 3e-2}),
    "moe-adamw": ("moe.yaml", {"steps": 60, "warmup_steps": 6}),
    "moe-muon": ("moe.yaml", {"steps": 60, "warmup_steps": 6, "optimizer": "muon", "lr": 3e-3, "muon_lr": 0.02}),
}


def trial_config(stage_file: str, changes: dict[str, Any], run: Path) -> TrainConfig:
    data = yaml.safe_load((CONFIGS / stage_file).read_text())
    data.update(changes)
    data["data"]["path"] = str(run / "shards")
    data.update(eval_every=0, save_every=10**6)
    if stage_file == "distill.yaml":
        data["init"] = str(run / "pruned")
        data["distill"]["teacher"] = str(run / "teacher" / "final")
    elif stage_file == "moe.yaml":
        data["init"] = str(run / "upcycled")
    return TrainConfig.from_dict(data)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, required=True, help="a finished speedrun recipe directory")
    p.add_argument("--out", type=Path, default=Path("runs/speedrun_trials"))
    p.add_argument("--only", nargs="*", choices=sorted(TRIALS), help="these trials (default: all)")
    p.add_argument("--steps", type=int, help="override every trial's steps (a quick check of the script)")
    args = p.parse_args()
    results = args.out / "results.jsonl"
    done = {json.loads(line)["trial"] for line in results.read_text().splitlines()} if results.is_file() else set()
    held = held_out_set()
    for name in args.only or TRIALS:
        if name in done:
            continue
        stage_file, changes = TRIALS[name]
        if args.steps:
            changes = {**changes, "steps": args.steps, "warmup_steps": min(changes.get("warmup_steps", 1), args.steps)}
        cfg = trial_config(stage_file, changes, args.run)
        t0 = time.perf_counter()
        result = Trainer(cfg, args.out / name, show_progress=True).run(resume=False)
        wall = time.perf_counter() - t0
        ckpt = Checkpoint.open(result.final)
        score = bits_per_byte(ckpt.load_model(), ckpt.load_tokenizer(), held.texts)
        row = {"trial": name, "bits_per_byte": round(score.bits_per_byte, 4), "tokens": result.tokens,
               "wall_s": round(wall, 1), "changes": changes, "held_out": held.fingerprint}
        print(json.dumps(row), flush=True)
        args.out.mkdir(parents=True, exist_ok=True)
        with results.open("a") as f:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
