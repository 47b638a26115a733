"""``smallcode generate`` (streams a continuation) and ``smallcode complete`` (fill-in-the-middle).

Both open the model directory with ``runtime.load.open_engine`` (a checkpoint, an ONNX export or a
Hugging Face directory); ``complete`` lays the prompt out as the server and the LSP do
(``Engine.complete``: the tokenizer's ``PromptFormat.fim``)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from smallcode.cli.options import config_options
from smallcode.runtime.sampling import GENERATE_DEFAULTS, SamplingParams

# The sampling options are SamplingParams' fields (name, type, help written once, there); their
# defaults are GENERATE_DEFAULTS (measured: a small model's greedy output loops), not the API's greedy.
sampling_options = config_options(SamplingParams, exclude=["ignore_eos"], param="params", defaults=GENERATE_DEFAULTS)
device_option = click.option("--device", default="cpu", show_default=True, help="Where the model runs.")
runtime_option = click.option(
    "--runtime", type=click.Choice(["torch", "onnx", "hf"]), default=None,
    help="torch: CHECKPOINT is a smallcode checkpoint; onnx: a directory from smallcode export onnx; hf: a "
         "Hugging Face model directory. Default: whichever CHECKPOINT is.")


@click.command()
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.argument("prompt")
@sampling_options
@device_option
@runtime_option
def generate(checkpoint: Path, prompt: str, device: str, runtime: str | None, params: SamplingParams) -> None:
    """Continue PROMPT with the model in CHECKPOINT, streaming text as it is decided."""
    from smallcode.runtime.load import open_engine

    engine = open_engine(checkpoint, device=device, runtime=runtime)  # type: ignore[arg-type]
    for delta in engine.stream(prompt, params):
        sys.stdout.write(delta)
        sys.stdout.flush()
    sys.stdout.write("\n")


@click.command()
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("--prefix-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True)
@click.option("--suffix-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None)
@sampling_options
@device_option
@runtime_option
def complete(checkpoint: Path, prefix_file: Path, suffix_file: Path | None, device: str, runtime: str | None,
             params: SamplingParams) -> None:
    """Print the code that belongs between the prefix file and the (optional) suffix file."""
    from smallcode.runtime.load import open_engine

    engine = open_engine(checkpoint, device=device, runtime=runtime)  # type: ignore[arg-type]
    suffix = suffix_file.read_text() if suffix_file else ""
    click.echo(engine.complete(prefix_file.read_text(), suffix, params)[0].text)
