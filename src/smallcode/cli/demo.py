"""``smallcode demo``: the foundation's end-to-end run (see ``smallcode.demo``)."""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.command()
@click.option("--out", type=click.Path(path_type=Path), default=Path("runs/demo"), show_default=True)
@click.option("--preset", default="nano", show_default=True)
@click.option("--steps", type=int, default=120, show_default=True)
@click.option("--batch", type=int, default=8, show_default=True)
@click.option("--seq-len", type=int, default=256, show_default=True)
def demo(out: Path, preset: str, steps: int, batch: int, seq_len: int) -> None:
    """Train PRESET briefly on the standard library's sources, checkpoint it, reload it."""
    from smallcode.cli.params import params
    from smallcode.demo import run_demo

    out.mkdir(parents=True, exist_ok=True)
    report = run_demo(out, preset=preset, steps=steps, batch=batch, seq_len=seq_len)
    click.get_current_context().invoke(params, preset=preset, as_json=False, overrides=())
    click.echo(json.dumps(report))
