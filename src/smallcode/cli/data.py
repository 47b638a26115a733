"""``smallcode data``: prepare token shards from raw files, and verify them. Wiring only."""

from __future__ import annotations

import json
from pathlib import Path

import click

from smallcode.cli.tokenizer import corpus_options


@click.group()
def data() -> None:
    """Build and check token shards."""


@data.command("prepare")
@corpus_options
@click.option(
    "--tokenizer",
    "tokenizer_path",
    type=click.Path(path_type=Path),
    required=True,
    help="directory with tokenizer.json",
)
@click.option("--out", type=click.Path(path_type=Path), required=True, help="shard directory to create")
@click.option(
    "--config", "config_path", type=click.Path(path_type=Path), default=None, help="PrepareConfig YAML/JSON"
)
@click.option(
    "--set", "overrides", multiple=True, help="override a config field, e.g. --set val_fraction=0.05"
)
@click.option(
    "--overwrite", is_flag=True, help="replace --out if it exists (only once the new one is complete)"
)
@click.option("--quiet", is_flag=True, help="no progress bars")
def prepare_cmd(
    corpus: tuple[str, ...],
    more_corpus: tuple[str, ...],
    tokenizer_path: Path,
    out: Path,
    config_path: Path | None,
    overrides: tuple[str, ...],
    overwrite: bool,
    quiet: bool,
) -> None:
    """Filter, decontaminate, deduplicate, split, tokenise and pack a corpus into shards."""
    from smallcode.data.build import prepare
    from smallcode.data.config import PrepareConfig
    from smallcode.data.shards import REMOVED_FILE

    cfg = PrepareConfig.load(config_path) if config_path else PrepareConfig()
    if overrides:
        cfg = cfg.with_overrides(list(overrides))
    s = prepare(
        list(corpus + more_corpus) or None, tokenizer_path, out, cfg, overwrite=overwrite, progress=not quiet
    )
    dropped = ", ".join(f"{k} {v}" for k, v in s["dropped"].items() if v) or "none"
    click.echo(f"{out}: {s['files']} files, {s['documents']} documents, kept {s['kept']}")
    click.echo(
        f"  dropped: {dropped}; exact duplicates {s['exact_duplicates']}, near duplicates {s['near_duplicates']}"
    )
    click.echo(
        f"  held out {s['held_out']} file(s) of the repo suite's modules, "
        f"decontaminated {s['dropped']['decontaminated']} document(s); listed in {out / REMOVED_FILE}"
    )
    for split in ("train", "validation"):
        d = s[split]
        click.echo(f"  {split}: {d['documents']} documents, {d['tokens']} tokens, {d['shards']} shard(s)")
    click.echo(f"  seconds: {json.dumps(s['seconds'])}")


@data.command("verify")
@click.argument("directory", type=click.Path(path_type=Path))
def verify_cmd(directory: Path) -> None:
    """Check every shard of a directory against its header and checksum."""
    from smallcode.data.shards import verify_directory

    tokens = verify_directory(directory)
    click.echo(f"{directory}: ok ({', '.join(f'{k} {v} tokens' for k, v in tokens.items())})")
