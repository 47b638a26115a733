"""The agent's search action: a regular expression that matches nothing answers the lines of the
passages most like its words (BM25 over the copy's Python files) instead of a bare "no matches"."""

from __future__ import annotations

from pathlib import Path

from smallcode.agent import AgentConfig, ScriptedModel, Workspace, run_agent
from smallcode.fileio import read_jsonl

TEST_COMMAND = "python tests/test_calc.py"


def _observations(ws: Workspace, replies: list[str], tmp_path: Path) -> list[str]:
    log = tmp_path / "t.jsonl"
    run_agent("look around", ws, ScriptedModel([*replies, "```submit\n```"]), AgentConfig(), TEST_COMMAND, log)
    return [r["observation"] for r in read_jsonl(log) if r["type"] == "turn"]


def test_a_search_that_matches_nothing_points_at_the_nearest_lines(repo: Path, tmp_path: Path) -> None:
    with Workspace(repo) as ws:
        exact, fuzzy, nothing = _observations(ws, ["```search\ndef add\\(\n```", "```search\nmul_numbers\n```",
                                                   "```search\nzebra\n```"], tmp_path)[:3]
    assert exact == "calc.py:1: def add(a, b):"  # a regular expression that matches: as before
    # mul_numbers matches no line; "mul" is a word of it, found in calc.py and the test
    assert fuzzy.startswith("no matches; the lines of the passages most like its words:\n")
    assert set(fuzzy.splitlines()[1:]) == {"calc.py:5: def mul(a, b):",
                                          "tests/test_calc.py:3: from calc import add, mul",
                                          "tests/test_calc.py:5: assert mul(2, 3) == 6"}
    assert nothing == "no matches"
