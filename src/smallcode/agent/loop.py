"""The agent loop: one action per turn until the tests pass, the agent submits, or a budget ends.

:func:`run_agent` asks the model for a reply, parses its one action (``actions.py``), carries it
out on the :class:`~smallcode.agent.workspace.Workspace` and sends back what happened, turn after
turn. After every edit that applies, the test command runs by itself (the test-fix loop); the run
ends as soon as it passes. Budgets: steps, tokens (prompt and reply, summed over turns) and wall
time (checked before each turn; a command never runs past what is left). Every turn is appended
to a trajectory JSONL as it happens; :func:`replay` runs a trajectory's replies again on a fresh
copy of the repository and gives the same observations.

:func:`run_candidates` is execution-guided sampling: ``k`` runs on ``k`` copies in parallel, each
sampling its own replies; the first whose tests pass wins and the others are stopped.
Not here: the sandbox (``workspace.py``), the model (``models.py``), the benchmark
(:mod:`smallcode.eval.agent_bench`).
"""

from __future__ import annotations

import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from smallcode.agent.actions import FORMAT_HELP, Action, ActionError, apply_edit, parse_action, parse_edit
from smallcode.agent.models import ChatModel, ScriptedModel
from smallcode.agent.workspace import DEFAULT_PROTECT, ShellLimits, Workspace, WorkspaceError
from smallcode.client import ClientError
from smallcode.config import Config, ConfigError
from smallcode.fileio import JsonlLog, read_jsonl
from smallcode.retrieval import RepoIndex, bm25_terms

ExitReason = Literal["tests_passed", "submitted", "max_steps", "max_tokens", "max_seconds", "model_error",
                     "stopped"]


@dataclass
class AgentConfig(Config):
    """Budgets and sampling of one agent run; each field is an option of ``smallcode agent``."""

    max_steps: int = 20
    """Most turns (model replies) in a run."""
    max_tokens: int = 100000
    """Most tokens (prompts and replies, summed over turns) a run may spend."""
    max_seconds: float = 600.0
    """Wall-clock budget of a run, seconds."""
    reply_tokens: int = 768
    """Longest reply per turn, in tokens."""
    temperature: float = 0.0
    """Sampling temperature (candidates beyond the first sample at least 0.8)."""
    command_timeout_s: float = 30.0
    """Wall-clock limit of one command or test run in the sandbox, seconds."""
    observation_chars: int = 4000
    """Longest observation sent back to the model; the rest is cut."""
    seed: int = 0
    """Sampling seed (candidate i uses seed + i)."""

    def __post_init__(self) -> None:
        for name in ("max_steps", "max_tokens", "reply_tokens"):
            if getattr(self, name) < 1:
                raise ConfigError(f"AgentConfig.{name}: must be >= 1, got {getattr(self, name)}")
        if self.max_seconds <= 0 or self.command_timeout_s <= 0:
            raise ConfigError("AgentConfig: max_seconds and command_timeout_s must be > 0")


@dataclass
class AgentResult:
    exit_reason: ExitReason
    tests_passed: bool | None
    """The last test run's verdict (None: no test command, or never run)."""
    steps: int
    prompt_tokens: int
    completion_tokens: int
    seconds: float
    diff: str
    protected_changed: list[str]
    detail: str = ""
    """Why the run ended, in words."""
    candidate: int = 0

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("exit_reason", "tests_passed", "steps", "prompt_tokens",
                                              "completion_tokens", "seconds", "protected_changed", "detail",
                                              "candidate")} | {"diff_lines": len(self.diff.splitlines())}


SYSTEM_PROMPT = """You are a careful software engineer working in a repository. You can read files, \
search, edit with search/replace blocks, run shell commands and run the tests. Commands run in a \
sandbox without network. Do not change the tests: fix the code. One action per reply.

""" + FORMAT_HELP


def task_message(task: str, ws: Workspace, test_command: str | None, max_files: int = 60) -> str:
    files = ws.files()
    listing = "\n".join(files[:max_files]) + (f"\n... and {len(files) - max_files} more" if len(files) > max_files
                                               else "")
    test = f"\nThe test command is: {test_command}" if test_command else ""
    return f"Task: {task}\n\nRepository files:\n{listing}\n{test}"


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    half = limit // 2
    return text[:half] + f"\n[... {len(text) - limit} characters cut ...]\n" + text[-half:]


class _Run:
    """One run's state; :meth:`step` carries out one action."""

    def __init__(self, ws: Workspace, cfg: AgentConfig, test_command: str | None, t0: float) -> None:
        self.ws, self.cfg, self.test_command, self.t0 = ws, cfg, test_command, t0
        self.tests_passed: bool | None = None
        self.done: ExitReason | None = None

    def left(self) -> float:
        return self.cfg.max_seconds - (time.monotonic() - self.t0)

    def run_tests(self) -> str:
        if not self.test_command:
            return "no test command was given for this task"
        r = self.ws.run(self.test_command, timeout_s=min(self.cfg.command_timeout_s, max(0.1, self.left())))
        self.tests_passed = r.ok
        if r.ok:
            self.done = "tests_passed"
        verdict = "PASSED" if r.ok else f"FAILED ({r.describe()})"
        return f"tests {verdict}\n{r.output}"

    def ranked_search(self, query: str, k: int = 5) -> str:
        """What a search that matched nothing answers: the lines, holding one of its words, of the
        ``k`` passages of the copy's Python files most like them (BM25, ``smallcode.retrieval``)."""
        index = RepoIndex()
        for rel in self.ws.files():
            if rel.endswith(".py"):
                try:
                    index.update(rel, self.ws.read_text(rel))
                except WorkspaceError:
                    continue
        words = set(bm25_terms(query))
        hits: list[str] = []
        for hit in index.search(query, k=k):
            lines = self.ws.read_text(hit.path).splitlines()
            hits += [f"{hit.path}:{i + 1}: {lines[i]}" for i in range(hit.start, min(hit.end, len(lines)))
                     if words & set(bm25_terms(lines[i])) and f"{hit.path}:{i + 1}: {lines[i]}" not in hits]
        if not hits:
            return "no matches"
        return "no matches; the lines of the passages most like its words:\n" + "\n".join(hits[:50])

    def act(self, action: Action) -> str:
        ws = self.ws
        if action.kind == "read":
            m = re.fullmatch(r"(.+?)(?::(\d+)-(\d+))?", action.arg.splitlines()[0].strip())
            assert m is not None
            lines = ws.read_text(m.group(1)).splitlines()
            lo, hi = (int(m.group(2)), int(m.group(3))) if m.group(2) else (1, len(lines))
            return "\n".join(f"{i:5d} {lines[i - 1]}" for i in range(max(1, lo), min(hi, len(lines)) + 1)) or "(empty)"
        if action.kind == "search":
            try:
                pattern = re.compile(action.arg.splitlines()[0])
            except re.error as e:
                raise ActionError(f"not a valid regular expression: {e}") from e
            hits: list[str] = []
            for rel in ws.files():
                try:
                    text = ws.read_text(rel)
                except WorkspaceError:
                    continue  # a link out of the copy: not ours to read
                hits += [f"{rel}:{i}: {ln}" for i, ln in enumerate(text.splitlines(), 1) if pattern.search(ln)]
                if len(hits) > 200:
                    break
            return "\n".join(hits[:200]) or self.ranked_search(action.arg.splitlines()[0])
        if action.kind == "edit":
            edit = parse_edit(action.arg)
            path = ws.resolve(edit.path, write=True)
            original = None
            if path.is_file():
                try:
                    with open(path, encoding="utf-8", newline="") as f:
                        original = f.read()  # line endings as they are: a SEARCH may hold "\r\n"
                except UnicodeDecodeError as e:
                    raise ActionError(f"{edit.path}: not UTF-8 text, cannot be edited ({e.reason})") from e
            ws.write_text(edit.path, apply_edit(original, edit))
            return f"edited {edit.path}\n" + (self.run_tests() if self.test_command else "")
        if action.kind == "run":
            r = ws.run(action.arg, timeout_s=min(self.cfg.command_timeout_s, max(0.1, self.left())))
            return f"{r.describe()}\n{r.output}"
        if action.kind == "test":
            return self.run_tests()
        self.done = "submitted"
        return "submitted"


def run_agent(task: str, ws: Workspace, model: ChatModel, cfg: AgentConfig | None = None,
              test_command: str | None = None, trajectory: str | Path | None = None,
              stop: threading.Event | None = None, candidate: int = 0) -> AgentResult:
    """Run the agent on ``task`` in ``ws`` until the tests pass, it submits, or a budget ends.

    ``trajectory``: a JSONL file written turn by turn (a start row, one row per turn, an end row).
    ``stop``: set from elsewhere to end the run before its next turn (``exit_reason`` ``stopped``).
    """
    cfg = cfg or AgentConfig()
    t0 = time.monotonic()
    state = _Run(ws, cfg, test_command, t0)
    log = JsonlLog(Path(trajectory)) if trajectory is not None else None
    if log is not None and log.rows:
        log.close()
        raise ValueError(f"{trajectory}: already holds a trajectory; choose a new file")
    record = log.append if log is not None else (lambda row: None)
    messages = [{"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": task_message(task, ws, test_command)}]
    record({"type": "start", "task": task, "test_command": test_command, "model": model.name,
            "config": cfg.to_dict(), "candidate": candidate, "protect": list(ws.protect)})
    prompt_tokens = completion_tokens = steps = 0
    reason: ExitReason | None = None
    detail = ""
    try:
        while reason is None:
            if stop is not None and stop.is_set():
                reason, detail = "stopped", "another candidate passed the tests first"
            elif steps >= cfg.max_steps:
                reason, detail = "max_steps", f"used all {cfg.max_steps} steps"
            elif prompt_tokens + completion_tokens >= cfg.max_tokens:
                reason, detail = "max_tokens", f"spent {prompt_tokens + completion_tokens} of {cfg.max_tokens} tokens"
            elif state.left() <= 0:
                reason, detail = "max_seconds", f"ran out of its {cfg.max_seconds:g}s"
            if reason is not None:
                break
            turn_t0 = time.monotonic()
            try:
                reply = model.chat(messages, 1, cfg.temperature, cfg.reply_tokens, cfg.seed + candidate)[0]
            except ClientError as e:
                reason, detail = "model_error", str(e)
                break
            steps += 1
            prompt_tokens += reply.prompt_tokens
            completion_tokens += reply.completion_tokens
            action: Action | None = None
            try:
                action = parse_action(reply.text)
                observation = state.act(action)
            except (ActionError, WorkspaceError) as e:
                observation = f"error: {e}"
            observation = _cut(observation, cfg.observation_chars)
            messages += [{"role": "assistant", "content": reply.text}, {"role": "user", "content": observation}]
            record({"type": "turn", "step": steps, "reply": reply.text,
                    "action": None if action is None else {"kind": action.kind, "arg": action.arg},
                    "observation": observation, "prompt_tokens": reply.prompt_tokens,
                    "completion_tokens": reply.completion_tokens, "seconds": round(time.monotonic() - turn_t0, 3)})
            if state.done is not None:
                reason = state.done
                detail = "the tests pass" if reason == "tests_passed" else "the agent submitted"
        if reason == "submitted" and test_command:
            state.run_tests()  # the verdict of what was submitted
        result = AgentResult(reason, state.tests_passed, steps, prompt_tokens, completion_tokens,
                             round(time.monotonic() - t0, 3), ws.diff(), ws.protected_changes(), detail, candidate)
        if result.protected_changed:
            result.detail += f"; protected files changed: {', '.join(result.protected_changed[:5])}"
        record({"type": "end", **result.to_dict(), "diff": result.diff})
        return result
    finally:
        if log is not None:
            log.close()


def read_trajectory(path: str | Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A trajectory's start row and its turns; ``ValueError`` (``JsonlError`` for a bad line) for a file
    that is not one."""
    rows = read_jsonl(path)
    if not rows or rows[0].get("type") != "start":
        raise ValueError(f"{path}: not an agent trajectory (no start row)")
    return rows[0], [r for r in rows if r.get("type") == "turn"]


def replay(path: str | Path, repo: str | Path, limits: ShellLimits | None = None,
           trajectory: str | Path | None = None) -> AgentResult:
    """Run the replies recorded in trajectory ``path`` again, on a fresh copy of ``repo``."""
    start, turns = read_trajectory(path)
    cfg = AgentConfig.from_dict(start["config"])
    model = ScriptedModel([t["reply"] for t in turns], name=f"replay:{Path(path).name}")
    with Workspace(repo, tuple(start.get("protect", DEFAULT_PROTECT)), limits) as ws:
        return run_agent(start["task"], ws, model, cfg, start.get("test_command"), trajectory,
                         candidate=start.get("candidate", 0))


def run_candidates(task: str, repo: str | Path, model: ChatModel, k: int, cfg: AgentConfig | None = None,
                   test_command: str | None = None, trajectory_dir: str | Path | None = None,
                   protect: tuple[str, ...] = DEFAULT_PROTECT, limits: ShellLimits | None = None,
                   ) -> tuple[AgentResult, list[AgentResult], Workspace]:
    """``k`` agent runs on ``k`` copies in parallel; the first whose tests pass wins (else candidate 0).

    Returns the winner, every result (by candidate) and the winner's workspace, still open so the
    caller can apply it (close it when done); the other copies are removed.
    """
    if k < 1:
        raise ValueError(f"candidates must be >= 1, got {k}")
    cfg = cfg or AgentConfig()
    stop = threading.Event()
    spaces = [Workspace(repo, protect, limits) for _ in range(k)]
    results: dict[int, AgentResult] = {}
    winner: int | None = None
    tdir = Path(trajectory_dir) if trajectory_dir is not None else None
    if tdir is not None:
        tdir.mkdir(parents=True, exist_ok=True)
    try:
        with ThreadPoolExecutor(k) as pool:
            futs = {}
            for i, ws in enumerate(spaces):
                c = cfg if i == 0 or k == 1 else cfg.replace(temperature=max(cfg.temperature, 0.8))
                traj = tdir / f"candidate-{i}.jsonl" if tdir is not None else None
                futs[pool.submit(run_agent, task, ws, model, c, test_command, traj, stop, i)] = i
            for f in as_completed(futs):
                i = futs[f]
                results[i] = f.result()
                if winner is None and results[i].tests_passed and not results[i].protected_changed:
                    winner = i
                    stop.set()
        chosen = winner if winner is not None else 0
        for i, ws in enumerate(spaces):
            if i != chosen:
                ws.close()
        ordered = [results[i] for i in range(k)]
        return ordered[chosen], ordered, spaces[chosen]
    except BaseException:
        for ws in spaces:
            ws.close()
        raise


__all__ = ["AgentConfig", "AgentResult", "ExitReason", "read_trajectory", "replay", "run_agent", "run_candidates"]
