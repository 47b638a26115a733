"""``smallcode import hf DIR OUT``: a model from elsewhere as a smallcode checkpoint (one subcommand per source).

Thin wiring around :func:`smallcode.export.hf_import.import_hf`; prints what the checkpoint holds.
"""

from __future__ import annotations

from pathlib import Path

import click

DTYPES = ("as-stored", "float32", "bfloat16", "float16")


@click.group("import")
def import_() -> None:
    """Turn a model from another format into a smallcode checkpoint."""


@import_.command("hf")
@click.argument("src", metavar="DIR", type=click.Path(path_type=Path))
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--dtype", type=click.Choice(DTYPES), default="as-stored", show_default=True,
              help="Dtype of the written weights; as-stored keeps each tensor's.")
@click.option("--force", is_flag=True, help="Replace OUT if it exists and is not empty.")
@click.option("--progress/--no-progress", default=True, show_default=True, help="A progress bar per tensor.")
def hf(src: Path, out: Path, dtype: str, force: bool, progress: bool) -> None:
    """Write the Hugging Face model directory DIR (Llama, Mistral, Qwen2, Mixtral; safetensors, sharded or
    not) as the smallcode checkpoint OUT, with the model's own tokenizer files."""
    import torch

    from smallcode.export.hf_import import import_hf
    from smallcode.model.checkpoint import Checkpoint

    torch_dtype = None if dtype == "as-stored" else getattr(torch, dtype)
    import_hf(src, out, dtype=torch_dtype, force=force, progress=progress)  # HFImportError: one line from main
    ckpt = Checkpoint.open(out)
    c, extra = ckpt.config, ckpt.extra
    attention = "full attention" if c.window >= c.max_seq_len else f"window {c.window}"
    experts = f"{c.n_experts} experts top-{c.top_k}" if c.is_moe else "dense"
    click.echo(f"wrote {out}: {extra['imported_from']['architecture']} as smallcode, {c.num_params() / 1e6:.1f}M "
               f"params, {c.n_layers} layers, {experts}, {attention}, context {c.max_seq_len}")
    if extra.get("tokenizer_kind") != "huggingface":
        click.echo(f"note: {src} has no tokenizer.json, so the checkpoint has no tokenizer", err=True)
