"""``smallcode export hf|onnx CKPT OUT``: a checkpoint in another runtime's format (one subcommand per format).

Thin wiring around :func:`smallcode.export.hf.export_hf` and :func:`smallcode.export.onnx.export_onnx`;
prints what the directory loads as.
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


@export.command("onnx")
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--quantize", type=click.Choice(["int8", "int4"]), default=None,
              help="Weights as int8 (dynamic quantisation) or int4 (weight-only, blocks of 32); default float32.")
@click.option("--force", is_flag=True, help="Replace OUT if it exists and is not empty.")
def onnx(checkpoint: Path, out: Path, quantize: str | None, force: bool) -> None:
    """Write CHECKPOINT as an ONNX Runtime directory OUT (decoder graph with its KV cache, tokenizer, config)."""
    from smallcode.export.onnx import MODEL_FILE, OPSET, export_onnx

    export_onnx(checkpoint, out, quantize=quantize, force=force)  # type: ignore[arg-type]
    size = (out / MODEL_FILE).stat().st_size / 2**20
    click.echo(f"wrote {out}: {MODEL_FILE} {size:.1f} MiB, opset {OPSET}, {quantize or 'float32'} weights; "
               f"run it with smallcode generate {out} PROMPT")
