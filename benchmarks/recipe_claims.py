"""The recipe's three claims, replicated at nano scale on the embedded corpus, at equal training tokens.

(a) distillation: nano-dense distilled from the recipe's teacher vs the same student from scratch;
(b) sparsity: nano (8 experts, top-2) vs a dense model with the same active parameters
    (d_ff = top_k x the expert width) trained from scratch;
(c) upcycling: the scratch student of (a) trained on as an upcycled MoE vs trained on as it is.

Every run is an ordinary ``smallcode train`` stage (``configs/nano`` settings, one process) in a run
directory under ``--out``, so an interrupted benchmark continues where it stopped. The score is the
validation cross-entropy (nats/token) on the shards' held-out documents, all runs on the same
batches. Writes ``docs/recipe_claims.md`` and ``docs/recipe_claims.png``; the last line printed is
one JSON object. Needs the nano recipe's tokenizer and shards (and teacher, unless ``--teacher``):
``smallcode recipe configs/nano/recipe.yaml`` makes them.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from smallcode.fileio import atomic_write_bytes, atomic_write_text
from smallcode.model import ModelConfig
from smallcode.train.config import TrainConfig
from smallcode.train.trainer import Trainer, read_metrics
from smallcode.train.upcycle import upcycle_checkpoint

ROOT = Path(__file__).resolve().parents[1]


def stage(name: str, **changes: object) -> TrainConfig:
    return TrainConfig.load(ROOT / "configs" / "nano" / f"{name}.yaml").with_overrides(changes)


def run(cfg: TrainConfig, out: Path) -> float:
    result = Trainer(cfg, out).run(resume=True)
    assert result.val_loss is not None
    return result.val_loss


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe-out", type=Path, default=Path("runs/nano"), help="the nano recipe's run directory")
    p.add_argument("--teacher", type=Path, help="teacher checkpoint (default: RECIPE_OUT/teacher/final)")
    p.add_argument("--out", type=Path, default=Path("runs/claims"))
    p.add_argument("--steps", type=int, default=160, help="steps of every from-scratch run")
    p.add_argument("--extra-steps", type=int, default=120, help="steps of the two continuations in (c)")
    p.add_argument("--seeds", default="0", help="comma-separated seeds")
    p.add_argument("--eval-batches", type=int, default=32)
    p.add_argument("--docs", type=Path, default=ROOT / "docs")
    args = p.parse_args()
    shards = args.recipe_out / "shards"
    teacher = args.teacher or args.recipe_out / "teacher" / "final"
    for needed in (shards / "index.json", teacher / "model.safetensors"):
        if not needed.is_file():
            raise SystemExit(f"{needed} is missing: run `smallcode recipe configs/nano/recipe.yaml` first")
    common = {"data.path": str(shards), "steps": args.steps, "eval_batches": args.eval_batches,
              "eval_every": max(1, args.steps // 4), "save_every": 40}
    nano = ModelConfig.preset("nano")
    dense_same_active = {"d_ff": nano.top_k * nano.d_ff}
    rows: dict[str, list[float]] = {}
    t0 = time.perf_counter()
    for seed in [int(s) for s in args.seeds.split(",")]:
        out = args.out / f"seed{seed}"

        def add(key: str, value: float) -> None:
            rows.setdefault(key, []).append(value)

        # (a) distilled vs scratch, the same student and batches
        scratch = stage("teacher", model="nano-dense", model_overrides={}, lr=3e-3, seed=seed, **common)
        add("a_scratch", run(scratch, out / "student_scratch"))
        distilled = stage("distill", seed=seed, **common)
        distilled = distilled.replace(distill=distilled.distill.replace(teacher=str(teacher)))
        add("a_distilled", run(distilled, out / "student_distilled"))
        # (b) MoE top-2 of 8 vs dense with the same active parameters, both from scratch
        add("b_moe", run(scratch.replace(model="nano"), out / "moe_scratch"))
        add("b_dense", run(scratch.replace(model_overrides=dense_same_active), out / "dense_same_active"))
        # (c) the scratch student trained on: as an upcycled MoE, or as it is
        parent = out / "student_scratch" / "final"
        if not (out / "upcycled" / "model.safetensors").is_file():
            upcycle_checkpoint(parent, out / "upcycled", nano.n_experts, nano.top_k, seed=seed)
        extra = {**common, "steps": args.extra_steps, "eval_every": max(1, args.extra_steps // 4)}
        add("c_upcycled", run(stage("moe", seed=seed, init=str(out / "upcycled"), **extra), out / "upcycled_more"))
        add("c_dense", run(stage("moe", seed=seed, init=str(parent), **extra), out / "dense_more"))
    wall = time.perf_counter() - t0

    def mean(key: str) -> float:
        return statistics.fmean(rows[key])

    claims = [
        ("(a) distillation", "distilled nano-dense", "a_distilled", "nano-dense from scratch", "a_scratch"),
        ("(b) sparsity", f"nano MoE, top-2 of 8 ({nano.num_active_params() / 1e6:.1f}M active)", "b_moe",
         f"dense, same active ({ModelConfig.preset('nano-dense', **dense_same_active).num_params() / 1e6:.1f}M)",
         "b_dense"),
        ("(c) upcycling", f"upcycled MoE, +{args.extra_steps} steps", "c_upcycled",
         f"dense parent, +{args.extra_steps} steps", "c_dense"),
    ]
    n = len(rows["a_scratch"])
    summaries = args.out.glob("seed*/*/summary.json")
    train_min = sum(json.loads(f.read_text())["wall_s_this_session"] for f in summaries) / 60
    teacher_summary = teacher.parent / "summary.json"
    teacher_val = json.loads(teacher_summary.read_text())["val_loss"] if teacher_summary.is_file() else None
    lines = ["# Recipe claims at nano scale", "",
             f"Validation cross-entropy (nats/token, lower is better) on the embedded corpus's held-out documents; "
             f"{n} seed(s); from-scratch runs {args.steps} steps, continuations {args.extra_steps} steps, "
             f"8 x 256 tokens a step. Produced by `benchmarks/recipe_claims.py` ({train_min:.0f} min of training).",
             "", "| claim | ours | val loss | baseline | val loss | difference (ours - baseline) | per seed | holds |",
             "|---|---|---|---|---|---|---|---|"]
    summary = {}
    for title, ours, k_ours, base, k_base in claims:
        diffs = [a - b for a, b in zip(rows[k_ours], rows[k_base], strict=True)]
        spread = f" ± {statistics.stdev(diffs):.3f}" if len(diffs) > 1 else ""
        holds = all(d < 0 for d in diffs)
        per_seed = ", ".join(f"{d:+.3f}" for d in diffs)
        lines.append(f"| {title} | {ours} | {mean(k_ours):.3f} | {base} | {mean(k_base):.3f} | "
                     f"{statistics.fmean(diffs):+.3f}{spread} | {per_seed} | {'yes' if holds else 'no'} |")
        summary[k_ours.split("_")[0]] = {"ours": round(mean(k_ours), 4), "baseline": round(mean(k_base), 4),
                                         "diffs": [round(d, 4) for d in diffs], "holds": holds}
    if teacher_val is not None:
        lines += ["", f"The teacher of (a) ({teacher}) has a validation loss of {teacher_val:.3f}: a distilled student "
                  "that reaches its teacher's loss has little left to learn from it."]
    if n == 1:
        lines += ["", "One seed only: the seed-to-seed spread was not measured, so a gap of a few hundredths of a "
                  "nat is not evidence either way; 'holds' only says which side was lower in this run."]
    else:
        lines += ["", "Values are means over the seeds, ± the standard deviation of the per-seed difference; "
                  "'holds' means ours was lower for every seed."]
    lines += ["", "![validation curves](recipe_claims.png)", ""]
    args.docs.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.docs / "recipe_claims.md", "\n".join(lines) + "\n")
    plot([args.out / f"seed{seed}" for seed in args.seeds.split(",")], args.docs / "recipe_claims.png")
    print("\n".join(lines))
    print(json.dumps({"seeds": n, "steps": args.steps, "extra_steps": args.extra_steps, **summary,
                      "wall_s": round(wall, 1)}))


def plot(seed_dirs: list[Path], png: Path) -> None:
    """Validation curves of every run of every seed; one colour per run, one line per seed."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("(a) distillation", ["student_distilled", "student_scratch"]),
              ("(b) sparsity", ["moe_scratch", "dense_same_active"]),
              ("(c) upcycling", ["upcycled_more", "dense_more"])]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), sharey=False)
    for ax, (title, runs) in zip(axes, panels, strict=True):
        for name, style, colour in zip(runs, ("o-", "s--"), ("C0", "C1"), strict=True):
            for i, out in enumerate(seed_dirs):
                rows = read_metrics(out / name / "metrics.jsonl")
                val = [(r["step"], r["val_loss"]) for r in rows if r["type"] == "eval"]
                if val:
                    xs, ys = zip(*val, strict=True)
                    ax.plot(xs, ys, style, color=colour, alpha=0.8, label=name if i == 0 else None)
        ax.set_title(f"{title}, {len(seed_dirs)} seed(s)")
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("validation loss (nats/token)")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(png, buf.getvalue())


if __name__ == "__main__":
    main()
