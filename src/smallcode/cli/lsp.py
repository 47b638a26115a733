"""``smallcode lsp``: the language server over stdio (inline completion in any LSP editor).

Give the model once: ``--model DIR`` (a smallcode checkpoint or its ONNX export, run in this process)
or ``--endpoint URL`` (``smallcode serve`` or any server with ``/infill`` or ``/v1/completions``).
stdout carries the protocol; logs go to stderr. The workspace the editor opens is indexed for
repository context (``smallcode.retrieval``) unless ``--no-repo-context`` is given.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import click

from smallcode.cli.generate import speculate_options


@click.command()
@click.option("--model", "model_dir", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="A smallcode checkpoint (or ONNX export) run in this process.")
@click.option("--endpoint", default=None, help="A completion server's base URL, e.g. http://127.0.0.1:8080.")
@click.option("--api-key", envvar="SMALLCODE_API_KEY", default=None,
              help="Bearer token for --endpoint (default: $SMALLCODE_API_KEY).")
@click.option("--device", default="cpu", show_default=True, help="Where --model runs.")
@click.option("--max-tokens", default=64, show_default=True, type=click.IntRange(1),
              help="Most tokens of a completion the user asks for.")
@click.option("--auto-max-tokens", default=16, show_default=True, type=click.IntRange(1),
              help="Most tokens of a completion triggered while typing.")
@click.option("--feedback-log", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The feedback log (default: lsp-feedback.jsonl in the user's data directory).")
@click.option("--repo-context/--no-repo-context", default=True, show_default=True,
              help="Index the workspace's Python files and add the definitions and passages a completion "
                   "needs to its prompt (local only; initializationOptions repoContext does the same).")
@click.option("--log-level", default="warning", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]), help="Logging on stderr.")
@speculate_options
def lsp(model_dir: Path | None, endpoint: str | None, api_key: str | None, device: str, max_tokens: int,
        auto_max_tokens: int, feedback_log: Path | None, repo_context: bool, log_level: str,
        speculate: Any) -> None:
    """Run the language server on stdin/stdout (--model DIR or --endpoint URL)."""
    if (model_dir is None) == (endpoint is None):
        raise click.UsageError("give the model once: --model DIR or --endpoint URL")
    if speculate is not None and endpoint is not None:
        raise click.UsageError("--speculate is for --model; a server speculates by its own --speculate")
    logging.basicConfig(level=log_level.upper(), format="smallcode-lsp %(levelname)s %(name)s: %(message)s")
    from smallcode.lsp.models import CompletionModel, EndpointModel, LocalModel
    from smallcode.lsp.server import Settings, create_server

    model: CompletionModel
    if endpoint is not None:
        if not endpoint.startswith(("http://", "https://")):
            raise click.UsageError(f"--endpoint must be an http:// or https:// URL, got {endpoint!r}")
        model = EndpointModel(endpoint, api_key=api_key)
    else:
        assert model_dir is not None
        model = LocalModel(model_dir, device=device, speculate=speculate)
    create_server(model, Settings(max_tokens=max_tokens, auto_max_tokens=auto_max_tokens,
                                  feedback_log=feedback_log, repo_context=repo_context)).start_io()
