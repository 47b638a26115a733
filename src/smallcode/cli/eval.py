"""``smallcode eval``: run CodeBench-E, rebuild a report, mine repository problems. Wiring only."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click


def _user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Errors with a message the user can act on become one line, not a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from smallcode.backends.base import BackendError

        try:
            return fn(*args, **kwargs)
        except (BackendError, ValueError, RuntimeError) as e:
            raise click.ClickException(str(e)) from e

    return wrapper


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


@click.group(name="eval")
def eval_() -> None:
    """CodeBench-E: sandboxed pass@k on HumanEval(+), MBPP(+) and repository problems."""


@eval_.command("run")
@click.option(
    "--suite",
    "suites",
    default="humaneval",
    show_default=True,
    help="Comma-separated suites: humaneval, humaneval+, mbpp, mbpp+, mbpp:full, mbpp:sanitized, repo.",
)
@click.option(
    "--model",
    "model",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="A smallcode checkpoint directory or a Hugging Face model directory.",
)
@click.option("--endpoint", help="Base URL of an OpenAI-compatible server, e.g. http://127.0.0.1:8080/v1.")
@click.option("--api-key", envvar="OPENAI_API_KEY", help="Bearer token for --endpoint (or $OPENAI_API_KEY).")
@click.option(
    "--api",
    type=click.Choice(["completions", "chat"]),
    default="completions",
    show_default=True,
    help="Endpoint API: continue the prompt, or ask a chat model and extract its code.",
)
@click.option("--model-name", default="default", show_default=True, help="The 'model' field sent to --endpoint.")
@click.option(
    "--samples",
    "samples_file",
    type=click.Path(path_type=Path),
    help="Pre-generated samples (JSONL with task_id and completion) instead of a model.",
)
@click.option("--n", default=1, show_default=True, help="Samples per task.")
@click.option("--temperature", default=0.0, show_default=True)
@click.option("--top-p", default=0.95, show_default=True)
@click.option("--max-tokens", default=512, show_default=True)
@click.option(
    "--mode",
    type=click.Choice(["strict", "compat"]),
    default="strict",
    show_default=True,
    help="strict: outputs compared in the harness; compat: the dataset's own checks.",
)
@click.option(
    "--float-atol",
    default=1e-6,
    show_default=True,
    help="Strict float tolerance for tasks that give none (EvalPlus's default); 0 = exact.",
)
@click.option("--k", "ks", default="1,10,100", show_default=True, help="pass@k values (those with k <= n).")
@click.option("--workers", default=0, help="Parallel sandboxes (0 = CPU cores).")
@click.option("--timeout", "timeout_s", default=3.0, show_default=True, help="Seconds per program.")
@click.option(
    "--isolation",
    type=click.Choice(["auto", "bwrap", "unshare", "rlimits"]),
    default="auto",
    show_default=True,
    help="Sandbox layer (auto = strongest available).",
)
@click.option("--limit", type=int, help="Only the first N tasks of each suite.")
@click.option("--data-dir", type=click.Path(exists=True, file_okay=False), help="Suites' data (e.g. shared/data).")
@click.option(
    "--repo-file",
    type=click.Path(exists=True, dir_okay=False),
    help="A file written by `smallcode eval mine` to use as the repo suite.",
)
@click.option("--no-security", is_flag=True, help="Skip the bandit scan.")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Run directory.")
@_user_errors
def run(
    suites: str,
    model: Path | None,
    endpoint: str | None,
    api_key: str | None,
    api: str,
    model_name: str,
    samples_file: Path | None,
    n: int,
    temperature: float,
    top_p: float,
    max_tokens: int,
    mode: str,
    float_atol: float,
    ks: str,
    workers: int,
    timeout_s: float,
    isolation: str,
    limit: int | None,
    data_dir: str | None,
    repo_file: str | None,
    no_security: bool,
    out: Path,
) -> None:
    """Generate (or read) samples, check them in the sandbox, write summary.json and report.md."""
    from smallcode.eval.runner import RunConfig, evaluate, load_tasks

    chosen = [x for x in (model, endpoint, samples_file) if x is not None]
    if len(chosen) != 1:
        raise click.UsageError("give exactly one of --model, --endpoint, --samples")
    tasks = load_tasks(_csv(suites), data_dir, limit, repo_file)
    source: Any
    if samples_file is not None:
        from smallcode.backends.samples import read_samples

        source = read_samples(samples_file, {t.task_id for t in tasks})
        missing = [t for t in tasks if t.task_id not in source]
        if missing:
            click.echo(f"note: {len(missing)} of {len(tasks)} tasks have no samples and are not scored", err=True)
        tasks = [t for t in tasks if t.task_id in source]
        n = max(len(v) for v in source.values())
        name = f"samples:{samples_file}"
    elif endpoint is not None:
        from smallcode.backends.openai import OpenAIBackend

        source = OpenAIBackend(endpoint, model=model_name, api_key=api_key, api=api)  # type: ignore[arg-type]
        name = source.name
    else:
        assert model is not None
        from smallcode.backends.local import LocalBackend, is_smallcode_checkpoint

        if is_smallcode_checkpoint(model):
            source = LocalBackend(model)
        else:
            from smallcode.backends.hf import HFBackend

            source = HFBackend(model)
        name = source.name
    cfg = RunConfig(
        suites=_csv(suites),
        n=n,
        temperature=temperature,
        top_p=top_p,
        max_tokens=max_tokens,
        mode=mode,
        workers=workers,
        timeout_s=timeout_s,
        isolation=isolation,
        k=[int(k) for k in _csv(ks)],
        limit=limit,
        security_scan=not no_security,
        float_atol=float_atol,
        data_dir=data_dir,
    )
    evaluate(tasks, source, cfg, out, name)
    click.echo((out / "report.md").read_text())


@eval_.command("report")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@_user_errors
def report(run_dir: Path) -> None:
    """Rebuild summary.json and report.md from a run directory and print the report."""
    from smallcode.eval.report import report_dir

    report_dir(run_dir)
    click.echo((run_dir / "report.md").read_text())


@eval_.command("mine")
@click.option("--source", required=True, help="A directory, an importable package name, or 'stdlib'.")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="JSONL file to write.")
@click.option("--limit", type=int, help="Keep at most N problems (a stable selection).")
@click.option("--workers", type=int, help="Parallel checks (default: CPU cores).")
@click.option("--timeout", "timeout_s", default=10.0, show_default=True, help="Seconds per check.")
@_user_errors
def mine(source: str, out: Path, limit: int | None, workers: int | None, timeout_s: float) -> None:
    """Build function-completion problems from local Python code (doctests and the repo's tests)."""
    from smallcode.eval.mining import mine_repo

    path = mine_repo(source, out, limit=limit, workers=workers, timeout_s=timeout_s)
    click.echo(f"wrote {path}")
