"""``smallcode upcycle DENSE_CKPT --experts E --top-k K --out DIR``: a dense checkpoint into a MoE one.

``--granularity G`` cuts each feed-forward into G fine-grained experts (E and K multiples of G),
``--drop-rate R`` re-initialises a share R of every expert's hidden units (Drop-Upcycling),
``--router-init`` chooses the router's start (see :mod:`smallcode.train.upcycle`).

Thin wiring around :func:`smallcode.train.upcycle.upcycle_checkpoint`; prints the total and active
parameter counts of the parent and of the result.
"""

from __future__ import annotations

from pathlib import Path

import click

from smallcode.model.config import ModelConfig


def _sizes(config: ModelConfig) -> str:
    return (f"{config.num_params() / 1e6:.2f}M total, {config.num_active_params() / 1e6:.2f}M active, "
            f"{config.n_experts} expert(s) top-{config.top_k}")


@click.command()
@click.argument("dense_ckpt", type=click.Path(path_type=Path))
@click.option("--experts", "n_experts", type=int, required=True, help="Experts per layer (>= 2).")
@click.option("--top-k", "top_k", type=int, default=2, show_default=True, help="Experts each token is routed to.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), required=True, help="Checkpoint directory to write.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the fresh router weights.")
@click.option("--granularity", type=int, default=1, show_default=True,
              help="Fine-grained experts per feed-forward: each expert holds d_ff / G of its hidden units.")
@click.option("--drop-rate", type=float, default=0.0, show_default=True,
              help="Share of every expert's hidden units re-initialised (Drop-Upcycling); 0 keeps the function.")
@click.option("--router-init", type=click.Choice(["normal", "zero"]), default="normal", show_default=True,
              help="The router's start: seeded normal rows, or all zero (uniform gates; G = 1 only).")
def upcycle(dense_ckpt: Path, n_experts: int, top_k: int, out_dir: Path, seed: int, granularity: int,
            drop_rate: float, router_init: str) -> None:
    """Copy the dense feed-forward of DENSE_CKPT into every expert, add a fresh router, write --out."""
    from smallcode.model.checkpoint import Checkpoint
    from smallcode.train.upcycle import upcycle_checkpoint

    parent = Checkpoint.open(dense_ckpt).config
    click.echo(f"parent   {dense_ckpt}: {_sizes(parent)}")
    out = upcycle_checkpoint(dense_ckpt, out_dir, n_experts, top_k, seed=seed, granularity=granularity,
                             drop_rate=drop_rate, router_init=router_init)  # type: ignore[arg-type]
    child = Checkpoint.open(out).config
    click.echo(f"upcycled {out}: {_sizes(child)}")
