"""``smallcode demo``: the foundation's end-to-end run (see ``smallcode.demo``)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from smallcode.demo import DEMO_BYTES


@click.command()
@click.option("--out", type=click.Path(path_type=Path), default=Path("runs/demo"), show_default=True,
              help="Where the tokenizer, shards, training run and checkpoint go (each run replaces them).")
@click.option("--preset", default="nano", show_default=True, help="The model size (tiny is the smallest).")
@click.option("--steps", type=click.IntRange(1), default=120, show_default=True,
              help="Training steps: most of the run's time.")
@click.option("--batch", type=click.IntRange(1), default=8, show_default=True, help="Sequences per step.")
@click.option("--seq-len", type=click.IntRange(1), default=256, show_default=True, help="Tokens per sequence.")
@click.option("--corpus-bytes", type=click.IntRange(1), default=DEMO_BYTES, show_default=True,
              help="How much of the standard library is read and tokenized (the shards take seconds per MB).")
def demo(out: Path, preset: str, steps: int, batch: int, seq_len: int, corpus_bytes: int) -> None:
    """Train PRESET briefly on the standard library's sources, checkpoint it, reload it.

    With the defaults this takes about 3 min on 2 CPU cores (193 s measured on 2 cores shared with
    other jobs): about 20 s for the tokenizer, the shards and the loads, then the --steps training
    steps, 0.6 s each on free cores and up to 5 s on busy ones. Fewer --steps shorten it in
    proportion; --preset tiny --steps 30 --batch 4 --seq-len 64 --corpus-bytes 1000000 takes seconds (a
    smoke test: that model learns little). Then `smallcode generate OUT/checkpoint PROMPT` runs the checkpoint."""
    from smallcode.cli.params import params
    from smallcode.demo import run_demo

    out.mkdir(parents=True, exist_ok=True)
    report = run_demo(out, preset=preset, steps=steps, batch=batch, seq_len=seq_len, corpus_bytes=corpus_bytes)
    click.get_current_context().invoke(params, preset=preset, as_json=False, overrides=())
    click.echo(json.dumps(report))
