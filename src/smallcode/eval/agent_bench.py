"""The repair benchmark: a correct solution with one seeded bug, its tests, and an agent that must fix it.

Suites (``REPAIR_SUITES``), built offline from the packaged tasks:

* ``repair-humaneval`` / ``repair-mbpp``: ``solution.py`` holds the task's prompt and canonical
  solution with one single-site mutation (:mod:`smallcode.eval.mutation`), ``tests/test_solution.py``
  the dataset's own checks;
* ``repair-repo``: a one-module package made from a repository problem: the standard-library
  module (``<module>.py``) with the bug in the mined function, and its doctests as
  ``tests/test_<module>.py``. A problem mined from a repository's own test suite (``eval mine
  --source DIR`` on a directory with tests, ``--repo-file``) becomes a copy of that whole repository
  with the bug in the real file; the agent runs the repository's own tests that check the function
  (``python -m pytest`` with their node ids) and the verdict runs them on a fresh copy.

The bug of a task is the first mutation site, in an order drawn from the task id, whose mutant
fails the tests (checked in the sandbox when the suite is built); tasks with no such site are left
out. A task is *resolved* only if the test files are unchanged and the original tests pass on the
agent's solution, checked again by the harness's own checker (``check.check_compat``) in a fresh
sandbox, not by anything that ran in the agent's copy.

:func:`run_repair` writes ``results.jsonl`` (one row per task: resolved, why the run ended, steps,
tokens, wall time), the trajectories, ``summary.json`` and ``report.md``; like ``eval run`` it
resumes where it stopped. :func:`oracle_replies` gives the scripted replies that fix a task (the
mechanics check: an oracle run resolves 100%).
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import random
import shutil
import tempfile
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smallcode.eval.check import check_compat
from smallcode.eval.mutation import apply_site, mutation_sites
from smallcode.eval.sandbox import Limits, Sandbox, checking_limits
from smallcode.fileio import atomic_write_text
from smallcode.tasks.base import Task

REPAIR_SUITES: dict[str, str] = {"repair-humaneval": "humaneval", "repair-mbpp": "mbpp", "repair-repo": "repo"}
"""Repair suite -> the task suite it is built from."""
TEST_COMMAND = "python -B tests/{test_file}"
INSTRUCTION = ("The tests in tests/ fail: there is a bug in {module}. Find it and fix the code so that the "
               "tests pass, without changing the tests. Run the tests with: {command}")


@dataclass(frozen=True)
class RepairTask:
    task_id: str
    """``repair-<suite>/<original task id>``."""
    suite: str
    source: Task
    """The task it was made from (its test is the verdict)."""
    module: str
    """The file holding the code and the bug."""
    fixed: str
    """The module's correct text."""
    buggy: str
    """The module's text with the bug."""
    test_file: str
    test_text: str
    repo: str = ""
    """For a problem checked by a repository's own tests: that repository, copied whole into the
    task's directory (``module`` is then a path inside it, and the tests are its own)."""
    command: str = ""
    """The test command when it is not the one-file :data:`TEST_COMMAND`."""

    @property
    def test_command(self) -> str:
        return self.command or TEST_COMMAND.format(test_file=Path(self.test_file).name)

    @property
    def instruction(self) -> str:
        return INSTRUCTION.format(module=self.module, command=self.test_command)

    def write(self, root: Path) -> None:
        """Lay the task's repository out in ``root``."""
        if self.repo:
            shutil.copytree(self.repo, root, symlinks=True, dirs_exist_ok=True, ignore=_COPY_IGNORE)
            (root / self.module).write_text(self.buggy, encoding="utf-8")
            return
        (root / "tests").mkdir(parents=True, exist_ok=True)
        (root / self.module).write_text(self.buggy, encoding="utf-8")
        (root / self.test_file).write_text(self.test_text, encoding="utf-8")


_COPY_IGNORE = shutil.ignore_patterns(".git", ".hg", "__pycache__", "*.pyc", ".tox", ".nox", ".venv",
                                      ".pytest_cache", ".mypy_cache")


def _test_text(task: Task, module: str) -> str:
    call = f"\ncheck({task.entry_point})\n" if "def check(" in task.test else "\n"
    # The module runs in the test's own namespace, as the dataset's check program runs it.
    return (f'"""The tests of {module} ({task.task_id}); they pass when the program runs to the end."""\n'
            "import pathlib\n\n"
            f"_source = (pathlib.Path(__file__).resolve().parents[1] / {module!r}).read_text()\n"
            f"exec(compile(_source, {module!r}, 'exec'))\n"
            f"{task.test}{call}print('all tests passed')\n")


def _module_name(task: Task) -> str:
    if task.suite == "repo":
        return str(task.meta.get("module", "module")).replace(".", "_").lstrip("_") + ".py"
    return "solution.py"


def _program(task: Task, body: str) -> str:
    return (task.preamble.rstrip("\n") + "\n" if task.preamble else "") + task.prompt + body


def verdict(rt: RepairTask, module_text: str, sandbox: Sandbox, timeout_s: float = 10.0) -> bool:
    """Whether ``module_text`` passes the task's original tests (the harness's compat checker)."""
    if rt.repo:
        return check_compat(_local_probe(rt.source, rt.module, module_text), "", sandbox, timeout_s).passed
    probe = dataclasses.replace(rt.source, prompt=module_text, preamble="")
    return check_compat(probe, "", sandbox, timeout_s).passed


# ---- problems checked by a repository's own tests (``eval mine --source DIR``) -------------------
#
# The task's directory is a copy of the repository with the bug in the real file; the agent runs the
# repository's own tests (the problem's pytest node ids). The verdict copies the repository (bound
# read-only in the harness's sandbox) into the program's working directory, puts the agent's text in
# place of the file and runs the same tests there.

_LOCAL_CHECK = """import os, shutil, site, sys
for _p in {site!r}:
    site.addsitedir(_p)
shutil.copytree({repo!r}, "repo", symlinks=True,
                ignore=shutil.ignore_patterns(".git", ".hg", "__pycache__", "*.pyc", ".tox", ".nox", ".venv"))
_root = os.path.abspath("repo")
with open(os.path.join(_root, {module!r}), "w", encoding="utf-8") as _f:
    _f.write({text!r})
sys.path[:0] = [os.path.join(_root, _r) for _r in {roots!r}]
sys.dont_write_bytecode = True
{run}"""


def _is_local(task: Task) -> bool:
    return task.meta.get("checked_by") == "pytest"


def _import_roots(task: Task) -> list[str]:
    root = Path(task.meta["repo"])
    return [Path(p).relative_to(root).as_posix() if Path(p) != root else "." for p in task.meta.get("sys_path", ())]


def _local_probe(task: Task, module: str, text: str) -> Task:
    """A task whose program runs ``task``'s tests on a copy of its repository with ``text`` as ``module``."""
    from smallcode.tasks.repo import PYTEST_RUN, check_pytest_args

    run = PYTEST_RUN.format(args=check_pytest_args(task.meta.get("plugins", ())), tests=list(task.meta["tests"]))
    program = _LOCAL_CHECK.format(site=list(task.meta.get("site_dirs", ())), repo=task.meta["repo"], module=module,
                                  text=text, roots=_import_roots(task), run=run)
    return dataclasses.replace(task, prompt=program, preamble="", test="")


def _local_command(task: Task) -> str:
    """The command the agent is told runs the tests: the repository's own, with pytest."""
    import shlex

    from smallcode.tasks.repo import PYTEST_ARGS

    roots = ":".join(_import_roots(task))
    ids = " ".join(shlex.quote(t) for t in task.meta["tests"])
    return f"PYTHONPATH={shlex.quote(roots)} python -B -m pytest {' '.join(PYTEST_ARGS)} {ids}"


def _make_local_repair_task(task: Task, suite: str, sandbox: Sandbox, timeout_s: float,
                            max_tries: int) -> RepairTask | None:
    from smallcode.tasks.repo import body_span

    repo, file = Path(task.meta["repo"]), Path(task.meta["file"])
    if any(not Path(p).is_relative_to(repo) for p in task.meta.get("sys_path", ())):
        return None  # a repository that is itself a package: its copy could not be imported by name
    span = body_span(file, str(task.meta["qualname"]))
    if span is None:
        return None
    start, end, indent = span
    lines = file.read_text(encoding="utf-8").splitlines(keepends=True)
    module = file.relative_to(repo).as_posix()

    def with_body(body: str) -> str:
        body_lines = [indent + ln if ln.strip() else ln for ln in body.splitlines(keepends=True)]
        return "".join(lines[:start] + body_lines + lines[end:])

    fixed = with_body(task.reference)
    base = RepairTask(f"{suite}/{task.task_id}", suite, task, module, fixed, fixed, "", "", repo=str(repo),
                      command=_local_command(task))
    if not check_compat(_local_probe(task, module, fixed), "", sandbox, timeout_s).passed:
        return None  # the repository changed since mining, or its tests cannot run here
    sites = mutation_sites(task.reference)
    rng = random.Random(int(hashlib.sha256(task.task_id.encode()).hexdigest()[:8], 16))
    rng.shuffle(sites)
    for site in sites[:max_tries]:
        buggy = with_body(apply_site(task.reference, site))
        if buggy == fixed:
            continue
        v = check_compat(_local_probe(task, module, buggy), "", sandbox, timeout_s)
        if v.status in ("failed", "error"):
            return dataclasses.replace(base, buggy=buggy)
    return None


def repair_sandbox(tasks: list[Task], timeout_s: float) -> Sandbox:
    """The sandbox that checks ``tasks``: it sees the repositories of problems checked by their own
    tests, and has the room pytest needs, where any is among them."""
    from smallcode.tasks.repo import sandbox_paths

    paths = sandbox_paths(tasks)
    return Sandbox("auto", checking_limits(timeout_s, paths), ro_paths=paths)


def make_repair_task(task: Task, suite: str, sandbox: Sandbox, timeout_s: float = 5.0,
                     max_tries: int = 12) -> RepairTask | None:
    """The repair task made from ``task``: its first failing mutant (see the module docstring), or None."""
    if _is_local(task):
        return _make_local_repair_task(task, suite, sandbox, max(timeout_s, 10.0), max_tries)
    module = _module_name(task)
    sites = mutation_sites(task.reference)
    rng = random.Random(int(hashlib.sha256(task.task_id.encode()).hexdigest()[:8], 16))
    rng.shuffle(sites)
    fixed = _program(task, task.reference)
    base = RepairTask(f"{suite}/{task.task_id}", suite, task, module, fixed, fixed,
                      f"tests/test_{Path(module).stem}.py", _test_text(task, module))
    for site in sites[:max_tries]:
        buggy = _program(task, apply_site(task.reference, site))
        if buggy == fixed:
            continue
        probe = dataclasses.replace(task, prompt=buggy, preamble="")
        v = check_compat(probe, "", sandbox, timeout_s)
        if v.status in ("failed", "error"):  # a wrong answer or a crash: the tests catch the bug
            return dataclasses.replace(base, buggy=buggy)
    return None


def load_repair_suite(name: str, limit: int | None = None, sandbox: Sandbox | None = None,
                      repo_file: str | Path | None = None) -> list[RepairTask]:
    """The first ``limit`` usable tasks of repair suite ``name`` (all when None)."""
    from smallcode.eval.runner import load_tasks

    if name not in REPAIR_SUITES:
        raise ValueError(f"unknown repair suite {name!r}; choose one of {', '.join(REPAIR_SUITES)}")
    tasks = load_tasks([REPAIR_SUITES[name]], repo_file=repo_file)
    own = sandbox is None
    sb = sandbox or repair_sandbox(tasks, 5.0)
    out: list[RepairTask] = []
    try:
        for t in tasks:
            if limit is not None and len(out) >= limit:
                break
            rt = make_repair_task(t, name, sb)
            if rt is not None:
                out.append(rt)
    finally:
        if own:
            sb.close()
    return out


def oracle_replies(rt: RepairTask) -> list[str]:
    """The replies of a model that knows the fix: one edit undoing the bug (made unique with
    context lines), then a submit (not reached when the tests pass after the edit)."""
    from smallcode.agent.actions import search_replace_block

    old, new = rt.buggy.splitlines(keepends=True), rt.fixed.splitlines(keepends=True)
    sm = difflib.SequenceMatcher(a=old, b=new, autojunk=False)
    ops = [op for op in sm.get_opcodes() if op[0] != "equal"]
    a0, a1, b0, b1 = ops[0][1], ops[-1][2], ops[0][3], ops[-1][4]
    while "".join(old[a0:a1]) == "" or rt.buggy.count("".join(old[a0:a1])) != 1:
        a0, b0 = max(0, a0 - 1), max(0, b0 - 1)
        a1, b1 = min(len(old), a1 + 1), min(len(new), b1 + 1)
    return [search_replace_block(rt.module, "".join(old[a0:a1]), "".join(new[b0:b1])), "```submit\n```"]


# ---- running a suite ------------------------------------------------------------------------------

ModelFactory = Callable[[RepairTask], Any]
"""Gives the chat model for a task (a fixed model, or a scripted one per task)."""


def run_repair(tasks: list[RepairTask], model_for: ModelFactory, out_dir: str | Path, cfg: Any = None,
               candidates: int = 1, model_name: str = "", progress: bool = False) -> dict[str, Any]:
    """Run (or resume) the agent on every task; write results, trajectories, summary.json and report.md."""
    from smallcode.agent.loop import AgentConfig, run_candidates
    from smallcode.agent.workspace import ShellLimits
    from smallcode.fileio import JsonlLog

    cfg = cfg or AgentConfig()
    out = Path(out_dir)
    (out / "trajectories").mkdir(parents=True, exist_ok=True)
    meta = {"config": cfg.to_dict(), "candidates": candidates, "model": model_name,
            "suites": sorted({t.suite for t in tasks})}
    cfg_path = out / "config.json"
    if cfg_path.exists():
        old = json.loads(cfg_path.read_text())
        if old.get("config") != meta["config"] or old.get("candidates") != candidates:
            raise ValueError(f"{out}: an existing run used other settings; use another --out to compare")
    else:
        atomic_write_text(cfg_path, json.dumps(meta, indent=2) + "\n")
    results = JsonlLog(out / "results.jsonl")
    done = {r["task_id"] for r in results.rows}
    limits = ShellLimits(timeout_s=cfg.command_timeout_s)
    try:
        with repair_sandbox([t.source for t in tasks], 10.0) as sb:
            for i, rt in enumerate(tasks):
                if rt.task_id in done:
                    continue
                with tempfile.TemporaryDirectory(prefix="smallcode-repair-") as tmp:
                    repo = Path(tmp) / "repo"
                    rt.write(repo)
                    tdir = out / "trajectories" / rt.task_id.replace("/", "__")
                    best, _, ws = run_candidates(rt.instruction, repo, model_for(rt), candidates, cfg,
                                                 rt.test_command, tdir, limits=limits)
                    try:
                        changed = ws.protected_changes()
                        text = (ws.path / rt.module).read_text(encoding="utf-8", errors="replace") \
                            if (ws.path / rt.module).is_file() else ""
                    finally:
                        ws.close()
                resolved = not changed and verdict(rt, text, sb, timeout_s=30.0 if rt.repo else 10.0)
                row = {"task_id": rt.task_id, "suite": rt.suite, "resolved": resolved, **best.to_dict(),
                       "tests_changed": changed}
                results.append(row)
                if progress:
                    print(f"[{i + 1}/{len(tasks)}] {rt.task_id}: {'resolved' if resolved else best.exit_reason}",
                          flush=True)
    finally:
        results.close()
    return write_repair_report(out, results.rows, meta)


def summarise_repair(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per suite: tasks, resolved share, mean steps, tokens and seconds, and why runs ended."""
    by_suite: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_suite[r["suite"]].append(r)
    out: dict[str, Any] = {}
    for suite in sorted(by_suite):
        rs = by_suite[suite]
        n = len(rs)
        out[suite] = {
            "tasks": n,
            "resolved": sum(bool(r["resolved"]) for r in rs),
            "resolved_pct": round(100.0 * sum(bool(r["resolved"]) for r in rs) / n, 2),
            "mean_steps": round(sum(r["steps"] for r in rs) / n, 2),
            "mean_tokens": round(sum(r["prompt_tokens"] + r["completion_tokens"] for r in rs) / n, 1),
            "mean_seconds": round(sum(r["seconds"] for r in rs) / n, 3),
            "exit_reasons": dict(Counter(r["exit_reason"] for r in rs)),
            "tests_changed": sum(bool(r.get("tests_changed")) for r in rs),
        }
    return out


def write_repair_report(out: Path, rows: list[dict[str, Any]], meta: dict[str, Any]) -> dict[str, Any]:
    """Write ``summary.json`` and ``report.md`` for the rows of a run; returns the summary."""
    summary = {"model": meta.get("model", ""), "candidates": meta.get("candidates", 1),
               "suites": summarise_repair(rows)}
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    lines = ["# Repair benchmark", "", f"Model: `{summary['model']}`; candidates per task: {summary['candidates']}",
             "", "| suite | tasks | resolved | mean steps | mean tokens | mean wall s | tests changed | ended by |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    for suite, s in summary["suites"].items():
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(s["exit_reasons"].items()))
        lines.append(f"| {suite} | {s['tasks']} | {s['resolved']} ({s['resolved_pct']:.1f}%) | {s['mean_steps']} | "
                     f"{s['mean_tokens']} | {s['mean_seconds']} | {s['tests_changed']} | {reasons} |")
    lines += ["", "A task is resolved when its test files are unchanged and its original tests pass on the "
              "agent's code (checked again by the harness).", ""]
    atomic_write_text(out / "report.md", "\n".join(lines))
    return summary


def report_repair_dir(run_dir: str | Path) -> dict[str, Any]:
    """Rebuild ``summary.json`` and ``report.md`` from a run directory."""
    from smallcode.fileio import JsonlLog

    out = Path(run_dir)
    meta = json.loads((out / "config.json").read_text())
    log = JsonlLog(out / "results.jsonl")
    log.close()
    return write_repair_report(out, log.rows, meta)


# ---- execution-guided sampling on completion tasks ------------------------------------------------


def execution_guided(tasks: list[Task], backend: Any, k: int, temperature: float = 0.8, max_tokens: int = 256,
                     stop: list[str] | None = None, timeout_s: float = 3.0) -> list[dict[str, Any]]:
    """Plain pass@1 (one greedy sample) against pass@1 after feedback (``k`` samples, the first whose
    visible tests pass is the answer, else the first sample), per task.

    The visible tests are the task's own (MBPP shows them in the prompt); the verdict is the harness's
    compat check (``check.check_compat``), so both numbers use the same checker."""
    from smallcode.tasks.base import DEFAULT_STOP

    stops = list(stop if stop is not None else DEFAULT_STOP)
    prompts = [t.prompt for t in tasks]
    greedy = backend.generate(prompts, 1, 0.0, 1.0, max_tokens, stops)
    sampled = backend.generate(prompts, k, temperature, 0.95, max_tokens, stops) if k > 1 else greedy
    rows: list[dict[str, Any]] = []
    with Sandbox("auto", Limits(timeout_s=timeout_s)) as sb:
        for t, g, cands in zip(tasks, greedy, sampled, strict=True):
            plain = check_compat(t, g[0], sb, timeout_s).passed
            chosen, tried = cands[0], 0
            for c in cands:
                tried += 1
                if check_compat(t, c, sb, timeout_s).passed:
                    chosen = c
                    break
            rows.append({"task_id": t.task_id, "plain": plain, "guided": check_compat(t, chosen, sb, timeout_s).passed,
                         "candidates_run": tried})
    return rows
