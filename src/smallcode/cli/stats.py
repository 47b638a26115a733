"""``smallcode stats``: what the editor did with smallcode's completions, from the local feedback log."""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.command()
@click.option("--log", "log_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The feedback log (default: lsp-feedback.jsonl in the user's data directory).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
def stats(log_file: Path | None, as_json: bool) -> None:
    """Acceptance rate, accepted characters and latency percentiles of `smallcode lsp` completions."""
    from smallcode.lsp.feedback import default_log, read, summarize

    path = log_file or default_log()
    summary = summarize(read(path))
    if as_json:
        click.echo(json.dumps({"log": str(path), **summary}))
        return
    if not any(summary[k] for k in ("served", "shown", "accepted", "dismissed")):
        click.echo(f"no completions recorded yet in {path}")
        return
    rate = summary["acceptance_rate"]
    lat = summary["latency_ms"]
    click.echo(f"log: {path}")
    click.echo(f"served {summary['served']}, shown {summary['shown']}, accepted {summary['accepted']}, "
               f"dismissed {summary['dismissed']}")
    if rate is None:
        click.echo("acceptance rate: n/a (no completions shown yet)")
    else:
        of = "" if summary["rate_of"] == "shown" else " (of served: the editor reports no shown events)"
        click.echo(f"acceptance rate: {rate:.1%}{of}")
    click.echo(f"accepted characters: {summary['accepted_chars']}")
    if lat["p50"] is not None:
        click.echo(f"latency (ms): p50 {lat['p50']:.1f}, p90 {lat['p90']:.1f}, p99 {lat['p99']:.1f}")
