"""The whole recipe as one resumable command: tokenizer, shards, then the training stages in order.

``smallcode recipe configs/nano/recipe.yaml`` builds, under ``out``:

    tokenizer/   a code BPE trained on the corpus (the standard library's sources by default)
    shards/      the corpus tokenized, deduplicated and split (``smallcode data prepare``)
    <stage>/     one directory per stage: a training run (``smallcode train``) or an upcycled checkpoint
    report.md    each stage's validation loss, size, tokens and time, and what to run next
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
    experts: int = 8
    """Upcycling: experts per layer."""
    top_k: int = 2
    """Upcycling: experts per token."""
    set: list[str] = field(default_factory=list)
    """Extra ``key=value`` overrides of the stage config."""

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name:
            raise ConfigError(f"StageSpec.name must be a plain directory name, got {self.name!r}")
        if (self.config is None) == (self.upcycle_from is None):
            raise ConfigError(f"stage {self.name!r}: give either config (a training stage) or upcycle_from")


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

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for s in self.stages:
            for ref in (s.init_from, s.teacher_from, s.upcycle_from):
                if ref is not None and ref not in seen:
                    raise ConfigError(f"stage {s.name!r} refers to {ref!r}, which is not an earlier stage")
            if s.name in seen or s.name in ("tokenizer", "shards"):
                raise ConfigError(f"stage name {s.name!r} is used twice or reserved")
            seen.add(s.name)


def _final(out: Path, name: str) -> Path:
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
        changes["init"] = str(_final(out, spec.init_from))
    cfg = cfg.with_overrides(changes)
    if spec.teacher_from:
        teacher = str(_final(out, spec.teacher_from))
        cfg = cfg.replace(distill=cfg.distill.replace(teacher=teacher) if cfg.distill else DistillConfig(teacher))
    return cfg.with_overrides(spec.set) if spec.set else cfg


def run_recipe(recipe: RecipeConfig, progress: bool = True) -> Path:
    """Run (or continue) every step; returns the report's path."""
    from smallcode.data.build import prepare
    from smallcode.data.config import PrepareConfig
    from smallcode.model.checkpoint import Checkpoint
    from smallcode.tokenizer import train_tokenizer
    from smallcode.train.trainer import Trainer
    from smallcode.train.upcycle import upcycle_checkpoint

    out = Path(recipe.out)
    out.mkdir(parents=True, exist_ok=True)
    times_path = out / "recipe_times.json"
    times: dict[str, float] = json.loads(times_path.read_text()) if times_path.is_file() else {}

    def timed(name: str, fn: Any) -> Any:
        t0 = time.perf_counter()
        result = fn()
        times[name] = round(times.get(name, 0.0) + time.perf_counter() - t0, 1)
        atomic_write_text(times_path, json.dumps(times, indent=2) + "\n")
        return result

    tok_dir = out / "tokenizer"
    if not (tok_dir / TOKENIZER_FILE).is_file():
        def build_tokenizer() -> None:
            with atomic_dir(tok_dir) as tmp:
                train_tokenizer(recipe.corpus, recipe.vocab_size, tmp, show_progress=progress)

        _say(progress, f"[recipe] training the tokenizer ({recipe.vocab_size} tokens)")
        timed("tokenizer", build_tokenizer)
    if not (out / "shards" / "index.json").is_file():
        _say(progress, "[recipe] tokenizing the corpus into shards")
        timed("shards", lambda: prepare(recipe.corpus, tok_dir, out / "shards",
                                        PrepareConfig(val_fraction=recipe.val_fraction), overwrite=True,
                                        progress=progress))
    for spec in recipe.stages:
        if spec.upcycle_from is not None:
            target = out / spec.name
            if not Checkpoint.is_checkpoint(target):
                _say(progress, f"[recipe] {spec.name}: upcycling {spec.upcycle_from} to {spec.experts} experts "
                               f"top-{spec.top_k}")
                timed(spec.name, lambda s=spec, t=target: upcycle_checkpoint(
                    _final(out, s.upcycle_from), t, s.experts, s.top_k))
            continue
        cfg = stage_config(recipe, spec, out)
        _say(progress, f"[recipe] {spec.name}: {cfg.objective}, {cfg.steps} steps")
        timed(spec.name, lambda c=cfg, s=spec: Trainer(c, out / s.name, show_progress=progress).run(resume=True))
    return write_report(recipe, out, times)


def _say(progress: bool, text: str) -> None:
    if progress:
        print(text, flush=True)


def write_report(recipe: RecipeConfig, out: Path, times: dict[str, float]) -> Path:
    """``report.md`` and ``report.png``: every stage's validation loss, size, tokens and time."""
    from smallcode.model.checkpoint import Checkpoint
    from smallcode.train.trainer import read_metrics

    rows = []
    for spec in recipe.stages:
        model_cfg = Checkpoint.open(_final(out, spec.name)).config
        size = f"{model_cfg.num_params() / 1e6:.1f}M / {model_cfg.num_active_params() / 1e6:.1f}M"
        if spec.upcycle_from is not None:
            rows.append((spec.name, f"upcycle {spec.upcycle_from} ({spec.experts} experts, top-{spec.top_k})", size,
                         "-", "-", "same function as its parent", times.get(spec.name, 0.0)))
            continue
        summary = json.loads((out / spec.name / "summary.json").read_text())
        cfg = stage_config(recipe, spec, out)
        what = {"next_token": "next-token", "distill": "distillation"}[cfg.objective]
        data = {"shards": "corpus", "jsonl": "JSONL", "mbpp": "MBPP train"}[cfg.data.kind]
        val = summary["val_loss"]
        held_out = "MBPP validation" if cfg.data.kind == "mbpp" else "corpus validation"
        val_text = f"{val:.3f} ({held_out})" if val is not None else "- (no validation data)"
        rows.append((spec.name, f"{what} on {data}", size, str(summary["steps"]), f"{summary['tokens'] / 1e6:.2f}M",
                     val_text, times.get(spec.name, 0.0)))
    total = sum(times.values())
    last = _final(out, recipe.stages[-1].name) if recipe.stages else out / "<checkpoint>"
    data_dir = f"--data-dir {recipe.mbpp} " if recipe.mbpp is not None else ""
    lines = [
        "# smallcode recipe report", "",
        f"Run directory `{out}`; total wall time of the steps {total / 60:.1f} min "
        f"(tokenizer {times.get('tokenizer', 0):.0f} s, shards {times.get('shards', 0):.0f} s).", "",
        "| stage | what | params total / active | steps | tokens | validation loss (nats/token) | wall s |",
        "|---|---|---|---|---|---|---|",
        *[f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} | {r[4]} | {r[5]} | {r[6]:.0f} |" for r in rows], "",
        "![curves](report.png)", "",
        "## What to run next", "",
        f"- Generate: `smallcode generate {last} \"def fibonacci(n):\"`",
        f"- Fill in the middle: `smallcode complete {last} --prefix-file a.py --suffix-file b.py`",
        f"- Evaluate: `smallcode eval run --model {last} --suite humaneval,mbpp {data_dir}--out {out}/eval`",
        "- Scale up: the same stages for the flagship are in `configs/smallcode-16b-a4b/` (torchrun + FSDP2).",
    ]
    report = out / "report.md"
    atomic_write_text(report, "\n".join(lines) + "\n")
    _plot_stages(out, [s.name for s in recipe.stages if s.upcycle_from is None], out / "report.png", read_metrics)
    return report


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
