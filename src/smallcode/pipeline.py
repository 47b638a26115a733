"""The main job (``make run``, ``smallcode recipe``): train the recipe, then score and evaluate what it made.

``run_main_job(recipe)`` runs (or continues) the recipe's training steps (``smallcode.train.recipe``),
then, each step resumable and timed in ``recipe_times.json``:

* every stage's bits per byte on held-out third-party Python (``heldout.json``, ``eval/heldout.py``);
* every stage's next-line completion on the held-out set's reporting half (``lines.json``,
  ``eval/lines.py``: exact match and characters saved, through the language server's path);
* the final model's completions of fixed prompts, greedy and with ``generate``'s defaults
  (``samples.json``, ``eval/samples.py``);
* the final model's greedy pass@1 on the recipe's suites, generated and checked in the sandbox as
  ``smallcode eval run`` does (``eval/``);

and writes the report. This is the one module that imports both ``train`` and ``eval``: training
never imports the evaluation, so the recipe's own module knows only the files these steps leave.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from smallcode.fileio import atomic_write_text
from smallcode.train.recipe import (
    LINES_FILE,
    RecipeConfig,
    final_checkpoint,
    run_recipe,
    say,
    stage_final,
    timed_step,
    write_report,
)


def run_main_job(recipe: RecipeConfig, progress: bool = True) -> Path:
    """Train (or continue) every stage, then score, sample and evaluate; returns the report's path."""
    run_recipe(recipe, progress=progress, report=False)
    out = Path(recipe.out)
    if not recipe.stages:
        return write_report(recipe, out)
    final = final_checkpoint(recipe)
    if recipe.held_out:
        timed_step(out, "held-out", lambda: score_stages(recipe, out, progress))
    if recipe.held_out and recipe.line_cursors:
        timed_step(out, "lines", lambda: score_lines(recipe, out, progress))
    if not (out / "samples.json").is_file():
        say(progress, "[recipe] sampling the final model on fixed prompts")
        timed_step(out, "samples", lambda: write_samples(final, out / "samples.json"))
    if recipe.eval_suites and not (out / "eval" / "summary.json").is_file():
        say(progress, f"[recipe] evaluating the final model in the sandbox: {', '.join(recipe.eval_suites)}")
        timed_step(out, "eval", lambda: evaluate_final(recipe, final, out / "eval", progress))
    return write_report(recipe, out)


def score_stages(recipe: RecipeConfig, out: Path, progress: bool = True) -> dict[str, Any]:
    """Bits per byte of every stage's final model on the held-out set, and on its reporting half alone
    (``eval.heldout``'s split: the packages no setting was chosen on), kept in ``heldout.json``.

    A stage already scored on the same held-out set (same fingerprint) is not scored again.
    """
    from smallcode.eval.heldout import bits_per_byte, held_out_set
    from smallcode.model.checkpoint import Checkpoint

    held = held_out_set(bytes_per_package=recipe.held_out_bytes)
    half = held_out_set(bytes_per_package=recipe.held_out_bytes, split="report")
    path = out / "heldout.json"
    data: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}
    if data.get("set") != held.fingerprint:
        data = {"set": held.fingerprint, "stages": {}}
    if data.get("report_set") != half.fingerprint:
        data["report_set"] = half.fingerprint
        for row in data["stages"].values():
            row.pop("report_bits_per_byte", None)
    for spec in recipe.stages:
        row = data["stages"].get(spec.name, {})
        if "bits_per_byte" in row and "report_bits_per_byte" in row:
            continue
        say(progress, f"[recipe] {spec.name}: bits per byte on held-out code ({held.n_bytes} bytes)")
        ckpt = Checkpoint.open(stage_final(out, spec.name))
        model, tokenizer = ckpt.load_model(), ckpt.load_tokenizer()
        if "bits_per_byte" not in row:
            r = bits_per_byte(model, tokenizer, held.texts)
            row = {"bits_per_byte": round(r.bits_per_byte, 4), "nats_per_token": round(r.nats_per_token, 4),
                   "tokens": r.tokens}
        row["report_bits_per_byte"] = round(bits_per_byte(model, tokenizer, half.texts).bits_per_byte, 4)
        data["stages"][spec.name] = row
        atomic_write_text(path, json.dumps(data, indent=2) + "\n")
    return data


def score_lines(recipe: RecipeConfig, out: Path, progress: bool = True) -> dict[str, Any]:
    """Next-line completion of every stage's final model on ``recipe.line_cursors`` cursors of the
    held-out set's reporting half (``eval lines``, in-file), kept in ``lines.json``; each stage's run
    (``lines/<stage>``) resumes, and a stage already scored with the same settings is not asked again."""
    from smallcode.eval.lines import LinesSettings, held_out_tasks, run_lines
    from smallcode.lsp.models import LocalModel

    settings = LinesSettings(split="report", n=recipe.line_cursors)
    tasks, fingerprint, _ = held_out_tasks(settings)
    path = out / LINES_FILE
    data: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}
    if data.get("set") != fingerprint or data.get("cursors") != len(tasks):
        data = {"set": fingerprint, "cursors": len(tasks), "split": "report",
                "packages": sorted({t.package for t in tasks}), "stages": {}}
    for spec in recipe.stages:
        if spec.name in data["stages"]:
            continue
        say(progress, f"[recipe] {spec.name}: next-line completion on {len(tasks)} held-out cursors")
        final = stage_final(out, spec.name)
        summary = run_lines(tasks, lambda final=final: LocalModel(final, max_batch=1), settings,
                            out / "lines" / spec.name, str(final), held_out=fingerprint, progress=progress)
        data["stages"][spec.name] = {k: summary["all"][k] for k in
                                     ("exact_match", "edit_similarity", "chars_saved_per_100", "latency_p50_ms")}
        atomic_write_text(path, json.dumps(data, indent=2) + "\n")
    return data


def write_samples(checkpoint: Path, path: Path) -> list[dict[str, Any]]:
    """The model's completions of the fixed prompts, greedy and with ``generate``'s default settings."""
    from smallcode.eval.samples import sample_prompts
    from smallcode.runtime.engine import Engine
    from smallcode.runtime.sampling import GENERATE_DEFAULTS, SamplingParams

    engine = Engine.from_checkpoint(checkpoint)
    rows = []
    for label, params in (("greedy", SamplingParams(max_tokens=GENERATE_DEFAULTS.max_tokens)),
                          ("default", GENERATE_DEFAULTS.replace(seed=0))):
        for smp in sample_prompts(engine, params):
            rows.append({"settings": label, "prompt": smp.prompt, "completion": smp.completion,
                         "distinct_4": round(smp.distinct_4, 3)})
    atomic_write_text(path, json.dumps(rows, indent=2) + "\n")
    return rows


def evaluate_final(recipe: RecipeConfig, checkpoint: Path, out_dir: Path, progress: bool = True) -> dict[str, Any]:
    """Greedy pass@1 of ``checkpoint`` on the recipe's suites, run and checked as ``smallcode eval run`` does."""
    from smallcode.backends import open_backend
    from smallcode.eval.runner import RunConfig, evaluate, load_tasks

    # no bandit scan here (it is `smallcode eval run`'s, and would cost the recipe's time budget)
    cfg = RunConfig(suites=list(recipe.eval_suites), max_tokens=recipe.eval_max_tokens, k=[1],
                    data_dir=recipe.mbpp, generate_batch=16, security_scan=False)
    tasks = load_tasks(cfg.suites, cfg.data_dir, recipe.eval_limit, None)
    backend = open_backend(checkpoint, kinds=("smallcode",))
    return evaluate(tasks, backend, cfg, out_dir, backend.name, progress=progress)


