"""The CPU speedrun: the nano recipe (`make run`) against two dense baselines of the same wall budget.

One run does all three, on the same shards, and scores them on the same held-out set:

1. **The recipe.** ``smallcode recipe configs/nano/recipe.yaml`` into ``--out/recipe`` (timed end to
   end: tokenizer, shards, every stage, held-out scoring, samples, the sandboxed evaluation).
2. **The baselines**, each one dense next-token model trained in one stage for the wall time the
   recipe's training stages took together (tokenizer and shards are shared inputs, the recipe's
   scoring and evaluation are not training); each one's step count comes from its own measured speed:
   - **strong**: the recipe's own teacher setup (its shape, Muon, the high AdamW rate, zero-initialised
     outputs, warm-up / stable / decay), given the whole budget instead of two thirds of it. The
     recipe's later stages pay only if its best model beats this one;
   - **nanoGPT**: the same shape trained the ordinary way, AdamW (lr 1e-3, betas 0.9/0.99, weight
     decay 0.1, clip 1.0, the settings nanoGPT uses for its small models), warm-up then cosine to 10%.
3. **Scores.** Bits per byte on held-out third-party Python (``smallcode.eval.heldout``) for every
   recipe stage and both baselines, on the whole set and on its reporting half (the packages no
   setting was chosen on); next-line completion (``smallcode eval lines``, ``--cursors`` cursors of
   the reporting half, in-file and cross-file) for the final model, the best general stage (chosen on
   the tuning half), and both baselines; tokens seen, tokens/s and MFU per stage (model FLOPs from
   ``ModelConfig.flops_per_token`` over this machine's measured float32 matmul peak, not a datasheet);
   the fine-tuned model's change in bits per byte against its parent and in MBPP validation loss;
   the experts' load at the end of the MoE stage; the distinct-4-gram ratio of the final model's
   completions of fixed prompts under a few sampling settings (``generate``'s defaults among them).

The last lines printed are a Markdown table of the comparison and one JSON object. An interrupted run
continues (the recipe resumes, a finished baseline or line run is not done again).

    python benchmarks/speedrun.py --out runs/speedrun
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from smallcode.eval.heldout import bits_per_byte, held_out_set
from smallcode.eval.lines import LinesSettings, held_out_tasks, run_lines
from smallcode.eval.samples import mean_distinct, sample_prompts
from smallcode.fileio import atomic_write_json
from smallcode.lsp.models import LocalModel
from smallcode.model.checkpoint import Checkpoint
from smallcode.pipeline import run_main_job
from smallcode.runtime.engine import Engine
from smallcode.runtime.sampling import GENERATE_DEFAULTS, SamplingParams
from smallcode.train.config import TrainConfig
from smallcode.train.recipe import RecipeConfig, final_expert_load, stage_config, stage_final
from smallcode.train.trainer import Trainer, read_metrics

ROOT = Path(__file__).resolve().parents[1]
TRAINING_STEPS_EXCLUDED = {"tokenizer", "shards", "held-out", "lines", "samples", "eval"}


def peak_flops(seconds: float = 2.0, n: int = 1024) -> float:
    """This machine's float32 matmul rate with torch's threads: the denominator of MFU here."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    count, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        count += 1
    return 2 * n**3 * count / (time.perf_counter() - t0)


def median_rate(run_dir: Path, skip: int) -> float:
    """The median step's tokens/s after ``skip`` warm-up steps: evaluation and checkpoint pauses are not steps."""
    rows = [r for r in read_metrics(run_dir / "metrics.jsonl") if r.get("type") == "train"]
    rates = sorted(r["tokens_per_s"] for r in rows[skip:]) or [math.nan]
    return rates[len(rates) // 2]


def stage_speed(run_dir: Path, seq_len: int, config: Any, peak: float) -> dict[str, float]:
    tok_s = median_rate(run_dir, skip=2)
    return {"tokens_per_s": round(tok_s, 1), "mfu": round(config.flops_per_token(seq_len) * tok_s / peak, 3)}


def nanogpt_config(recipe: RecipeConfig, dense: TrainConfig, steps: int) -> TrainConfig:
    """The teacher's shape trained with nanoGPT's small-model settings."""
    return TrainConfig(
        objective="next_token", model=dense.model, model_overrides=dict(dense.model_overrides),
        data=dense.data.replace(path=str(Path(recipe.out) / "shards")), steps=steps, batch_size=dense.batch_size,
        optimizer="adamw", lr=1e-3, betas=(0.9, 0.99), weight_decay=0.1, grad_clip=1.0,
        schedule="cosine", min_lr_ratio=0.1, warmup_steps=min(100, max(1, steps // 10)),
        eval_every=0, eval_batches=dense.eval_batches, save_every=max(1, steps // 4), seed=dense.seed)


def strong_config(recipe: RecipeConfig, dense: TrainConfig, steps: int) -> TrainConfig:
    """The teacher's own setup (optimiser, rates, initialisation, schedule) for ``steps`` steps."""
    return dense.replace(data=dense.data.replace(path=str(Path(recipe.out) / "shards")), steps=steps,
                         warmup_steps=min(dense.warmup_steps, max(1, steps // 10)), eval_every=0,
                         save_every=max(1, steps // 4))


BASELINES: dict[str, Callable[[RecipeConfig, TrainConfig, int], TrainConfig]] = {
    "strong": strong_config, "nanogpt": nanogpt_config}


def train_baseline(recipe: RecipeConfig, out: Path, dense: TrainConfig, budget_s: float, kind: str,
                   max_steps: int | None = None) -> dict[str, Any]:
    """Measure baseline ``kind``'s speed for a few steps, then train it for ``budget_s`` seconds of steps."""
    done = out / "summary.json"
    if done.is_file():
        return json.loads(done.read_text())
    make = BASELINES[kind]
    probe_dir = out.parent / f"{out.name}_probe"
    probe = Trainer(make(recipe, dense, 12), probe_dir, show_progress=False)
    probe.run(resume=True)
    tok_s = median_rate(probe_dir, skip=3)
    per_step = dense.batch_size * dense.data.seq_len * dense.grad_accum
    steps = max(1, int(budget_s * tok_s / per_step))
    if max_steps is not None:
        steps = min(steps, max_steps)
    cfg = make(recipe, dense, steps)
    t0 = time.perf_counter()
    result = Trainer(cfg, out).run(resume=True)
    summary = {"steps": steps, "tokens": result.tokens, "wall_s": round(time.perf_counter() - t0, 1),
               "budget_s": round(budget_s, 1), "final": str(result.final)}
    atomic_write_json(done, summary)
    return summary


def mbpp_validation_loss(checkpoint: Path, recipe: RecipeConfig, seq_len: int) -> float:
    """Token-weighted cross-entropy of ``checkpoint`` on MBPP's validation split, as fine-tuning scores it."""
    from smallcode.train.config import DataConfig
    from smallcode.train.objectives import next_token_objective
    from smallcode.train.sources import build_source
    from smallcode.train.trainer import LossModule

    ckpt = Checkpoint.open(checkpoint)
    source = build_source(DataConfig(kind="mbpp", path=recipe.mbpp or "", tokenizer=str(ckpt.tokenizer_file),
                                     seq_len=seq_len), 8, 0, 0, 1)
    module = LossModule(ckpt.load_model().eval(), next_token_objective)
    total, count = 0.0, 0
    with torch.no_grad():
        for batch in source.validation(10**6):
            ce, _, extra = module(batch, evaluate=True)
            total += float(ce) * int(extra["tokens"])
            count += int(extra["tokens"])
    return total / max(1, count)


def line_scores(checkpoint: Path, out: Path, cursors: int, cross_file: bool) -> dict[str, float]:
    """``eval lines`` of ``checkpoint`` on the reporting half (resumes in ``out``), as the main job runs it."""
    settings = LinesSettings(split="report", n=cursors, cross_file=cross_file)
    tasks, fingerprint, packages = held_out_tasks(settings)
    summary = run_lines(tasks, lambda: LocalModel(checkpoint, max_batch=1), settings, out, str(checkpoint),
                        held_out=fingerprint, packages=packages, progress=False)
    return {k: summary["all"][k] for k in ("exact_match", "edit_similarity", "chars_saved_per_100", "latency_p50_ms")}


def table(models: dict[str, dict[str, Any]]) -> str:
    """The comparison as Markdown: one row per model."""
    rows = ["| model | reporting half bits/byte | line exact match in-file / cross-file | edit similarity "
            "in-file / cross-file | chars saved per 100 in-file / cross-file |", "|---|---|---|---|---|"]
    for name, m in models.items():
        i, c = m["in_file"], m["cross_file"]
        rows.append(f"| {name} | {m['report_bits_per_byte']:.4f} | {100 * i['exact_match']:.1f}% / "
                    f"{100 * c['exact_match']:.1f}% | {i['edit_similarity']:.3f} / {c['edit_similarity']:.3f} | "
                    f"{i['chars_saved_per_100']:.2f} / {c['chars_saved_per_100']:.2f} |")
    return "\n".join(rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", type=Path, default=ROOT / "configs" / "nano" / "recipe.yaml")
    p.add_argument("--out", type=Path, default=Path("runs/speedrun"))
    p.add_argument("--cursors", type=int, default=300, help="next-line cursors per model and variant")
    p.add_argument("--max-baseline-steps", type=int, default=None,
                   help="cap each baseline's steps (a quick check of this script, not a measurement)")
    args = p.parse_args()
    recipe = RecipeConfig.load(args.recipe).replace(out=str(args.out / "recipe"))
    out = Path(recipe.out)

    fresh = not (out / "recipe_times.json").is_file()
    t0 = time.perf_counter()
    run_main_job(recipe)
    session_s = time.perf_counter() - t0
    times = json.loads((out / "recipe_times.json").read_text())
    recipe_wall = sum(times.values())
    train_wall = sum(v for k, v in times.items() if k not in TRAINING_STEPS_EXCLUDED)
    print(f"[speedrun] recipe: {recipe_wall / 60:.1f} min in all, {train_wall / 60:.1f} min of training "
          f"({time.perf_counter() - t0:.0f} s this session)", flush=True)

    configs = {s.name: stage_config(recipe, s, out) for s in recipe.stages if s.config is not None}
    # the baselines take the shape (and the strong one the setup) of the recipe's first stage trained
    # from scratch on next-token: the teacher
    dense = next(c for c in configs.values() if c.init is None and c.objective == "next_token")
    baselines = {kind: train_baseline(recipe, args.out / f"baseline-{kind}", dense, train_wall, kind,
                                      args.max_baseline_steps) for kind in BASELINES}

    peak = peak_flops()
    held = held_out_set(bytes_per_package=recipe.held_out_bytes)
    tune = held_out_set(bytes_per_package=recipe.held_out_bytes, split="tune")
    report = held_out_set(bytes_per_package=recipe.held_out_bytes, split="report")
    scored = json.loads((out / "heldout.json").read_text())
    if scored["set"] != held.fingerprint or scored.get("report_set") != report.fingerprint:
        raise SystemExit(f"the recipe's stages were scored on another held-out set ({scored['set']}); "
                         f"this one is {held.fingerprint}: delete {out / 'heldout.json'} and run again")
    scores = scored["stages"]
    stages: dict[str, Any] = {}
    for spec in recipe.stages:
        ckpt_cfg = Checkpoint.open(stage_final(out, spec.name)).config
        row: dict[str, Any] = {"bits_per_byte": scores[spec.name]["bits_per_byte"],
                               "report_bits_per_byte": scores[spec.name]["report_bits_per_byte"],
                               "wall_s": times.get(spec.name)}
        if spec.name in configs:
            cfg = configs[spec.name]
            summary = json.loads((out / spec.name / "summary.json").read_text())
            row.update({"tokens": summary["tokens"], **stage_speed(out / spec.name, cfg.data.seq_len, ckpt_cfg, peak)})
        stages[spec.name] = row

    # general models: every stage but task fine-tuning; the best is chosen on the tuning half, so the
    # reporting half stays unseen by every choice
    general = [s.name for s in recipe.stages if s.name not in configs or configs[s.name].data.kind == "shards"]
    for name in general:
        ckpt = Checkpoint.open(stage_final(out, name))
        stages[name]["tune_bits_per_byte"] = round(
            bits_per_byte(ckpt.load_model(), ckpt.load_tokenizer(), tune.texts).bits_per_byte, 4)
    best = min(general, key=lambda n: stages[n]["tune_bits_per_byte"])

    base_rows: dict[str, Any] = {}
    for kind, summary in baselines.items():
        ckpt = Checkpoint.open(summary["final"])
        model, tok = ckpt.load_model(), ckpt.load_tokenizer()
        base_rows[kind] = {
            "bits_per_byte": round(bits_per_byte(model, tok, held.texts).bits_per_byte, 4),
            "report_bits_per_byte": round(bits_per_byte(model, tok, report.texts).bits_per_byte, 4),
            "tokens": summary["tokens"], "steps": summary["steps"], "wall_s": summary["wall_s"],
            **stage_speed(args.out / f"baseline-{kind}", dense.data.seq_len, ckpt.config, peak)}

    last, parent = recipe.stages[-1], recipe.stages[-1].init_from
    # label: (checkpoint, scores so far, run directory name); the best stage's by its own name
    compared = {f"final ({last.name})": (stage_final(out, last.name), stages[last.name], last.name)}
    if best != last.name:
        compared[f"best ({best})"] = (stage_final(out, best), stages[best], best)
    for kind in BASELINES:
        compared[f"{kind} baseline"] = (Path(baselines[kind]["final"]), base_rows[kind], f"baseline-{kind}")
    models: dict[str, Any] = {}
    for label, (ckpt_dir, row, slug) in compared.items():
        models[label] = {"report_bits_per_byte": row["report_bits_per_byte"]}
        for variant, cross in (("in_file", False), ("cross_file", True)):
            print(f"[speedrun] {label}: next-line completion, {variant}, {args.cursors} cursors", flush=True)
            models[label][variant] = line_scores(ckpt_dir, args.out / "lines" / f"{slug}-{variant}",
                                                 args.cursors, cross)

    finetune: dict[str, Any] = {}
    if last.name in configs and parent is not None and configs[last.name].data.kind == "mbpp":
        seq = configs[last.name].data.seq_len
        finetune = {
            "stage": last.name, "parent": parent,
            "bits_per_byte_change": round(stages[last.name]["bits_per_byte"] - stages[parent]["bits_per_byte"], 4),
            "mbpp_val_loss_parent": round(mbpp_validation_loss(stage_final(out, parent), recipe, seq), 4),
            "mbpp_val_loss": round(mbpp_validation_loss(stage_final(out, last.name), recipe, seq), 4),
        }

    loads = {}
    for name in configs:
        load = final_expert_load(out / name / "metrics.jsonl")
        if load is not None:
            loads[name] = {"min": round(load[0], 3), "max": round(load[1], 3)}

    engine = Engine.from_checkpoint(stage_final(out, last.name))
    settings = {
        "greedy": SamplingParams(max_tokens=GENERATE_DEFAULTS.max_tokens),
        "t0.2": GENERATE_DEFAULTS.replace(temperature=0.2),
        "t0.5": GENERATE_DEFAULTS.replace(temperature=0.5),
        "default": GENERATE_DEFAULTS,
    }
    distinct, empty = {}, {}
    for name, params in settings.items():
        runs = [sample_prompts(engine, params.replace(seed=seed)) for seed in range(2)]
        distinct[name] = round(sum(mean_distinct(r) for r in runs) / len(runs), 3)
        # an empty completion does not loop, but says nothing either: counted apart
        empty[name] = sum(not smp.completion.strip() for r in runs for smp in r) / sum(len(r) for r in runs)

    evaluation = {}
    summary_path = out / "eval" / "summary.json"
    if summary_path.is_file():
        for suite, s in json.loads(summary_path.read_text())["suites"].items():
            evaluation[suite] = s.get("pass@1")

    strong = base_rows["strong"]
    result = {
        "recipe_wall_min": round(recipe_wall / 60, 2), "recipe_training_min": round(train_wall / 60, 2),
        # the whole process, imports and all, when this run started the recipe from nothing
        "recipe_process_min": round(session_s / 60, 2) if fresh else None,
        "steps_s": times, "peak_gflops": round(peak / 1e9, 1), "held_out": held.fingerprint,
        "tune_set": tune.fingerprint, "report_set": report.fingerprint,
        "stages": stages, "best_general_stage": best, "best_bits_per_byte": stages[best]["bits_per_byte"],
        "baselines": base_rows,
        "ratio_nanogpt_over_best": round(base_rows["nanogpt"]["report_bits_per_byte"]
                                         / stages[best]["report_bits_per_byte"], 4),
        "ratio_strong_over_best": round(strong["report_bits_per_byte"] / stages[best]["report_bits_per_byte"], 4),
        "lines": {"cursors": args.cursors, "split": "report", "models": models},
        "finetune": finetune, "expert_load": loads, "distinct_4": distinct, "empty_share": empty,
        "generate_defaults": {"temperature": GENERATE_DEFAULTS.temperature, "top_p": GENERATE_DEFAULTS.top_p},
        "pass@1": evaluation,
    }
    print(table(models), flush=True)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
