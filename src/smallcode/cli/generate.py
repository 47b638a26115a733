"""``smallcode generate`` (streams a continuation) and ``smallcode complete`` (fill-in-the-middle).

Both open the model directory with ``runtime.load.open_engine`` (a checkpoint, an ONNX export or a
Hugging Face directory); ``complete`` lays the prompt out as the server and the LSP do
(``Engine.complete``: the tokenizer's ``PromptFormat.fim``)."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from smallcode.cli.options import config_options
from smallcode.runtime.sampling import GENERATE_DEFAULTS, SamplingParams

# The sampling options are SamplingParams' fields (name, type, help written once, there); their
# defaults are GENERATE_DEFAULTS (measured: a small model's greedy output loops), not the API's greedy.
sampling_options = config_options(SamplingParams, exclude=["ignore_eos"], param="params", defaults=GENERATE_DEFAULTS)
# complete is an editor's completion: a loop that repeats itself is cut (--no-stop-loops keeps it).
complete_sampling_options = config_options(SamplingParams, exclude=["ignore_eos"], param="params",
                                           defaults=GENERATE_DEFAULTS.replace(stop_loops=True))
device_option = click.option("--device", default="cpu", show_default=True, help="Where the model runs.")
runtime_option = click.option(
    "--runtime", type=click.Choice(["torch", "onnx", "hf"]), default=None,
    help="torch: CHECKPOINT is a smallcode checkpoint; onnx: a directory from smallcode export onnx; hf: a "
         "Hugging Face model directory. Default: whichever CHECKPOINT is.")




def speculate_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--speculate ngram|draft:DIR`` and ``--speculate-k K``, handed to the command as one ``speculate``
    (a ``runtime.speculative.Speculation``, or None); a value the settings refuse is a usage error."""

    @click.option("--speculate", "speculate_text", default=None, metavar="ngram|draft:DIR",
                  help="Speculative decoding: 'ngram' (prompt lookup) or 'draft:DIR' (a draft model with the same "
                       "tokenizer); greedy output is unchanged, sampled output keeps its distribution.")
    @click.option("--speculate-k", default=8, show_default=True, type=int,
                  help="Most tokens proposed per step (1-16; each row adapts below it).")
    @functools.wraps(command)
    def wrapped(*args: Any, speculate_text: str | None, speculate_k: int, **kwargs: Any) -> Any:
        from smallcode.config import ConfigError
        from smallcode.runtime.speculative import Speculation

        speculate = None
        if speculate_text is not None:
            try:
                speculate = Speculation.parse(speculate_text, k=speculate_k)
            except ConfigError as e:
                raise click.UsageError(str(e)) from e
        return command(*args, speculate=speculate, **kwargs)

    return wrapped


@click.command()
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.argument("prompt")
@sampling_options
@device_option
@runtime_option
@speculate_options
def generate(checkpoint: Path, prompt: str, device: str, runtime: str | None, params: SamplingParams,
             speculate: Any) -> None:
    """Continue PROMPT with the model in CHECKPOINT, streaming text as it is decided."""
    from smallcode.runtime.load import open_engine

    engine = open_engine(checkpoint, device=device, runtime=runtime, speculate=speculate)  # type: ignore[arg-type]
    for delta in engine.stream(prompt, params):
        sys.stdout.write(delta)
        sys.stdout.flush()
    sys.stdout.write("\n")


@click.command()
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("--prefix-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True)
@click.option("--suffix-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None)
@complete_sampling_options
@device_option
@runtime_option
@speculate_options
def complete(checkpoint: Path, prefix_file: Path, suffix_file: Path | None, device: str, runtime: str | None,
             params: SamplingParams, speculate: Any) -> None:
    """Print the code that belongs between the prefix file and the (optional) suffix file."""
    from smallcode.runtime.load import open_engine

    engine = open_engine(checkpoint, device=device, runtime=runtime, speculate=speculate)  # type: ignore[arg-type]
    suffix = suffix_file.read_text() if suffix_file else ""
    click.echo(engine.complete(prefix_file.read_text(), suffix, params)[0].text)
