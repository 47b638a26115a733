"""An evaluation run: generate n samples per task, check each in the sandbox, summarise pass@k.

A run lives in one directory::

    config.json      the RunConfig and the backend's name
    samples.jsonl    one row per generated sample {task_id, sample, completion, gen_s[, ttft_s]}
    results.jsonl    one row per checked sample {task_id, suite, sample, status, reason, passed, mode}
    expected.json    strict mode's expected outputs per task (mode 0600; the sandbox cannot see it)
    security.json    bandit's worst severity per sample
    summary.json     pass@k per suite, verdict counts, security shares
    report.md        the same for people

Rows are appended and fsync'd one by one, so a run killed at any point resumes where it stopped:
finished samples are neither regenerated nor re-checked, and a half-written last line (the kill
landed mid-write) is cut off. Checks run on ``workers`` threads, each with its own sandbox zygote.

Latency: ``gen_s`` is the wall time a sample took to generate. A backend that times its own
requests (:class:`~smallcode.backends.base.TimedBackend`: an endpoint) gives each sample's request
time, and ``ttft_s``, its time to first text, when the answer was streamed. For any other backend
``gen_s`` is the wall time of the batched call that produced the sample (every prompt of the call
generated together), which is what each of its samples waited. Pre-generated samples carry none.

Deliberately not here: the verdict logic (``check.py``), isolation (``sandbox/``), the loaders
(``tasks/``), the model calls (``smallcode.backends``).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from smallcode.backends.base import Backend, Timed, TimedBackend
from smallcode.client import ClientError
from smallcode.config import Config, ConfigError
from smallcode.eval.check import CheckMode, Verdict, check
from smallcode.eval.expected import ExpectedCache, ReferenceFailure
from smallcode.eval.sandbox import Isolation, Sandbox, checking_limits, resolve_isolation
from smallcode.fileio import JsonlLog, atomic_write_text, read_jsonl
from smallcode.tasks.base import DEFAULT_STOP, Task
from smallcode.tasks.repo import sandbox_paths


@dataclass
class RunConfig(Config):
    """How to run an evaluation; saved as ``config.json`` in the run directory.

    Each field is also an option of ``smallcode eval run`` whose help is the field's docstring, so the
    docstrings are written for users.
    """

    suites: list[str] = field(default_factory=lambda: ["humaneval"])
    """Suites to run: humaneval, humaneval+, mbpp, mbpp+, mbpp:full, mbpp:sanitized, repo."""
    n: int = 1
    """Samples per task."""
    temperature: float = 0.0
    """Sampling temperature (0 = greedy)."""
    top_p: float = 0.95
    """Nucleus sampling mass."""
    max_tokens: int = 512
    """Longest completion, in tokens."""
    stop: list[str] = field(default_factory=lambda: list(DEFAULT_STOP))
    """Stop sequences for completion-style generation."""
    mode: CheckMode = "strict"
    """Verdicts: strict (outputs compared in the harness) or compat (the dataset's own checks)."""
    workers: int = 0
    """Parallel sandboxes; 0 = number of CPU cores."""
    timeout_s: float = 3.0
    """Wall-clock seconds per program, plus per_input_s for each input in strict mode."""
    per_input_s: float = 0.05
    """Extra seconds per input in strict mode (HumanEval+ has hundreds of inputs per task)."""
    float_atol: float = 1e-6
    """Strict mode's float tolerance for tasks that give none (EvalPlus's default); 0 = exact."""
    memory_mb: int = 1024
    """Address-space limit per program, MiB."""
    isolation: Isolation = "auto"
    """Sandbox layer: auto (the strongest available), bwrap, unshare or rlimits."""
    k: list[int] = field(default_factory=lambda: [1, 10, 100])
    """pass@k values to report (those with k <= n)."""
    limit: int | None = None
    """Only the first N tasks of each suite (smoke runs)."""
    security_scan: bool = True
    """Scan every sample with bandit."""
    data_dir: str | None = None
    """Override for the suites' data: a directory laid out like the releases (humanevalplus/, mbpp/,
    mbppplus/); by default the copies shipped in the package are read."""
    generate_batch: int = 8
    """Prompts per backend call (samples are saved after each call)."""

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ConfigError(f"RunConfig.n: must be >= 1, got {self.n}")
        if self.workers < 0:
            raise ConfigError(f"RunConfig.workers: must be >= 0, got {self.workers}")
        if self.timeout_s <= 0:
            raise ConfigError(f"RunConfig.timeout_s: must be > 0, got {self.timeout_s}")

    @property
    def n_workers(self) -> int:
        return self.workers or os.cpu_count() or 1


SETTINGS = ("mode", "n", "temperature", "top_p", "max_tokens", "suites")
"""The settings every sample of a run shares: a run that kept samples continues only with the same."""


def run_settings(out: str | Path) -> dict[str, Any]:
    """The settings of the run in ``out`` (``config.json``'s config), or {} when there is none yet."""
    path = Path(out) / "config.json"
    if not path.is_file():
        return {}
    try:
        config = json.loads(path.read_text()).get("config")
    except (ValueError, AttributeError) as e:
        raise ConfigError(f"{path}: not a run's config.json ({e}); use another --out") from e
    return config if isinstance(config, dict) else {}


def kept_samples(out: str | Path) -> bool:
    """Whether the run in ``out`` has kept a sample (a run that kept none may start over with other settings)."""
    path = Path(out) / "samples.jsonl"
    return path.is_file() and bool(read_jsonl(path))


# ---- the run ----------------------------------------------------------------------------------

SampleSource = Backend | dict[str, list[str]]
"""A backend, or pre-generated completions per task id (see ``smallcode.backends.samples``)."""


def _generate(tasks: list[Task], source: SampleSource, cfg: RunConfig, log: JsonlLog, progress: bool) -> None:
    have: dict[str, int] = {}
    for r in log.rows:
        have[r["task_id"]] = max(have.get(r["task_id"], 0), r["sample"] + 1)
    if isinstance(source, dict):
        for t in tasks:
            for i, comp in enumerate(source.get(t.task_id, [])):
                if i >= have.get(t.task_id, 0):
                    log.append({"task_id": t.task_id, "sample": i, "completion": comp})
        return
    todo = [t for t in tasks if have.get(t.task_id, 0) < cfg.n]
    bar = tqdm(total=len(todo), desc="generate", unit="task", disable=not progress)
    for start in range(0, len(todo), max(1, cfg.generate_batch)):
        batch = todo[start : start + cfg.generate_batch]
        args = ([t.prompt for t in batch], cfg.n, cfg.temperature, cfg.top_p, cfg.max_tokens, cfg.stop)
        try:
            if isinstance(source, TimedBackend):
                outs = source.generate_timed(*args)
            else:
                t0 = time.perf_counter()
                texts = source.generate(*args)
                call_s = time.perf_counter() - t0
                outs = [[Timed(c, call_s, None) for c in comps] for comps in texts]
        except ClientError as e:
            bar.close()
            done = len(log.rows)
            raise ClientError(f"{e} ({done} samples finished before this are kept in {log.path})") from e
        for t, comps in zip(batch, outs, strict=True):
            for i in range(have.get(t.task_id, 0), cfg.n):
                c = comps[i]
                row = {"task_id": t.task_id, "sample": i, "completion": c.text, "gen_s": round(c.seconds, 6)}
                if c.ttft_s is not None:
                    row["ttft_s"] = round(c.ttft_s, 6)
                log.append(row)
        bar.update(len(batch))
    bar.close()


def evaluate(
    tasks: list[Task],
    source: SampleSource,
    cfg: RunConfig,
    out_dir: str | Path,
    backend_name: str = "",
    progress: bool = True,
    on_result: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run (or resume) an evaluation in ``out_dir`` and return the summary."""
    from smallcode.eval.report import write_reports

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ids = [t.task_id for t in tasks]
    if len(set(ids)) != len(ids):
        raise ValueError("the task list has duplicate task ids")
    by_id = {t.task_id: t for t in tasks}
    cfg_path = out / "config.json"
    meta = {"config": cfg.to_dict(), "backend": backend_name, "sandbox": resolve_isolation(cfg.isolation)}  # type: ignore[arg-type]
    changed = [k for k in SETTINGS if run_settings(out).get(k, meta["config"][k]) != meta["config"][k]]
    if changed and kept_samples(out):
        raise ConfigError(f"{out}: existing run used different {changed}; use another --out to compare")
    if changed or not cfg_path.exists():  # a run that kept no sample (it failed first) takes new settings
        atomic_write_text(cfg_path, json.dumps(meta, indent=2) + "\n")

    samples = JsonlLog(out / "samples.jsonl")
    try:
        _generate(tasks, source, cfg, samples, progress)
    finally:
        samples.close()
    rows = [r for r in samples.rows if r["task_id"] in by_id]

    results = JsonlLog(out / "results.jsonl")
    done = {(r["task_id"], r["sample"]) for r in results.rows}
    pending = [r for r in rows if (r["task_id"], r["sample"]) not in done]
    mode: CheckMode = cfg.mode  # type: ignore[assignment]
    # problems checked by a repository's own tests need it (and the environment's packages) bound in
    repositories = sandbox_paths([by_id[r["task_id"]] for r in rows])
    limits = checking_limits(cfg.timeout_s, repositories, cfg.memory_mb)
    expected = ExpectedCache(out / "expected.json")
    local = threading.local()
    sandboxes: list[Sandbox] = []
    sb_lock = threading.Lock()
    exp_locks: dict[str, threading.Lock] = {}
    locks_lock = threading.Lock()

    def task_lock(task_id: str) -> threading.Lock:
        with locks_lock:
            return exp_locks.setdefault(task_id, threading.Lock())

    def sandbox() -> Sandbox:
        if getattr(local, "sb", None) is None:
            local.sb = Sandbox(cfg.isolation, limits, ro_paths=repositories)  # type: ignore[arg-type]
            with sb_lock:
                sandboxes.append(local.sb)
        return local.sb

    def task_mode(task: Task) -> str:
        return "compat" if mode == "strict" and not task.inputs else mode

    def one(row: dict[str, Any]) -> dict[str, Any]:
        task = by_id[row["task_id"]]
        m = task_mode(task)
        sb = sandbox()
        try:
            exp, ref_s = None, 0.0
            if m == "strict":
                with task_lock(task.task_id):  # one reference run per task, whichever worker asks first
                    exp = expected.get(task, sb, cfg.timeout_s, cfg.per_input_s)
                    ref_s = expected.seconds(task)
            v = check(
                task,
                row["completion"],
                sb,
                m,
                exp,
                cfg.timeout_s,
                cfg.per_input_s,
                ref_s,
                cfg.float_atol,  # type: ignore[arg-type]
            )
        except ReferenceFailure as e:
            v = Verdict("error", f"task unusable in strict mode: {e}")
        return {
            "task_id": task.task_id,
            "suite": task.suite,
            "sample": row["sample"],
            "status": v.status,
            "reason": v.reason,
            "passed": v.passed,
            "mode": m,
        }

    bar = tqdm(
        total=len(rows),
        initial=len(rows) - len(pending),
        desc=f"check ({mode})",
        unit="sample",
        disable=not progress,
    )
    pool = ThreadPoolExecutor(cfg.n_workers)
    try:
        futs = [pool.submit(one, r) for r in pending]
        for f in as_completed(futs):
            res = f.result()
            results.append(res)
            if on_result is not None:
                on_result(res)
            bar.update(1)
    finally:
        # On an interruption, drop what has not started; what finished is already on disk.
        pool.shutdown(wait=True, cancel_futures=True)
        bar.close()
        results.close()
        expected.save()
        for sb in sandboxes:
            sb.close()

    security = None
    if cfg.security_scan:
        security = _security(out, tasks, rows)
    return write_reports(out, tasks, results.rows, cfg.k, security, backend_name, cfg.to_dict(), meta["sandbox"],
                         samples=rows)


def _security(out: Path, tasks: Iterable[Task], rows: list[dict[str, Any]]) -> dict[str, str | None]:
    from smallcode.eval.check import strict_program
    from smallcode.eval.security import scan

    path = out / "security.json"
    cached: dict[str, str | None] = json.loads(path.read_text()) if path.exists() else {}
    by_id = {t.task_id: t for t in tasks}
    todo = {
        f"{r['task_id']}#{r['sample']}": strict_program(by_id[r["task_id"]], r["completion"])
        for r in rows
        if f"{r['task_id']}#{r['sample']}" not in cached
    }
    if todo:
        cached.update(scan(todo))
        atomic_write_text(path, json.dumps(cached) + "\n")
    return cached


def load_tasks(
    suites: list[str], data_dir: str | Path | None = None, limit: int | None = None,
    repo_file: str | Path | None = None,
) -> list[Task]:
    """Tasks of the named suites: the one place a suite name is turned into tasks.

    Every suite comes from :func:`smallcode.tasks.load_suite` (the package's data, or ``data_dir``
    when given; ``repo``: the pinned standard-library problems), except ``repo`` with a ``repo_file``
    (a file written by ``smallcode eval mine``), whose tasks :mod:`smallcode.eval.mining` reads.
    """
    from smallcode.tasks import load_suite

    tasks: list[Task] = []
    for name in suites:
        if name == "repo" and repo_file:
            from smallcode.eval.mining import load_mined

            got = load_mined(Path(repo_file))
        else:
            got = load_suite(name, Path(data_dir) if data_dir else None)
        tasks.extend(got[:limit] if limit else got)
    return tasks
