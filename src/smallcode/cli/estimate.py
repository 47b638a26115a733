"""``smallcode estimate RECIPE``: tokens, FLOPs, GPU-hours and memory per GPU of a recipe, computed."""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.argument("recipe", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--gpus", type=int, help="GPUs (default: the recipe's `gpus`).")
@click.option("--peak-tflops", type=float, default=989.0, show_default=True,
              help="Dense bf16 peak of one GPU (H100 SXM: 989).")
@click.option("--mfu", type=float, default=0.35, show_default=True, help="Model FLOPs utilisation assumed.")
def estimate(recipe: Path, gpus: int | None, peak_tflops: float, mfu: float) -> None:
    """Estimate what every training stage of RECIPE costs, from its configs alone."""
    from smallcode.train.estimate import estimate_recipe, estimate_table
    from smallcode.train.recipe import RecipeConfig

    n = gpus or RecipeConfig.load(recipe).gpus
    click.echo(estimate_table(estimate_recipe(recipe, n, peak_tflops, mfu), n, peak_tflops, mfu))
