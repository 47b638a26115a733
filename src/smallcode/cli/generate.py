"""``smallcode generate`` (streams a continuation) and ``smallcode complete`` (fill-in-the-middle)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from smallcode.infer.sampling import SamplingParams


def sampling_options(f):  # noqa: ANN001, ANN201 - a click decorator
    for opt in reversed([
        click.option("--max-tokens", type=int, default=256, show_default=True),
        click.option("--temperature", type=float, default=0.0, show_default=True, help="0 = greedy"),
        click.option("--top-k", type=int, default=0, show_default=True),
        click.option("--top-p", type=float, default=1.0, show_default=True),
        click.option("--seed", type=int, default=None),
        click.option("--stop", multiple=True, help="Stop sequence (repeatable)."),
        click.option("--device", default="cpu", show_default=True),
    ]):
        f = opt(f)
    return f


def _params(max_tokens: int, temperature: float, top_k: int, top_p: float, seed: int | None,
            stop: tuple[str, ...]) -> SamplingParams:
    return SamplingParams(max_tokens=max_tokens, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed,
                          stop=list(stop))


@click.command()
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.argument("prompt")
@sampling_options
def generate(checkpoint: Path, prompt: str, device: str, **sampling: object) -> None:
    """Continue PROMPT with the model in CHECKPOINT, streaming text as it is decided."""
    from smallcode.infer.engine import Engine

    params = _params(**sampling)  # type: ignore[arg-type]
    engine = Engine.from_checkpoint(checkpoint, device=device)
    for delta in engine.stream(prompt, params):
        sys.stdout.write(delta)
        sys.stdout.flush()
    sys.stdout.write("\n")


@click.command()
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("--prefix-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True)
@click.option("--suffix-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None)
@sampling_options
def complete(checkpoint: Path, prefix_file: Path, suffix_file: Path | None, device: str, **sampling: object) -> None:
    """Print the code that belongs between the prefix file and the (optional) suffix file."""
    from smallcode.infer.engine import Engine

    params = _params(**sampling)  # type: ignore[arg-type]
    engine = Engine.from_checkpoint(checkpoint, device=device)
    suffix = suffix_file.read_text() if suffix_file else ""
    click.echo(engine.complete(prefix_file.read_text(), suffix, params)[0].text)
