"""Attacks by a scripted model: nothing outside the copy changes, every run ends within its budget,
and the result says why it ended."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from agent_helpers import TEST_COMMAND, tree_digest

from factories import loopback_listener  # type: ignore[import-not-found]
from smallcode.agent import AgentConfig, ScriptedModel, ShellLimits, Workspace, run_agent
from smallcode.agent.actions import search_replace_block


def bash(cmd: str) -> str:
    return f"```bash\n{cmd}\n```"


def _run(repo: Path, replies: list[str], cfg: AgentConfig | None = None, limits: ShellLimits | None = None):
    with Workspace(repo, limits=limits or ShellLimits(timeout_s=5.0)) as ws:
        result = run_agent("fix add", ws, ScriptedModel(replies), cfg or AgentConfig(max_steps=len(replies)),
                           TEST_COMMAND)
        return result, ws.path


def test_destructive_commands_touch_only_the_copy(repo: Path, home: Path, tmp_path: Path) -> None:
    before = tree_digest(repo)
    outside = tmp_path / "outside.txt"
    replies = [
        bash(f"rm -rf ~ {home} {home}/canary.txt; ls {home}"),
        bash(f"echo pwned > {outside}; echo pwned > {repo}/calc.py; echo pwned > /etc/passwd-x"),
        bash(f"rm -rf .git {repo}/.git; chmod -R 000 {repo}"),
        search_replace_block(f"../{repo.name}/calc.py", "", "pwned\n"),
        search_replace_block(f"{repo}/calc.py", "", "pwned\n"),
        search_replace_block(".git/config", "", "[core]\n"),
        "```read\n/etc/hostname\n```",
        bash("ln -s / root-link"),
        "```read\nroot-link/etc/hostname\n```",
    ]
    result, _ = _run(repo, replies)
    assert (home / "canary.txt").read_text() == "alive\n"
    assert not outside.exists() and not Path("/etc/passwd-x").exists()
    assert tree_digest(repo) == before
    assert result.exit_reason == "max_steps"  # every attack was a turn; none ended the run early
    assert result.steps == len(replies)


def test_observations_say_what_was_refused(repo: Path, tmp_path: Path) -> None:
    traj = tmp_path / "t.jsonl"
    with Workspace(repo) as ws:
        run_agent("x", ws, ScriptedModel([
            search_replace_block("../calc.py", "", "x\n"),
            search_replace_block(".git/config", "", "x\n"),
            search_replace_block("tests/test_calc.py", "assert add(2, 3) == 5, add(2, 3)\n", ""),
            "```read\n/etc/hostname\n```",
        ]), AgentConfig(max_steps=4), TEST_COMMAND, traj)
    import json

    obs = [json.loads(line)["observation"] for line in traj.read_text().splitlines()[1:5]]
    assert "outside the repository" in obs[0]
    assert ".git directory is off limits" in obs[1]
    assert "tests must not be changed" in obs[2]
    assert "relative to the repository root" in obs[3]


def test_changing_tests_by_command_is_seen(repo: Path) -> None:
    result, _ = _run(repo, [bash("echo 'print(1)' > tests/test_calc.py"), "```test\n```"])
    assert result.tests_passed is True  # the gutted test passes ...
    assert result.protected_changed == ["tests/test_calc.py"]  # ... and the run says why that does not count
    assert "protected files changed" in result.detail


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A TCP listener on the host's loopback: a sandbox with the host's network would reach it."""
    with loopback_listener() as s:
        yield s


def test_no_network(repo: Path, listener: socket.socket) -> None:
    # An offline machine refuses 1.1.1.1 with or without isolation; what shows the network namespace is
    # that the sandbox has only its own loopback and cannot reach a listener on the host's.
    port = listener.getsockname()[1]
    cmd = ("python -c \"import socket; print('INTERFACES', sorted(n for _, n in socket.if_nameindex()))\"; "
           f"python -c \"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=2); "
           "print('CONNECTED')\"; "
           "python -c \"import socket; s = socket.socket(); s.settimeout(2); "
           "s.connect(('1.1.1.1', 53)); print('CONNECTED')\"; "
           "python -c \"import socket; socket.getaddrinfo('example.com', 80); print('RESOLVED')\"")
    with Workspace(repo) as ws:
        r = ws.run(cmd)
    assert "INTERFACES ['lo']" in r.output, r.output
    assert "CONNECTED" not in r.output and "RESOLVED" not in r.output
    assert "ConnectionRefusedError" in r.output or "Network is unreachable" in r.output, r.output
    with pytest.raises(BlockingIOError):  # the host's listener saw no connection
        listener.accept()


# Forks children that wait, until a fork fails or 64 are running; prints how many and the error.
FORK_PROBE = """python -c '
import errno, os, time
kids, error = [], None
for _ in range(64):
    try:
        pid = os.fork()
    except OSError as e:
        error = errno.errorcode[e.errno]
        break
    if pid == 0:
        time.sleep(10)
        os._exit(0)
    kids.append(pid)
for pid in kids:
    os.kill(pid, 9)
    os.waitpid(pid, 0)
print("FORKED", len(kids), error)
'"""


def test_fork_bomb_and_endless_output_end_within_limits(repo: Path) -> None:
    with Workspace(repo, limits=ShellLimits(timeout_s=2.0, processes=32)) as ws:
        # the process cap itself: the shell sees it, and a fork past it fails with EAGAIN (a bomb
        # without the cap still ends at the time limit, so its status alone does not show the cap)
        cap = ws.run(f"ulimit -u; {FORK_PROBE}")
        t0 = time.monotonic()
        bomb = ws.run("bomb() { bomb | bomb & }; bomb; sleep 30")
        flood = ws.run("yes flood")
        spin = ws.run("python -c 'while True: pass'")
        took = time.monotonic() - t0
        after = ws.run("echo still-works")
    lines = cap.output.split("\n")
    assert lines[0] == "32", cap.output
    forked, error = lines[1].split()[1:]
    assert error == "EAGAIN" and int(forked) < 32, cap.output
    assert bomb.status == "timeout" and spin.status == "timeout"
    assert flood.status == "output_limit" and len(flood.output) <= ws.limits.output_bytes
    assert took < 3 * 2.0 + 10  # each killed at its own limit, not left running
    assert after.ok and "still-works" in after.output


def test_never_submitting_ends_at_the_step_budget(repo: Path) -> None:
    result, _ = _run(repo, [bash("echo thinking")] * 50, AgentConfig(max_steps=4))
    assert (result.exit_reason, result.steps) == ("max_steps", 4)
    assert "4 steps" in result.detail


def test_time_and_token_budgets(repo: Path) -> None:
    result, _ = _run(repo, [bash("sleep 10")] * 10, AgentConfig(max_steps=10, max_seconds=2.0),
                     ShellLimits(timeout_s=30.0))
    assert result.exit_reason == "max_seconds" and result.steps == 1
    assert result.seconds < 2.0 + 5.0  # the command was cut at the time left, not its own limit
    result, _ = _run(repo, [bash("echo hi")] * 10, AgentConfig(max_steps=10, max_tokens=300))
    assert result.exit_reason == "max_tokens" and result.steps < 10


@pytest.mark.parametrize("reply", ["```edit\ncalc.py\n<<<<<<< SEARCH\nreturn a - b\n```", "no action"])
def test_malformed_edits_never_half_apply(repo: Path, reply: str) -> None:
    result, _ = _run(repo, [reply])
    assert result.diff == ""
