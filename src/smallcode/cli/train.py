"""``smallcode train CONFIG``: run one training stage (see ``smallcode.train.trainer``).

Works the same as one process or under ``torchrun --nproc-per-node N -m smallcode.cli.main train ...``.
"""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.command()
@click.argument("config", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Run directory (checkpoints, metrics).")
@click.option("--resume", is_flag=True, help="Continue from the newest checkpoint in --out.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Change a config field, e.g. --set steps=50 --set data.seq_len=128 (repeatable).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def train(config: Path, out: Path, resume: bool, overrides: tuple[str, ...], quiet: bool) -> None:
    """Train one stage described by the YAML file CONFIG."""
    from smallcode.train.config import TrainConfig
    from smallcode.train.trainer import Trainer

    cfg = TrainConfig.load(config)
    if overrides:
        cfg = cfg.with_overrides(list(overrides))
    trainer = Trainer(cfg, out, show_progress=not quiet)
    result = trainer.run(resume=resume)
    if trainer.info.is_main:
        click.echo(json.dumps({"final": str(result.final), "steps": result.steps, "tokens": result.tokens,
                               "val_loss": result.val_loss, "skipped_steps": result.skipped_steps,
                               "wall_s": round(result.wall_s, 1)}))
