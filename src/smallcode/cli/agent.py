"""``smallcode agent``: run the coding agent on a copy of a repository, or replay a trajectory. Wiring only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from smallcode.agent.loop import AgentConfig
from smallcode.cli.generate import speculate_options
from smallcode.cli.options import config_options


@click.command("agent")
@click.argument("task", required=False)
@click.option("--repo", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="The repository to work on (the agent works on a copy).")
@click.option("--model", "model", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="A smallcode checkpoint or ONNX export directory.")
@click.option("--endpoint", help="Base URL of an OpenAI-compatible chat server, e.g. http://127.0.0.1:8080/v1.")
@click.option("--api-key", envvar="OPENAI_API_KEY", help="Bearer token for --endpoint (or $OPENAI_API_KEY).")
@click.option("--model-name", default="default", show_default=True, help="The 'model' field sent to --endpoint.")
@click.option("--test", "test_command", help="The shell command that runs the tests (in the sandbox).")
@click.option("--candidates", default=1, show_default=True, type=click.IntRange(min=1),
              help="Runs sampled in parallel on separate copies; the first whose tests pass wins.")
@click.option("--protect", multiple=True, help="Glob (relative path) of files the agent must not change; "
              "repeatable. Default: tests/*, test_*.py, *_test.py, conftest.py and the like.")
@click.option("--apply", "apply_", is_flag=True, help="Apply the change to --repo when the tests pass.")
@click.option("--trajectory", type=click.Path(path_type=Path),
              help="Where to write the trajectory JSONL (a directory with --candidates > 1).")
@click.option("--replay", "replay_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Replay the replies of a trajectory on a fresh copy of --repo instead of asking a model.")
@config_options(AgentConfig)
@speculate_options
def agent(cfg: AgentConfig, task: str | None, repo: Path, model: Path | None, endpoint: str | None,
          api_key: str | None, model_name: str, test_command: str | None, candidates: int, protect: tuple[str, ...],
          apply_: bool, trajectory: Path | None, replay_file: Path | None, speculate: Any) -> None:
    """Work on TASK in a sandboxed copy of --repo: read, search, edit, run the tests, until they pass.

    Prints the diff; with --apply (and passing tests) writes it to --repo.
    """
    from smallcode.agent.loop import replay, run_candidates
    from smallcode.agent.models import open_chat_model
    from smallcode.agent.workspace import DEFAULT_PROTECT

    if replay_file is not None:
        result = replay(replay_file, repo, trajectory=trajectory)
        _show(result.to_dict(), result.diff)
        return
    if not task:
        raise click.UsageError("give the TASK (or --replay FILE)")
    if (model is None) == (endpoint is None):
        raise click.UsageError("give exactly one of --model and --endpoint")
    if speculate is not None and endpoint is not None:
        raise click.UsageError("--speculate is for --model; a server speculates by its own --speculate")
    chat = open_chat_model(model, endpoint, model_name, api_key, speculate=speculate)
    globs = tuple(protect) or DEFAULT_PROTECT
    best, _, ws = (run_candidates(task, repo, chat, candidates, cfg, test_command, trajectory, globs)
                   if candidates > 1 else _single(task, repo, chat, cfg, test_command, trajectory, globs))
    try:
        _show(best.to_dict(), best.diff)
        if apply_:
            if test_command and not best.tests_passed:
                raise click.ClickException("the tests do not pass: nothing applied")
            if best.protected_changed:
                raise click.ClickException("the run changed test files: nothing applied")
            ws.apply_to(repo)
            click.echo(f"applied to {repo}", err=True)
    finally:
        ws.close()


def _single(task: str, repo: Path, chat: object, cfg: AgentConfig, test_command: str | None,
            trajectory: Path | None, protect: tuple[str, ...]) -> tuple[object, list[object], object]:
    from smallcode.agent.loop import run_agent
    from smallcode.agent.workspace import Workspace

    ws = Workspace(repo, protect)
    try:
        result = run_agent(task, ws, chat, cfg, test_command, trajectory)  # type: ignore[arg-type]
    except BaseException:
        ws.close()
        raise
    return result, [result], ws


def _show(summary: dict[str, object], diff: str) -> None:
    click.echo(diff or "(no change)")
    line = ", ".join(f"{k}={summary[k]}" for k in ("exit_reason", "tests_passed", "steps", "prompt_tokens",
                                                    "completion_tokens", "seconds"))
    click.echo(f"{line}\n{summary['detail']}", err=True)
