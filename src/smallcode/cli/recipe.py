"""``smallcode recipe RECIPE.yaml``: the whole main job, resumable (see ``smallcode.pipeline``).

Under torchrun every process trains; the first one alone also scores, samples, evaluates and reports
(``smallcode.train.recipe``, "Under torchrun")."""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.argument("recipe", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", help="Run directory (default: the recipe's `out`).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Change a recipe field (repeatable).")
@click.option("--quiet", is_flag=True, help="No progress output.")
def recipe(recipe: Path, out: str | None, overrides: tuple[str, ...], quiet: bool) -> None:
    """Run every step of RECIPE: tokenizer, shards, training stages, held-out scoring, samples, sandboxed
    evaluation, report. Re-running continues."""
    from smallcode.pipeline import run_main_job
    from smallcode.train.distributed import init_distributed
    from smallcode.train.recipe import RecipeConfig, run_recipe

    cfg = RecipeConfig.load(recipe)
    if overrides:
        cfg = cfg.with_overrides(list(overrides))
    if out:
        cfg = cfg.replace(out=out)
    if not init_distributed().is_main:
        run_recipe(cfg, progress=False, report=False)  # the training stages, together with the first process
        return
    report = run_main_job(cfg, progress=not quiet)
    click.echo(report.read_text())
    click.echo(f"report: {report}")
