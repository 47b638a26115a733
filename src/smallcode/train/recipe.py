"""The whole recipe as one resumable command: tokenizer, shards, then the training stages in order.

``smallcode recipe configs/nano/recipe.yaml`` builds, under ``out``:

    tokenizer/   a code BPE trained on the corpus (the standard library's sources by default), or, when
                 the first stage imports a Hugging Face model, that model's own tokenizer files
    shards/      the corpus tokenized, deduplicated and split (``smallcode data prepare``)
    <stage>/     one directory per stage: a training run (``smallcode train``), or a checkpoint made
                 without training: imported (``import_from``), pruned, windowed (``window.json`` beside
                 it: long-range losses) or upcycled
    heldout.json each stage's bits per byte on held-out third-party Python   } written by
    samples.json the final model's completions of fixed prompts              } smallcode.pipeline,
    eval/        the final model's sandboxed HumanEval and MBPP run, pass@1  } which runs this first
    report.md    each stage's validation loss, bits per byte, size, tokens and time, the samples,
                 pass@1, and what to run next
    report.png   the stages' training and validation curves on one step axis

Each step is skipped when its output is complete and resumed from its newest checkpoint when it is
not, so an interrupted recipe is continued by running the same command again. A stage names the
stages it builds on (``init_from``, ``teacher_from``, ``upcycle_from``, ``prune_from``,
``window_from``); the runner fills in those paths and the shard and tokenizer paths (and MBPP's, when
the recipe overrides the packaged copy), so the stage files stay ordinary training configs.

**Starting from someone else's model.** A first stage with ``import_from: DIR`` imports a Hugging
Face causal-LM directory (``smallcode.export.hf_import.import_hf``); the recipe then trains no
tokenizer: ``tokenizer/`` is a copy of the imported model's tokenizer files and the shards are
tokenised with it, so every later stage (and a teacher taken from the import) shares its token ids.
``configs/import/`` holds such recipes: import, window, adapt by distillation from the imported
original, upcycle into fine-grained experts, train the MoE with the original as teacher.

**Under torchrun** (``torchrun ... -m smallcode.cli.main recipe RECIPE``) every process runs the
training stages together (DDP or FSDP2, as the stage says); the steps without training (tokenizer,
shards, import, prune, window, upcycle, scoring, report) run in the first process while the others
wait for their output on the shared file system (polling, not a collective, so a long tokenisation
cannot time a process group out).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from smallcode.config import Config, ConfigError
from smallcode.fileio import atomic_dir, atomic_write_text
from smallcode.tokenizer.code_tokenizer import TOKENIZER_FILE
from smallcode.train.config import DistillConfig, TrainConfig


@dataclass
class StageSpec(Config):
    name: str = ""
    """Directory name of the stage under the recipe's ``out``, and how later stages refer to it."""
    config: str | None = None
    """A training stage's YAML (``smallcode train`` format); None for a stage without training."""
    import_from: str | None = None
    """Import this Hugging Face model directory (``smallcode import hf``); the first stage only. The recipe
    then uses the model's own tokenizer instead of training one."""
    import_config: str | None = None
    """Import: a Hugging Face ``config.json`` of the model, read by ``smallcode estimate`` when
    ``import_from`` is not on this machine (the import itself reads the directory's own)."""
    window_from: str | None = None
    """Give this earlier stage's full-attention final checkpoint a sliding ``window`` plus ``n_global``
    sink tokens (no training); its long-range losses go to ``window.json``."""
    window: int = 4096
    """Windowing: positions each query sees (besides the sinks)."""
    n_global: int = 4
    """Windowing: sink tokens, the first positions of a sequence, visible to every query (StreamingLLM: 4)."""
    long_range_rows: int = 8
    """Windowing: validation sequences of 4 x ``window`` tokens the long-range loss is measured on."""
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
    """Upcycling: experts per token (a multiple of ``granularity``)."""
    granularity: int = 1
    """Upcycling: fine-grained experts each feed-forward is cut into (each of ``d_ff / granularity`` units)."""
    drop_rate: float = 0.0
    """Upcycling: share of every expert's hidden units re-initialised (Drop-Upcycling); 0 keeps the function."""
    router_init: Literal["normal", "zero"] = "normal"
    """Upcycling: the router's start (``smallcode.train.upcycle``)."""
    set: list[str] = field(default_factory=list)
    """Extra ``key=value`` overrides of the stage config."""

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name:
            raise ConfigError(f"StageSpec.name must be a plain directory name, got {self.name!r}")
        kinds = (self.config, self.upcycle_from, self.prune_from, self.import_from, self.window_from)
        if sum(x is not None for x in kinds) != 1:
            raise ConfigError(f"stage {self.name!r}: give exactly one of config (a training stage), upcycle_from, "
                              "prune_from, import_from or window_from")
        if self.window_from is not None and not (self.window >= 1 and self.n_global >= 0 and self.long_range_rows >= 1):
            raise ConfigError(f"stage {self.name!r}: window and long_range_rows must be >= 1, n_global >= 0")

    @property
    def parent(self) -> str | None:
        """The earlier stage whose model this one starts from (None: a fresh model or an import)."""
        return self.init_from or self.prune_from or self.upcycle_from or self.window_from


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
    hf_model: str | None = None
    """When given, the Hugging Face directory the ``import_from`` stage imports instead of its own
    (``--set hf_model=DIR`` points a shipped recipe at your model)."""
    gpus: int = 1
    """Processes the stages are planned for (``smallcode estimate``); torchrun decides the real count."""
    held_out: bool = True
    """Score every stage in bits per byte on held-out third-party Python (``smallcode.eval.heldout``)."""
    held_out_bytes: int = 24_000
    """Bytes of each held-out package scored (the default is the benchmark's set)."""
    line_cursors: int = 100
    """Cursors of next-line completion on the held-out set's reporting half scored for every stage
    (``smallcode eval lines``, in-file, as the language server asks) when ``held_out``; 0: none."""
    eval_suites: list[str] = field(default_factory=lambda: ["humaneval", "mbpp"])
    """Suites the final model is evaluated on in the sandbox, greedy pass@1 (empty: none)."""
    eval_max_tokens: int = 256
    """Longest completion of that evaluation, in tokens."""
    eval_limit: int | None = None
    """Only the first N tasks of each suite (smoke runs); None: all of them."""

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for i, s in enumerate(self.stages):
            if s.import_from is not None and i:
                raise ConfigError(f"stage {s.name!r}: import_from is for the first stage only (the recipe's "
                                  "tokenizer is the imported model's)")
            for ref in (s.init_from, s.teacher_from, s.upcycle_from, s.prune_from, s.window_from):
                if ref is not None and ref not in seen:
                    raise ConfigError(f"stage {s.name!r} refers to {ref!r}, which is not an earlier stage")
            if s.name in seen or s.name in ("tokenizer", "shards"):
                raise ConfigError(f"stage name {s.name!r} is used twice or reserved")
            seen.add(s.name)
        if self.hf_model is not None and not (self.stages and self.stages[0].import_from is not None):
            raise ConfigError("hf_model is given but the recipe's first stage imports nothing (import_from)")

    @property
    def imports(self) -> bool:
        """The first stage imports a Hugging Face model (so the tokenizer is that model's)."""
        return bool(self.stages) and self.stages[0].import_from is not None

    def import_source(self) -> str:
        """The Hugging Face directory the first stage imports."""
        assert self.imports
        return self.hf_model or str(self.stages[0].import_from)


def stage_final(out: Path, name: str) -> Path:
    """Stage ``name``'s model under ``out``: a training run's ``final/``, or the checkpoint a stage without
    training wrote (imported, pruned, windowed, upcycled)."""
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
    Under torchrun only the first process writes anything outside the training stages (module docstring).
    """
    from smallcode.data.build import prepare
    from smallcode.data.config import PrepareConfig
    from smallcode.model.checkpoint import Checkpoint
    from smallcode.tokenizer import train_tokenizer
    from smallcode.train.distributed import init_distributed
    from smallcode.train.prune import prune_checkpoint
    from smallcode.train.trainer import Trainer
    from smallcode.train.upcycle import upcycle_checkpoint
    from smallcode.train.window import window_checkpoint

    info = init_distributed()
    progress = progress and info.is_main
    out = Path(recipe.out)
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)

    def step(name: str, done: Callable[[], bool], fn: Callable[[], Any], text: str) -> None:
        """One step without training: run by the first process, waited for by the others."""
        if done():
            return
        if not info.is_main:
            _wait_for(done)
            return
        say(progress, f"[recipe] {text}")
        timed_step(out, name, fn)

    tok_dir = out / "tokenizer"
    if recipe.imports:
        first = recipe.stages[0]
        source = recipe.import_source()
        step(first.name, lambda: Checkpoint.is_checkpoint(out / first.name),
             lambda: _import(source, out / first.name, progress),
             f"{first.name}: importing the Hugging Face model {source}")
        step("tokenizer", lambda: (tok_dir / TOKENIZER_FILE).is_file(),
             lambda: _copy_tokenizer(out / first.name, tok_dir), "using the imported model's own tokenizer")
    else:
        def build_tokenizer() -> None:
            with atomic_dir(tok_dir) as tmp:
                train_tokenizer(recipe.corpus, recipe.vocab_size, tmp, show_progress=progress)

        step("tokenizer", lambda: (tok_dir / TOKENIZER_FILE).is_file(), build_tokenizer,
             f"training the tokenizer ({recipe.vocab_size} tokens)")
    step("shards", lambda: (out / "shards" / "index.json").is_file(),
         lambda: prepare(recipe.corpus, tok_dir, out / "shards", PrepareConfig(val_fraction=recipe.val_fraction),
                         overwrite=True, progress=progress),
         "tokenizing the corpus into shards")
    for spec in recipe.stages:
        target = out / spec.name
        if spec.import_from is not None:
            continue  # done above, before the tokenizer
        if spec.prune_from is not None:
            step(spec.name, lambda t=target: Checkpoint.is_checkpoint(t),
                 lambda s=spec, t=target: prune_checkpoint(stage_final(out, s.prune_from), t, s.d_ff,
                                                           _calibration(out, s.calibration_rows)),
                 f"{spec.name}: pruning {spec.prune_from}'s feed-forward to {spec.d_ff} units")
            continue
        if spec.upcycle_from is not None:
            detail = f", granularity {spec.granularity}" if spec.granularity > 1 else ""
            detail += f", drop rate {spec.drop_rate:g}" if spec.drop_rate else ""
            step(spec.name, lambda t=target: Checkpoint.is_checkpoint(t),
                 lambda s=spec, t=target: upcycle_checkpoint(
                     stage_final(out, s.upcycle_from), t, s.experts, s.top_k, granularity=s.granularity,
                     drop_rate=s.drop_rate, router_init=s.router_init),
                 f"{spec.name}: upcycling {spec.upcycle_from} to {spec.experts} experts top-{spec.top_k}{detail}")
            continue
        if spec.window_from is not None:
            step(spec.name, lambda t=target: Checkpoint.is_checkpoint(t),
                 lambda s=spec, t=target: window_checkpoint(stage_final(out, s.window_from), t, s.window, s.n_global),
                 f"{spec.name}: windowing {spec.window_from} to {spec.window} positions + {spec.n_global} sinks")
            continue
        cfg = stage_config(recipe, spec, out)
        if _trained(out / spec.name, cfg.steps):
            continue  # finished: not even its model and teacher are loaded again
        say(progress, f"[recipe] {spec.name}: {cfg.objective}, {cfg.steps} steps")
        timed(out, info.is_main, spec.name,
              lambda c=cfg, s=spec: Trainer(c, out / s.name, show_progress=progress).run(resume=True))
    for spec in recipe.stages:
        if spec.window_from is not None:
            step(f"{spec.name} long-range", lambda s=spec: not _missing_long_range(recipe, out, s),
                 lambda s=spec: score_long_range(recipe, out, s, progress),
                 f"{spec.name}: held-out loss at {4 * spec.window} tokens")
    if not info.is_main:
        return out
    return write_report(recipe, out) if report else out


def _trained(run: Path, steps: int) -> bool:
    """A training stage whose run finished all its ``steps`` (its summary and final checkpoint written)."""
    from smallcode.model.checkpoint import Checkpoint

    summary = run / "summary.json"
    return (summary.is_file() and json.loads(summary.read_text()).get("steps") == steps
            and Checkpoint.is_checkpoint(run / "final"))


def timed(out: Path, main: bool, name: str, fn: Callable[[], Any]) -> Any:
    """``timed_step`` in the first process; just ``fn()`` in the others (one writer of the times)."""
    return timed_step(out, name, fn) if main else fn()


def _wait_for(done: Callable[[], bool], poll_s: float = 2.0) -> None:
    # torchrun stops every process when the first one fails, so this never waits on a dead writer
    while not done():
        time.sleep(poll_s)


def _import(source: str, target: Path, progress: bool) -> Path:
    from smallcode.export.hf_import import import_hf

    return import_hf(source, target, progress=progress)


def _copy_tokenizer(checkpoint: Path, tok_dir: Path) -> None:
    """The imported model's tokenizer files, unchanged, as the recipe's ``tokenizer/``."""
    src = checkpoint / TOKENIZER_FILE
    if not src.is_file():
        raise ConfigError(f"{checkpoint}: the imported model has no {TOKENIZER_FILE}; the recipe tokenises its "
                          "corpus with the model's own tokenizer, so the Hugging Face directory must hold one")
    from smallcode.model.checkpoint import copy_hf_tokenizer_files

    with atomic_dir(tok_dir) as tmp:
        shutil.copyfile(src, tmp / TOKENIZER_FILE)
        copy_hf_tokenizer_files(checkpoint, tmp)


def descendants(recipe: RecipeConfig, name: str) -> list[StageSpec]:
    """The stages whose model comes from stage ``name``'s, directly or through others (in order)."""
    lineage, found = {name}, []
    for spec in recipe.stages:
        if spec.parent in lineage:
            lineage.add(spec.name)
            found.append(spec)
    return found


def _long_range_models(recipe: RecipeConfig, out: Path, spec: StageSpec) -> dict[str, Path]:
    """What a window stage's ``window.json`` scores: its parent ("before"), itself ("after"), then every
    later stage built on it whose model exists, by name."""
    assert spec.window_from is not None
    models = {"before": stage_final(out, spec.window_from), "after": out / spec.name}
    for later in descendants(recipe, spec.name):
        models[later.name] = stage_final(out, later.name)
    return models


def _missing_long_range(recipe: RecipeConfig, out: Path, spec: StageSpec) -> list[str]:
    from smallcode.model.checkpoint import Checkpoint
    from smallcode.train.window import read_window_report

    have = read_window_report(out / spec.name).get("losses", {})
    models = _long_range_models(recipe, out, spec)
    return [k for k, p in models.items() if k not in have and Checkpoint.is_checkpoint(p)]


def score_long_range(recipe: RecipeConfig, out: Path, spec: StageSpec, progress: bool = True) -> dict[str, Any]:
    """Fill in the window stage's ``window.json``: the loss at 4 x window tokens of every model it tracks."""
    import torch

    from smallcode.model.checkpoint import Checkpoint
    from smallcode.train.window import long_range_loss, read_window_report, write_window_report

    report = read_window_report(out / spec.name) or {"window": spec.window, "n_global": spec.n_global,
                                                    "seq_len": 4 * spec.window, "losses": {}}
    models = _long_range_models(recipe, out, spec)
    for key in _missing_long_range(recipe, out, spec):
        say(progress, f"[recipe] {spec.name}: loss of {key} at {4 * spec.window} tokens")
        model = Checkpoint.open(models[key]).load_model(device="cuda" if torch.cuda.is_available() else "cpu")
        r = long_range_loss(model, out / "shards", 4 * spec.window, rows=spec.long_range_rows,
                            batch_size=max(1, 8192 // (4 * spec.window)))  # ~8K tokens a forward pass
        del model  # one model at a time on the device
        report["losses"][key] = r["loss"]
        report |= {"rows": r["rows"], "tokens": r["tokens"]}
        write_window_report(out / spec.name, report)
    return report


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
    line_file = out / LINES_FILE
    line_scores = json.loads(line_file.read_text()).get("stages", {}) if line_file.is_file() else {}
    rows = []
    for spec in recipe.stages:
        model_cfg = Checkpoint.open(stage_final(out, spec.name)).config
        size = f"{model_cfg.num_params() / 1e6:.1f}M / {model_cfg.num_active_params() / 1e6:.1f}M"
        bpb = f"{held[spec.name]['bits_per_byte']:.3f}" if spec.name in held else "-"
        parent = spec.parent
        if spec.name in held and parent in held:  # what the stage bought
            bpb += f" ({held[spec.name]['bits_per_byte'] - held[parent]['bits_per_byte']:+.3f})"
        if spec.import_from is not None:
            rows.append((spec.name, f"import `{recipe.import_source()}` (Hugging Face)", size, "-", "-", "-",
                         "the imported model's function", bpb, times.get(spec.name, 0.0)))
            continue
        if spec.window_from is not None:
            rows.append((spec.name, f"window {spec.window_from}: {spec.window} positions + {spec.n_global} sinks",
                         size, "-", "-", "-", "its parent's up to the window", bpb, times.get(spec.name, 0.0)))
            continue
        if spec.upcycle_from is not None:
            fine = f", granularity {spec.granularity}" if spec.granularity > 1 else ""
            drop = f", drop rate {spec.drop_rate:g}" if spec.drop_rate else ""
            same = "same function as its parent" if not spec.drop_rate else "its parent's, partly re-initialised"
            rows.append((spec.name, f"upcycle {spec.upcycle_from} ({spec.experts} experts, top-{spec.top_k}{fine}"
                         f"{drop})", size, "-", "-", "-", same, bpb, times.get(spec.name, 0.0)))
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
    half = line_scores or any("report_bits_per_byte" in v for v in held.values())
    if half:  # beside bits/byte: the reporting half alone, and what a typist would get from each stage
        rows = [(*r[:-1], _line_cell(line_scores.get(r[0]), held.get(r[0], {}).get("report_bits_per_byte")), r[-1])
                for r in rows]
    total = sum(times.values())
    last = stage_final(out, recipe.stages[-1].name) if recipe.stages else out / "<checkpoint>"
    data_dir = f"--data-dir {recipe.mbpp} " if recipe.mbpp is not None else ""
    steps = ", ".join(f"{k} {v:.0f} s" for k, v in times.items() if k not in {s.name for s in recipe.stages})
    lines = [
        "# smallcode recipe report", "",
        f"Run directory `{out}`; total wall time of the steps {total / 60:.1f} min ({steps}).", "",
        "| stage | what | params total / active | steps | tokens | tokens/s | validation loss (nats/token) "
        "| held-out bits/byte (change from its parent) |"
        + (" reporting half: bits/byte / next-line exact match / chars saved per 100 |" if half else "")
        + " wall s |",
        "|---|---|---|---|---|---|---|---|" + ("---|" if half else "") + "---|",
        *[f"| {' | '.join(r[:-1])} | {r[-1]:.0f} |" for r in rows], "",
    ]
    if held:
        lines += [f"Held-out bits per byte: third-party Python never trained on ({_held_out_fingerprint(out)}).", ""]
    if half:
        report_set = json.loads((out / "heldout.json").read_text()).get("report_set", "?")
        lines += [f"Reporting half: the held-out packages no setting was chosen on ({report_set})."]
        if line_scores:
            meta = json.loads(line_file.read_text())
            lines += [f"Next line: {meta.get('cursors')} cursors in its files, completed greedily through the "
                      "language server's path, in-file (`smallcode eval lines`; each stage's run in `lines/`)."]
        lines += [""]
    lines += _window_lines(recipe, out)
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
        "- Scale up: the same stages for the flagship are in `configs/smallcode-16b-a4b/` (torchrun + FSDP2)"
        + ("; for a 1.5B imported model in `configs/import/`." if recipe.imports else "."),
    ]
    report = out / "report.md"
    atomic_write_text(report, "\n".join(lines) + "\n")
    _plot_stages(out, [s.name for s in recipe.stages if s.config is not None], out / "report.png", read_metrics)
    return report


LINES_FILE = "lines.json"
"""Every stage's next-line completion scores, written by the main job (``pipeline.score_lines``)."""


def _line_cell(scores: dict[str, Any] | None, half_bpb: float | None) -> str:
    bpb = "-" if half_bpb is None else f"{half_bpb:.3f}"
    if scores is None:
        return f"{bpb} / - / -"
    return f"{bpb} / {100 * scores['exact_match']:.1f}% / {scores['chars_saved_per_100']:.1f}"


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


def _window_lines(recipe: RecipeConfig, out: Path) -> list[str]:
    """Each window stage's long-range losses: the full-attention parent, the windowed model, what follows."""
    from smallcode.train.window import read_window_report

    lines: list[str] = []
    for spec in recipe.stages:
        report = read_window_report(out / spec.name) if spec.window_from is not None else {}
        losses = report.get("losses", {})
        if "before" not in losses:
            continue
        base = losses["before"]
        lines += [f"## Long range after windowing (`{spec.name}`)", "",
                  f"Held-out loss on {report['rows']} validation sequences of {report['seq_len']} tokens (4x the "
                  f"window of {report['window']} + {report['n_global']} sink tokens), nats/token:", "",
                  "| model | loss | relative to full attention |", "|---|---|---|"]
        names = {"before": f"`{spec.window_from}` (full attention)", "after": f"`{spec.name}` (windowed, no training)"}
        for key, loss in losses.items():
            lines.append(f"| {names.get(key, f'`{key}`')} | {loss:.4f} | {loss / base - 1:+.2%} |")
        lines.append("")
    return lines


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
