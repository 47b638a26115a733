"""``smallcode export hf CKPT OUT``: a checkpoint in another runtime's format (one subcommand per format).

Thin wiring around :func:`smallcode.export.hf.export_hf`; prints what the directory loads as.
"""

from __future__ import annotations

from pathlib import Path

import click


@click.group()
def export() -> None:
    """Write a checkpoint in a format other runtimes load."""


@export.command("hf")
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--force", is_flag=True, help="Replace OUT if it exists and is not empty.")
def hf(checkpoint: Path, out: Path, force: bool) -> None:
    """Write CHECKPOINT as a Hugging Face transformers model directory OUT (weights, config, tokenizer)."""
    from smallcode.export.hf import export_hf, hf_kind
    from smallcode.model.checkpoint import Checkpoint

    export_hf(checkpoint, out, force=force)  # ExportError: one line from cli.main, like every verb
    kind = hf_kind(Checkpoint.open(checkpoint).config)
    remote = " (AutoModelForCausalLM with trust_remote_code=True)" if kind == "SmallCodeForCausalLM" else ""
    click.echo(f"wrote {out}: loads as {kind}{remote}")
