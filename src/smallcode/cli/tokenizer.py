"""``smallcode tokenizer``: train a code tokenizer, and measure one. Wiring only.

Options taking several paths (``--corpus``, ``--files``) may be repeated, and any extra
positional paths are added to them, so ``--files a.py b.py dir/`` works as written.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click


def corpus_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--corpus`` (repeatable) plus extra positional paths, shared by every verb that reads a corpus."""
    fn = click.argument("more_corpus", nargs=-1)(fn)
    return click.option(
        "--corpus",
        "corpus",
        multiple=True,
        help="directory, glob, file or .jsonl (repeatable); default: the standard library",
    )(fn)


@click.group()
def tokenizer() -> None:
    """Train and measure the code tokenizer."""


@tokenizer.command("train")
@corpus_options
@click.option("--vocab-size", type=int, default=32768, show_default=True)
@click.option(
    "--out", type=click.Path(path_type=Path), required=True, help="directory to write tokenizer.json into"
)
@click.option("--scheme", default=None, help="pre-tokenisation scheme (default: the measured best)")
@click.option(
    "--hold-out/--no-hold-out",
    default=True,
    show_default=True,
    help="leave the repo suite's modules out of the embedded corpus (explicit corpora are taken as given)",
)
def train_cmd(
    corpus: tuple[str, ...],
    more_corpus: tuple[str, ...],
    vocab_size: int,
    out: Path,
    scheme: str | None,
    hold_out: bool,
) -> None:
    """Train a byte-level BPE tokenizer for code."""
    from smallcode.tokenizer import load_tokenizer, train_tokenizer
    from smallcode.tokenizer.pretokenize import DEFAULT_SCHEME

    path = train_tokenizer(
        list(corpus + more_corpus) or None,
        vocab_size,
        out,
        scheme=scheme or DEFAULT_SCHEME,
        held_out_modules=None if hold_out else frozenset(),
    )
    tok = load_tokenizer(path)
    report = json.loads((out / "train_report.json").read_text())
    click.echo(
        f"wrote {path}: vocab {tok.vocab_size}, {report['documents']} documents ({report['bytes']} bytes), "
        f"skipped {report['binary']} binary and {report['non_utf8']} non-UTF-8, "
        f"held out {report['held_out']} file(s); hash {tok.hash[:16]}"
    )


@tokenizer.command("stats")
@click.option("--tokenizer", "tokenizer_path", type=click.Path(path_type=Path), required=True)
@click.option("--files", "files", multiple=True, help="file, directory or glob (repeatable)")
@click.argument("more_files", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="print one JSON object instead of a table")
def stats_cmd(
    tokenizer_path: Path, files: tuple[str, ...], more_files: tuple[str, ...], as_json: bool
) -> None:
    """Bytes per token and tokens per line of a tokenizer over some files."""
    from smallcode.tokenizer import compression_stats, load_tokenizer
    from smallcode.tokenizer.train import iter_corpus_texts

    specs = list(files + more_files)
    if not specs:
        raise click.UsageError("give at least one file or directory with --files")
    tok = load_tokenizer(tokenizer_path)
    counts: dict[str, int] = {}
    texts = list(iter_corpus_texts(specs, counts))
    result = {
        **compression_stats(texts, tok.encode_batch).to_dict(),
        "skipped_binary": counts["binary"],
        "skipped_non_utf8": counts["non_utf8"],
        "tokenizer_hash": tok.hash,
    }
    if as_json:
        click.echo(json.dumps(result))
        return
    for key, value in result.items():
        click.echo(f"{key:>18}: {value}")
