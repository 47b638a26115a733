"""``smallcode upcycle DENSE_CKPT --experts E --top-k K --out DIR``: a dense checkpoint into a MoE one.

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
def upcycle(dense_ckpt: Path, n_experts: int, top_k: int, out_dir: Path, seed: int) -> None:
    """Copy the dense feed-forward of DENSE_CKPT into every expert, add a fresh router, write --out."""
    from smallcode.model.checkpoint import Checkpoint
    from smallcode.train.upcycle import upcycle_checkpoint

    parent = Checkpoint.open(dense_ckpt).config
    click.echo(f"parent   {dense_ckpt}: {_sizes(parent)}")
    out = upcycle_checkpoint(dense_ckpt, out_dir, n_experts, top_k, seed=seed)
    child = Checkpoint.open(out).config
    click.echo(f"upcycled {out}: {_sizes(child)}")
