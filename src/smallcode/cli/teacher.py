"""``smallcode teacher-cache``: run a teacher once over a run's samples and cache its top-k log-probs. Wiring only."""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.command("teacher-cache")
@click.argument("teacher", type=click.Path(path_type=Path))
@click.option("--data", "data_dir", type=click.Path(path_type=Path), required=True,
              help="token shard directory (smallcode data prepare)")
@click.option("--steps", type=int, required=True, help="training steps the cache must cover")
@click.option("--batch-size", type=int, required=True, help="training batch size per rank")
@click.option("--seq-len", type=int, required=True, help="training sequence length")
@click.option("--seed", type=int, default=0, show_default=True, help="training data seed")
@click.option("--world-size", type=int, default=1, show_default=True, help="training processes")
@click.option("--top-k", type=int, default=32, show_default=True, help="teacher log-probs kept per token")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="cache directory (resumes if partial)")
@click.option("--teacher-batch", type=int, default=8, show_default=True, help="rows per teacher forward")
@click.option("--device", default="cpu", show_default=True)
@click.option("--quiet", is_flag=True, help="no progress bar")
def teacher_cache(teacher: Path, data_dir: Path, steps: int, batch_size: int, seq_len: int, seed: int,
                  world_size: int, top_k: int, out: Path, teacher_batch: int, device: str, quiet: bool) -> None:
    """Cache TEACHER's top-k log-probs for every sample a run over --data visits in its first --steps steps."""
    from smallcode.data import ShardLoader
    from smallcode.train.teacher import load_teacher
    from smallcode.train.teacher_cache import build_teacher_cache

    loader = ShardLoader(data_dir, batch_size, seq_len, seed, world_size=world_size)
    model = load_teacher(teacher, loader.tokenizer.vocab_size, loader.tokenizer_hash, device)
    header = build_teacher_cache(model, loader, steps, out, top_k, batch_size=teacher_batch, progress=not quiet)
    total = header["bytes_per_token"] * header["n_samples"] * header["seq_len"]
    click.echo(f"{out}: {header['n_samples']} samples of {header['seq_len']} tokens, top-{header['top_k']}: "
               f"{header['bytes_per_token']:.2f} bytes per token ({total / 2**20:.1f} MiB)")
    click.echo(json.dumps(header, indent=1))
