"""The loop's mechanics with scripted models: a known fix ends the run, trajectories replay, candidates
race, and the user's repository changes only when the diff is applied."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from agent_helpers import TEST_COMMAND, tree_digest

from smallcode.agent import AgentConfig, ScriptedModel, Workspace, replay, run_agent, run_candidates
from smallcode.agent.actions import search_replace_block
from smallcode.agent.loop import read_trajectory
from smallcode.agent.models import Reply
from smallcode.cli.main import main as cli_main
from smallcode.fileio import JsonlError, read_jsonl

FIX = search_replace_block("calc.py", "    return a - b\n", "    return a + b\n")
WRONG = search_replace_block("calc.py", "    return a - b\n", "    return a * b\n")


def test_a_known_fix_passes_the_tests_and_ends_the_run(repo: Path, tmp_path: Path) -> None:
    before = tree_digest(repo)
    model = ScriptedModel(["```read\ncalc.py\n```", "```test\n```", FIX, "```submit\n```"])
    with Workspace(repo) as ws:
        result = run_agent("fix add", ws, model, AgentConfig(), TEST_COMMAND, tmp_path / "t.jsonl")
        assert (result.exit_reason, result.tests_passed, result.steps) == ("tests_passed", True, 3)
        assert "+    return a + b" in result.diff and "-    return a - b" in result.diff
        assert tree_digest(repo) == before  # nothing applied yet
        ws.apply_to()
    assert "return a + b" in (repo / "calc.py").read_text()
    rows = read_jsonl(tmp_path / "t.jsonl")
    assert [r["type"] for r in rows] == ["start", "turn", "turn", "turn", "end"]
    assert "tests FAILED" in rows[2]["observation"] and "tests PASSED" in rows[3]["observation"]


def test_submit_without_passing_tests_is_reported(repo: Path) -> None:
    with Workspace(repo) as ws:
        result = run_agent("fix add", ws, ScriptedModel([WRONG, "```submit\n```"]), AgentConfig(), TEST_COMMAND)
    assert (result.exit_reason, result.tests_passed) == ("submitted", False)


def test_replay_gives_the_same_turns_and_diff(repo: Path, tmp_path: Path) -> None:
    first = tmp_path / "first.jsonl"
    with Workspace(repo) as ws:
        original = run_agent("fix add", ws, ScriptedModel(["```search\nreturn\n```", WRONG, FIX]), AgentConfig(),
                             TEST_COMMAND, first)
    again = replay(first, repo, trajectory=tmp_path / "again.jsonl")
    assert (again.exit_reason, again.steps, again.diff) == (original.exit_reason, original.steps, original.diff)

    def turns(p: Path) -> list[tuple[str, str]]:
        return [(r["reply"], r["observation"]) for r in read_jsonl(p) if r["type"] == "turn"]

    assert turns(tmp_path / "again.jsonl") == turns(first)
    # A trajectory is read under the one JSONL policy: a torn last row is left out, a bad one before it named.
    lines = first.read_text().splitlines()
    torn = tmp_path / "torn.jsonl"
    torn.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:10])
    assert read_trajectory(torn) == read_trajectory(first)
    torn.write_text("\n".join([lines[0], lines[1][:10], *lines[2:]]) + "\n")
    with pytest.raises(JsonlError, match=r"torn\.jsonl:2: not valid JSON"):
        read_trajectory(torn)


class BySeed:
    """A chat model whose candidate (its seed) decides what it says: only candidate 2 knows the fix."""

    name = "by-seed"

    def __init__(self) -> None:
        self.calls: dict[int, int] = {}
        self.lock = threading.Lock()

    def chat(self, messages: list[dict[str, str]], n: int, temperature: float, max_tokens: int,
             seed: int) -> list[Reply]:
        with self.lock:
            k = self.calls[seed] = self.calls.get(seed, 0) + 1
        text = (FIX if k == 1 else "```submit\n```") if seed == 2 else ("```bash\necho thinking\n```" if k < 3
                                                                       else WRONG)
        return [Reply(text, 10, 5)] * n


def test_candidates_keep_the_first_that_passes(repo: Path, tmp_path: Path) -> None:
    model = BySeed()
    best, results, ws = run_candidates("fix add", repo, model, 3, AgentConfig(max_steps=6), TEST_COMMAND,
                                       tmp_path / "traj")
    try:
        assert best.candidate == 2 and best.tests_passed
        assert [r.candidate for r in results] == [0, 1, 2]
        assert all(not r.tests_passed for r in results[:2])
        assert "return a + b" in (ws.path / "calc.py").read_text()
    finally:
        ws.close()
    assert sorted(p.name for p in (tmp_path / "traj").iterdir()) == [f"candidate-{i}.jsonl" for i in range(3)]


def test_cli_replays_a_trajectory_and_prints_the_diff(repo: Path, tmp_path: Path, capsys) -> None:
    traj = tmp_path / "t.jsonl"
    with Workspace(repo) as ws:
        run_agent("fix add", ws, ScriptedModel([FIX]), AgentConfig(), TEST_COMMAND, traj)
    assert cli_main(["agent", "--repo", str(repo), "--replay", str(traj)]) == 0
    out = capsys.readouterr()
    assert "+    return a + b" in out.out and "exit_reason=tests_passed" in out.err
    assert "return a - b" in (repo / "calc.py").read_text()  # replay never applies


def test_cli_needs_a_model_or_a_replay(repo: Path, capsys) -> None:
    assert cli_main(["agent", "--repo", str(repo), "fix it"]) != 0
    assert "exactly one of --model and --endpoint" in capsys.readouterr().err


def test_edits_keep_crlf_line_endings(repo: Path) -> None:
    (repo / "crlf.py").write_bytes(b"x = 1\r\ny = 2\r\n")
    with Workspace(repo) as ws:
        run_agent("x", ws, ScriptedModel([search_replace_block("crlf.py", "y = 2\r\n", "y = 3\r\n")]),
                  AgentConfig(max_steps=1))
        assert (ws.path / "crlf.py").read_bytes() == b"x = 1\r\ny = 3\r\n"
