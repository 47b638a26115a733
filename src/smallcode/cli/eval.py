"""``smallcode eval``: run CodeBench-E, line completion, rebuild a report, mine repository problems, run the
repair benchmark.
Wiring only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from smallcode.agent.loop import AgentConfig
from smallcode.cli.options import CommaList, config_options
from smallcode.eval.runner import RunConfig


@click.group(name="eval")
def eval_() -> None:
    """CodeBench-E: sandboxed pass@k on HumanEval(+), MBPP(+) and repository problems; line completion."""


@eval_.command("run")
@click.option(
    "--model",
    "model",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="A smallcode checkpoint, an ONNX export (smallcode export onnx) or a Hugging Face model directory.",
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
@click.option(
    "--repo-file",
    type=click.Path(exists=True, dir_okay=False),
    help="A file written by `smallcode eval mine` to use as the repo suite.",
)
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Run directory.")
@config_options(
    RunConfig,
    aliases={"suites": ["--suite"], "timeout_s": ["--timeout"], "security_scan": ["--security/--no-security"]},
    click_types={"data_dir": click.Path(exists=True, file_okay=False)},
)
def run(
    cfg: RunConfig,
    model: Path | None,
    endpoint: str | None,
    api_key: str | None,
    api: str,
    model_name: str,
    samples_file: Path | None,
    repo_file: str | None,
    out: Path,
) -> None:
    """Generate (or read) samples, check them in the sandbox, write summary.json and report.md.

    An existing --out is resumed: once it has kept a sample, the settings its samples share (suites,
    n, temperature, top-p, max tokens, mode) that are not given here are the run's own, and one given
    otherwise is refused. A run that kept none takes the settings given."""
    from smallcode.backends import open_backend
    from smallcode.backends.samples import Samples
    from smallcode.eval.runner import evaluate, load_tasks

    chosen = [x for x in (model, endpoint, samples_file) if x is not None]
    if len(chosen) != 1:
        raise click.UsageError("give exactly one of --model, --endpoint, --samples")
    cfg = settings_of_run(cfg, out, click.get_current_context())
    tasks = load_tasks(cfg.suites, cfg.data_dir, cfg.limit, repo_file)
    kinds = (("samples",) if samples_file is not None else ("endpoint",) if endpoint is not None
             else ("smallcode", "onnx", "huggingface"))
    opened = open_backend(chosen[0], kinds=kinds, model_name=model_name, api_key=api_key, api=api,  # type: ignore[arg-type]
                          task_ids={t.task_id for t in tasks})
    name = opened.name
    source: Any = opened
    if isinstance(opened, Samples):
        source = opened.completions
        missing = [t for t in tasks if t.task_id not in source]
        if missing:
            click.echo(f"note: {len(missing)} of {len(tasks)} tasks have no samples and are not scored", err=True)
        tasks = [t for t in tasks if t.task_id in source]
        cfg = cfg.replace(n=opened.n)
    evaluate(tasks, source, cfg, out, name)
    click.echo((out / "report.md").read_text())


def settings_of_run(cfg: RunConfig, out: Path, ctx: click.Context) -> RunConfig:
    """``cfg`` with the settings of the run in ``out`` wherever the command line left them at their
    defaults, so that ``eval run --model M --out DIR`` resumes DIR whatever settings started it. A run
    that kept no sample (it failed first) has nothing to keep alike: it takes what is given here."""
    from smallcode.eval.runner import SETTINGS, kept_samples, run_settings

    if not kept_samples(out):
        return cfg
    old = run_settings(out)
    unset = (ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP, None)
    kept = {k: old[k] for k in SETTINGS if k in old and ctx.get_parameter_source(k) in unset}
    return cfg.replace(**kept) if kept else cfg


@eval_.command("lines")
@click.option("--model", "model", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="A smallcode checkpoint, an ONNX export or a Hugging Face model directory (in process).")
@click.option("--endpoint", help="A completion server with /infill or /v1/completions + suffix, e.g. "
                                 "http://127.0.0.1:8080 (smallcode serve).")
@click.option("--api-key", envvar="OPENAI_API_KEY", help="Bearer token for --endpoint (or $OPENAI_API_KEY).")
@click.option("--split", type=click.Choice(["report", "tune", "all"]), default="report", show_default=True,
              help="Held-out half: report (the figures to quote), tune (to choose settings on) or all.")
@click.option("--n", "n", type=click.IntRange(min=1), default=200, show_default=True, help="Cursors drawn.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the cursor draw.")
@click.option("--package", "packages", multiple=True,
              help="Only these held-out packages of the split (import names; repeat). Default: all of them.")
@click.option("--cross-file/--in-file", default=False, show_default=True,
              help="Give other files of the same package as context files, as the LSP gives open documents.")
@click.option("--repo/--no-repo", "repo", default=False, show_default=True,
              help="Retrieve context from an index of the task's package (its own file left out), as the LSP "
                   "does from the workspace; with --cross-file, both (the LSP's setting).")
@click.option("--max-tokens", type=click.IntRange(min=1), default=16, show_default=True,
              help="Most tokens per completion (the LSP's limit while typing).")
@click.option("--stop-loops/--no-stop-loops", default=True, show_default=True,
              help="End a completion that repeats itself, as the language server does (--no-stop-loops: local "
                   "models only; a smallcode server's /infill always stops loops).")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Run directory.")
def lines(model: Path | None, endpoint: str | None, api_key: str | None, split: str, n: int, seed: int,
          packages: tuple[str, ...], cross_file: bool, repo: bool, max_tokens: int, stop_loops: bool,
          out: Path) -> None:
    """Next-line completion on held-out Python through the language server's path: exact match, edit
    similarity, characters saved, latency. Context: the file alone (default), --cross-file (other files as
    open documents), --repo (retrieval from the package's index) or both. An existing --out with the same
    settings is resumed."""
    from smallcode.eval.lines import LinesSettings, held_out_tasks, run_lines
    from smallcode.lsp.models import EndpointModel, LocalModel

    if (model is None) == (endpoint is None):
        raise click.UsageError("give exactly one of --model, --endpoint")
    if not stop_loops and endpoint is not None:
        raise click.UsageError("--no-stop-loops applies to --model only (an endpoint decides for itself)")
    settings = LinesSettings(split=split, n=n, seed=seed, packages=sorted(set(packages)), cross_file=cross_file,
                             repo=repo, max_tokens=max_tokens, stop_loops=stop_loops)
    tasks, fingerprint, files = held_out_tasks(settings)

    def open_model() -> Any:
        if model is not None:
            return LocalModel(model, max_batch=1)
        return EndpointModel(endpoint, api_key=api_key)  # type: ignore[arg-type]

    run_lines(tasks, open_model, settings, out, str(model) if model is not None else str(endpoint),
              held_out=fingerprint, packages=files)
    click.echo((out / "report.md").read_text())


@eval_.command("report")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
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
@click.option("--tests/--no-tests", "run_tests", default=True, show_default=True,
              help="For a directory with tests: run its own pytest/unittest suite once (in the sandbox) and mine "
                   "the functions its tests exercise.")
@click.option("--test-timeout", "test_timeout_s", default=10.0, show_default=True,
              help="Seconds one of the repository's tests may run before it is interrupted.")
@click.option("--run-timeout", "run_timeout_s", default=600.0, show_default=True,
              help="Seconds the whole run of the repository's tests may take (what it recorded is kept).")
def mine(source: str, out: Path, limit: int | None, workers: int | None, timeout_s: float, run_tests: bool,
         test_timeout_s: float, run_timeout_s: float) -> None:
    """Build function-completion problems from local Python code (doctests and the repo's tests)."""
    import json

    from smallcode.eval.mining import mine_repo

    path = mine_repo(source, out, limit=limit, workers=workers, timeout_s=timeout_s, run_tests=run_tests,
                     test_timeout_s=test_timeout_s, run_timeout_s=run_timeout_s)
    with open(path, encoding="utf-8") as f:
        header = json.loads(f.readline()).get("header", {})
    tests = header.get("tests")
    if tests:
        click.echo(f"tests: {tests['collected']} collected, {tests['passed']} passed, {tests['failed']} failed, "
                   f"{tests['skipped']} skipped, {tests['network']} needed the network"
                   + ("" if tests["completed"] else " (the run was cut off)"))
        for file, problems in tests["problems"].items():
            for p in problems:
                click.echo(f"  {file}: {p}", err=True)
    click.echo(f"{header.get('tasks', 0)} problems of {header.get('candidates', 0)} candidates; wrote {path}")


@eval_.command("agent")
@click.option("--suite", "suites", multiple=True, required=True,
              type=CommaList(click.Choice(["repair-humaneval", "repair-mbpp", "repair-repo"])),
              help="Repair suites: repair-humaneval, repair-mbpp, repair-repo; comma-separated or repeated, as "
                   "eval run's --suite.")
@click.option("--model", "model", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="A smallcode checkpoint or ONNX export directory.")
@click.option("--endpoint", help="Base URL of an OpenAI-compatible chat server.")
@click.option("--api-key", envvar="OPENAI_API_KEY", help="Bearer token for --endpoint (or $OPENAI_API_KEY).")
@click.option("--model-name", default="default", show_default=True, help="The 'model' field sent to --endpoint.")
@click.option("--oracle", is_flag=True, help="A scripted model that applies the known fix (checks the mechanics).")
@click.option("--limit", type=int, help="Only the first N usable tasks of each suite.")
@click.option("--candidates", default=1, show_default=True, type=click.IntRange(min=1),
              help="Agent runs per task on separate copies; the first whose tests pass counts.")
@click.option("--repo-file", type=click.Path(exists=True, dir_okay=False),
              help="A file written by `smallcode eval mine` to build repair-repo from (problems mined from a "
                   "repository's own tests become copies of that repository with one bug).")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Run directory.")
@config_options(AgentConfig)
def agent(cfg: AgentConfig, suites: tuple[list[str], ...], model: Path | None, endpoint: str | None,
          api_key: str | None, model_name: str, oracle: bool, limit: int | None, candidates: int,
          repo_file: str | None, out: Path) -> None:
    """The repair benchmark: the agent fixes a seeded bug until the original tests pass (resumable)."""
    from smallcode.agent.models import ScriptedModel, open_chat_model
    from smallcode.eval.agent_bench import load_repair_suite, oracle_replies, run_repair

    if sum(x is not None and x is not False for x in (model, endpoint, oracle or None)) != 1:
        raise click.UsageError("give exactly one of --model, --endpoint, --oracle")
    tasks = [t for given in suites for s in given for t in load_repair_suite(s, limit, repo_file=repo_file)]
    if oracle:
        name = "oracle"

        def model_for(rt: Any) -> Any:
            return ScriptedModel(oracle_replies(rt), name="oracle")
    else:
        chat = open_chat_model(model, endpoint, model_name, api_key)
        name = chat.name

        def model_for(rt: Any) -> Any:
            return chat
    run_repair(tasks, model_for, out, cfg, candidates, name, progress=True)
    click.echo((out / "report.md").read_text())
