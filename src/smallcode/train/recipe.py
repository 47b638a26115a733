"""The whole recipe as one resumable command: tokenizer, shards, then the training stages in order.

``smallcode recipe configs/nano/recipe.yaml`` builds, under ``out``:

    tokenizer/   a code BPE trained on the corpus (the standard library's sources by default)
    shards/      the corpus tokenized, deduplicated and split (``smallcode data prepare``)
    <stage>/     one directory per stage: a training run (``smallcode train``) or an upcycled checkpoint
    heldout.json each stage's bits per byte on held-out third-party Python   } written by
    samples.json the final model's completions of fixed prompts              } smallcode.pipeline,
    eval/        the final model's sandboxed HumanEval and MBPP run, pass@1  } which runs this first
    report.md    each stage's validation loss, bits per byte, size, tokens and time, the samples,
                 pass@1, and what to run next
    report.png   the stages' training and validation curves on one step axis

Each step is skipped when its output is complete and resumed from its newest checkpoint when it is
not, so an interrupted recipe is continued by running the same command again. A stage names the
stages it builds on (``init_from``, ``teacher_from``, ``upcycle_from``); the runner fills in
those paths and the shard and tokenizer paths (and MBPP's, when the recipe overrides the packaged
copy), so the stage files stay ordinary training configs.
One process; the flagship's stages run one by one under torchrun (see ``configs/``).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from smallcode.config import Config, ConfigError
from smallcode.fileio import atomic_dir, atomic_write_text
from smallcode.tokenizer.code_tokenizer import TOKENIZER_FILE
from smallcode.train.config import DistillConfig, TrainConfig


@dataclass
class StageSpec(Config):
    name: str = ""
    """Directory name of the stage under the recipe's ``out``, and how later stages refer to it."""
    config: str | None = None
    """A training stage's YAML (``smallcode train`` format); None for an upcycling stage."""
    init_from: str | None = None
    """Start from this earlier stage's final checkpoint."""
    teacher_from: str | None = None
    """Distil from this earlier stage's final checkpoint."""
    upcycle_from: str | None = None
    """Upcycle this earlier stage's final checkpoint into experts (no training)."""
    prune_from: str | None = None
    """Width-prune this earlier (dense) stage's final checkpoint to ``d_ff`` (no training)."""
    d_ff: int = 512
    """Pruning: feed-forward hidden units kept per layer."""
    calibration_rows: int = 16
    """Pruning: training rows whose activations rank the hidden units."""
    experts: int = 8
    """Upcycling: experts per layer."""
    top_k: int = 2
    """Upcycling: experts per token."""
    set: list[str] = field(default_factory=list)
    """Extra ``key=value`` overrides of the stage config."""

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name:
            raise ConfigError(f"StageSpec.name must be a plain directory name, got {self.name!r}")
        if sum(x is not None for x in (self.config, self.upcycle_from, self.prune_from)) != 1:
            raise ConfigError(f"stage {self.name!r}: give exactly one of config (a training stage), upcycle_from "
                              "or prune_from")


@dataclass
class RecipeConfig(Config):
    out: str = "runs/nano"
    """Where every step of the recipe writes."""
    corpus: list[str] | None = None
    """Files/directories to train on; None: the embedded corpus (the standard library's sources)."""
    vocab_size: int = 8192
    """Tokenizer vocabulary (must equal the models' vocab_size)."""
    val_fraction: float = 0.02
    """Share of documents held out for validation."""
    mbpp: str | None = None
    """MBPP for the fine-tuning stage: None for the copy shipped in the package, or a directory laid
    out like the releases (``mbpp/mbpp.jsonl``) to read instead."""
    stages: list[StageSpec] = field(default_factory=list)
    """The stages in order."""
    gpus: int = 1
    """Processes the stages are planned for (``smallcode estimate``); torchrun decides the real count."""
    held_out: bool = True
    """Score every stage in bits per byte on held-out third-party Python (``smallcode.eval.heldout``)."""
    held_out_bytes: int = 24_000
    """Bytes of each held-out package scored (the default is the benchmark's set)."""
    eval_suites: list[str] = field(default_factory=lambda: ["humaneval", "mbpp"])
    """Suites the final model is evaluated on in the sandbox, greedy pass@1 (empty: none)."""
    eval_max_tokens: int = 256
    """Longest completion of that evaluation, in tokens."""
    eval_limit: int | None = None
    """Only the first N tasks of each suite (smoke runs); None: all of them."""

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for s in self.stages:
            for ref in (s.init_from, s.teacher_from, s.upcycle_from, s.prune_from):
                if ref is not None and ref not in seen:
                    raise ConfigError(f"stage {s.name!r} refers to {ref!r}, which is not an earlier stage")
            if s.name in seen or s.name in ("tokenizer", "shards"):
                raise ConfigError(f"stage name {s.name!r} is used twice or reserved")
            seen.add(s.name)


def stage_final(out: Path, name: str) -> Path:
    """Stage ``name``'s model under ``out``: a training run's ``final/``, or the upcycled/pruned checkpoint itself."""
    run = out / name
    return run / "final" if (run / "final").is_dir() else run


def stage_config(recipe: RecipeConfig, spec: StageSpec, out: Path) -> TrainConfig:
    """The stage's training config with the paths of the recipe's earlier outputs filled in."""
    assert spec.config is not None
    cfg = TrainConfig.load(spec.config)
    changes: dict[str, Any] = {}
    if cfg.data.kind == "shards":
        changes["data.path"] = str(out / "shards")
    else:
        changes["data.tokenizer"] = str(out / "tokenizer" / TOKENIZER_FILE)
        if cfg.data.kind == "mbpp" and recipe.mbpp is not None:
            changes["data.path"] = recipe.mbpp
    if spec.init_from:
        changes["init"] = str(stage_final(out, spec.init_from))
    cfg = cfg.with_overrides(changes)
    if spec.teacher_from:
        teacher = str(stage_final(out, spec.teacher_from))
        cfg = cfg.replace(distill=cfg.distill.replace(teacher=teacher) if cfg.distill else DistillConfig(teacher))
    return cfg.with_overrides(spec.set) if spec.set else cfg


def run_recipe(recipe: RecipeConfig, progress: bool = True, report: bool = True) -> Path:
    """Run (or continue) every training step; returns the report's path (``report=False``: the run directory).

    ``smallcode.pipeline.run_main_job`` (what ``make run`` runs) calls this, then scores and evaluates.
    """
    from smallcode.data.build import prepare
    from smallcode.data.config import PrepareConfig
    from smallcode.model.checkpoint import Checkpoint
    from smallcode.tokenizer import train_tokenizer
    from smallcode.train.prune import prune_checkpoint
    from smallcode.train.trainer import Trainer
    from smallcode.train.upcycle import upcycle_checkpoint

    out = Path(recipe.out)
    out.mkdir(parents=True, exist_ok=True)

    def timed(name: str, fn: Any) -> Any:
        return timed_step(out, name, fn)

    tok_dir = out / "tokenizer"
    if not (tok_dir / TOKENIZER_FILE).is_file():
        def build_tokenizer() -> None:
            with atomic_dir(tok_dir) as tmp:
                train_tokenizer(recipe.corpus, recipe.vocab_size, tmp, show_progress=progress)

        say(progress, f"[recipe] training the tokenizer ({recipe.vocab_size} tokens)")
        timed("tokenizer", build_tokenizer)
    if not (out / "shards" / "index.json").is_file():
        say(progress, "[recipe] tokenizing the corpus into shards")
        timed("shards", lambda: prepare(recipe.corpus, tok_dir, out / "shards",
                                        PrepareConfig(val_fraction=recipe.val_fraction), overwrite=True,
                                        progress=progress))
    for spec in recipe.stages:
        if spec.prune_from is not None:
            target = out / spec.name
            if not Checkpoint.is_checkpoint(target):
                say(progress, f"[recipe] {spec.name}: pruning {spec.prune_from}'s feed-forward to {spec.d_ff} units")
                timed(spec.name, lambda s=spec, t=target: prune_checkpoint(
                    stage_final(out, s.prune_from), t, s.d_ff, _calibration(out, s.calibration_rows)))
            continue
        if spec.upcycle_from is not None:
            target = out / spec.name
            if not Checkpoint.is_checkpoint(target):
                say(progress, f"[recipe] {spec.name}: upcycling {spec.upcycle_from} to {spec.experts} experts "
                               f"top-{spec.top_k}")
                timed(spec.name, lambda s=spec, t=target: upcycle_checkpoint(
                    stage_final(out, s.upcycle_from), t, s.experts, s.top_k))
            continue
        cfg = stage_config(recipe, spec, out)
        say(progress, f"[recipe] {spec.name}: {cfg.objective}, {cfg.steps} steps")
        timed(spec.name, lambda c=cfg, s=spec: Trainer(c, out / s.name, show_progress=progress).run(resume=True))
    return write_report(recipe, out) if report else out


def timed_step(out: Path, name: str, fn: Any) -> Any:
    """Run ``fn`` and add its wall time to step ``name`` in ``out/recipe_times.json`` (the report's times)."""
    path = out / "recipe_times.json"
    t0 = time.perf_counter()
    result = fn()
    times: dict[str, float] = json.loads(path.read_text()) if path.is_file() else {}
    times[name] = round(times.get(name, 0.0) + time.perf_counter() - t0, 1)
    atomic_write_text(path, json.dumps(times, indent=2) + "\n")
    return result


def final_checkpoint(recipe: RecipeConfig) -> Path:
    """The last stage's final checkpoint: the recipe's product."""
    return stage_final(Path(recipe.out), recipe.stages[-1].name)


def _calibration(out: Path, rows: int) -> Any:
    """The first ``rows`` training rows of the recipe's shards (what pruning ranks hidden units on)."""
    from smallcode.data import ShardLoader

    return ShardLoader(out / "shards", rows, 256, seed=0).batch(0)[:, :-1].long()


def say(progress: bool, text: str) -> None:
    """A ``[recipe]`` progress line, unless quiet."""
    if progress:
        print(text, flush=True)


def write_report(recipe: RecipeConfig, out: Path) -> Path:
    """``report.md`` and ``report.png``: every stage's validation loss, size, tokens and time."""
    from smallcode.model.checkpoint import Checkpoint
    from smallcode.train.trainer import read_metrics

    times_path = out / "recipe_times.json"
    times: dict[str, float] = json.loads(times_path.read_text()) if times_path.is_file() else {}
    held = json.loads((out / "heldout.json").read_text()).get("stages", {}) if (out / "heldout.json").is_file() else {}
    rows = []
    for spec in recipe.stages:
        model_cfg = Checkpoint.open(stage_final(out, spec.name)).config
        size = f"{model_cfg.num_params() / 1e6:.1f}M / {model_cfg.num_active_params() / 1e6:.1f}M"
        bpb = f"{held[spec.name]['bits_per_byte']:.3f}" if spec.name in held else "-"
        parent = spec.init_from or spec.prune_from or spec.upcycle_from
        if spec.name in held and parent in held:  # what the stage bought
            bpb += f" ({held[spec.name]['bits_per_byte'] - held[parent]['bits_per_byte']:+.3f})"
        if spec.upcycle_from is not None:
            rows.append((spec.name, f"upcycle {spec.upcycle_from} ({spec.experts} experts, top-{spec.top_k})", size,
                         "-", "-", "-", "same function as its parent", bpb, times.get(spec.name, 0.0)))
            continue
        if spec.prune_from is not None:
            rows.append((spec.name, f"prune {spec.prune_from} (feed-forward to {spec.d_ff} units)", size,
                         "-", "-", "-", "-", bpb, times.get(spec.name, 0.0)))
            continue
        summary = json.loads((out / spec.name / "summary.json").read_text())
        cfg = stage_config(recipe, spec, out)
        what = {"next_token": "next-token", "distill": "distillation"}[cfg.objective]
        data = {"shards": "corpus", "jsonl": "JSONL", "mbpp": "MBPP train"}[cfg.data.kind]
        val = summary["val_loss"]
        held_out = "MBPP validation" if cfg.data.kind == "mbpp" else "corpus validation"
        val_text = f"{val:.3f} ({held_out})" if val is not None else "- (no validation data)"
        wall = times.get(spec.name, 0.0)
        rows.append((spec.name, f"{what} on {data}", size, str(summary["steps"]), f"{summary['tokens'] / 1e6:.2f}M",
                     f"{summary['tokens'] / wall / 1e3:.1f}K" if wall else "-", val_text, bpb, wall))
    total = sum(times.values())
    last = stage_final(out, recipe.stages[-1].name) if recipe.stages else out / "<checkpoint>"
    data_dir = f"--data-dir {recipe.mbpp} " if recipe.mbpp is not None else ""
    steps = ", ".join(f"{k} {v:.0f} s" for k, v in times.items() if k not in {s.name for s in recipe.stages})
    lines = [
        "# smallcode recipe report", "",
        f"Run directory `{out}`; total wall time of the steps {total / 60:.1f} min ({steps}).", "",
        "| stage | what | params total / active | steps | tokens | tokens/s | validation loss (nats/token) "
        "| held-out bits/byte (change from its parent) | wall s |",
        "|---|---|---|---|---|---|---|---|---|",
        *[f"| {' | '.join(r[:-1])} | {r[-1]:.0f} |" for r in rows], "",
    ]
    if held:
        lines += [f"Held-out bits per byte: third-party Python never trained on ({_held_out_fingerprint(out)}).", ""]
    lines += _expert_load_lines(recipe, out)
    lines += ["![curves](report.png)", ""]
    lines += _samples_lines(out / "samples.json")
    lines += _eval_lines(out / "eval" / "summary.json")
    lines += [
        "## What to run next", "",
        f"- Generate: `smallcode generate {last} \"def fibonacci(n):\"`",
        f"- Fill in the middle: `smallcode complete {last} --prefix-file examples/head.py "
        "--suffix-file examples/tail.py`",
        f"- Evaluate: `smallcode eval run --model {last} --suite humaneval,mbpp {data_dir}--out {out}/eval`",
        "- Scale up: the same stages for the flagship are in `configs/smallcode-16b-a4b/` (torchrun + FSDP2).",
    ]
    report = out / "report.md"
    atomic_write_text(report, "\n".join(lines) + "\n")
    _plot_stages(out, [s.name for s in recipe.stages if s.config is not None], out / "report.png", read_metrics)
    return report


def _held_out_fingerprint(out: Path) -> str:
    return json.loads((out / "heldout.json").read_text()).get("set", "?")


def final_expert_load(metrics: Path) -> tuple[float, float, int] | None:
    """A run's expert load over its last tenth of steps: (least-used, most-used) as multiples of the
    uniform share, and the steps averaged; None for a dense run."""
    from smallcode.train.trainer import read_metrics

    rows = [r for r in read_metrics(metrics) if r.get("type") == "train" and "expert_load_min" in r]
    if not rows:
        return None
    tail = rows[-max(1, len(rows) // 10):]
    return (sum(r["expert_load_min"] for r in tail) / len(tail), sum(r["expert_load_max"] for r in tail) / len(tail),
            len(tail))


def _expert_load_lines(recipe: RecipeConfig, out: Path) -> list[str]:
    """Each MoE training stage's expert load over its last tenth of steps, as multiples of the uniform share."""
    lines = []
    for spec in recipe.stages:
        load = final_expert_load(out / spec.name / "metrics.jsonl")
        if load is None:
            continue
        lo, hi, n = load
        lines.append(f"Expert load at the end of `{spec.name}` (mean of its last {n} steps): the least-used "
                     f"expert of a layer gets {lo:.2f}x the uniform share of tokens, the most-used {hi:.2f}x.")
    return [*lines, ""] if lines else []


def _samples_lines(path: Path) -> list[str]:
    if not path.is_file():
        return []
    rows = json.loads(path.read_text())
    lines = ["## The final model on fixed prompts", ""]
    for label in ("greedy", "default"):
        mine = [r for r in rows if r["settings"] == label]
        if not mine:
            continue
        mean = sum(r["distinct_4"] for r in mine) / len(mine)
        title = "greedy" if label == "greedy" else "`smallcode generate`'s default sampling settings"
        lines += [f"### {title} (mean distinct-4-gram ratio {mean:.2f})", ""]
        for r in mine:
            lines += ["```python", r["prompt"] + r["completion"].rstrip(), "```", ""]
    return lines


def _eval_lines(path: Path) -> list[str]:
    if not path.is_file():
        return []
    summary = json.loads(path.read_text())
    lines = ["## pass@1 of the final model (greedy, generated code run in the sandbox)", "",
             "| suite | tasks | pass@1 |", "|---|---|---|"]
    for suite, s in summary.get("suites", {}).items():
        p1 = s.get("pass@1")
        shown = f"{p1 * 100:.1f}% ({s['passed']} of {s['samples']})" if p1 is not None else "-"
        lines.append(f"| {suite} | {s.get('tasks', '-')} | {shown} |")
    return [*lines, ""]


def _plot_stages(out: Path, names: list[str], png: Path, read_metrics: Any) -> None:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from smallcode.fileio import atomic_write_bytes

    fig, ax = plt.subplots(figsize=(8, 4.5))
    offset = 0
    for i, name in enumerate(names):
        rows = read_metrics(out / name / "metrics.jsonl")
        train = [(r["step"] + offset, r["ce"]) for r in rows if r.get("type") == "train"]
        val = [(r["step"] + offset, r["val_loss"]) for r in rows if r.get("type") == "eval"]
        color = f"C{i}"
        if train:
            xs, ys = zip(*train, strict=True)
            k = max(1, len(ys) // 25)
            ax.plot(xs, [sum(ys[max(0, j - k + 1): j + 1]) / len(ys[max(0, j - k + 1): j + 1]) for j in range(len(ys))],
                    color=color, lw=1, alpha=0.6)
            offset = xs[-1]
        if val:
            xs, ys = zip(*val, strict=True)
            ax.plot(xs, ys, "o-", color=color, label=f"{name} (validation)")
    ax.set_xlabel("optimizer steps, stages one after another")
    ax.set_ylabel("loss (nats/token)")
    ax.set_title("smallcode recipe: training (thin) and validation (dots) loss per stage")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(png, buf.getvalue())
