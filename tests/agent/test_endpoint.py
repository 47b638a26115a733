"""The agent against an OpenAI-compatible chat endpoint (a scripted server on 127.0.0.1), through the
CLI: the conversation is sent whole, and --apply writes the passing change to the repository."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "backends"))
from agent_helpers import TEST_COMMAND  # noqa: E402
from test_openai import Server  # noqa: E402

from smallcode.agent.actions import search_replace_block  # noqa: E402
from smallcode.cli.main import main as cli_main  # noqa: E402


def _answer(text: str) -> tuple[int, bytes]:
    return 200, json.dumps({"choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]}).encode()


def test_endpoint_run_applies_a_passing_fix(repo: Path, tmp_path: Path, capsys) -> None:
    server = Server()
    try:
        server.plan = [_answer("Let me look.\n```read\ncalc.py\n```"),
                       _answer(search_replace_block("calc.py", "    return a - b\n", "    return a + b\n"))]
        code = cli_main(["agent", "fix add", "--repo", str(repo), "--endpoint", server.url, "--test", TEST_COMMAND,
                         "--apply", "--trajectory", str(tmp_path / "t.jsonl")])
    finally:
        server.httpd.shutdown()
    err = capsys.readouterr().err
    assert code == 0, err
    assert "applied to" in err and "exit_reason=tests_passed" in err
    assert "return a + b" in (repo / "calc.py").read_text()
    path, body, _ = server.requests[1]
    assert path == "/v1/chat/completions"
    assert [m["role"] for m in body["messages"]] == ["system", "user", "assistant", "user"]
    assert "def add(a, b):" in body["messages"][3]["content"]  # the file it read came back to it


def test_failing_run_applies_nothing(repo: Path, capsys) -> None:
    server = Server()
    try:
        server.plan = [_answer("```submit\n```")]
        code = cli_main(["agent", "fix add", "--repo", str(repo), "--endpoint", server.url, "--test", TEST_COMMAND,
                         "--apply"])
    finally:
        server.httpd.shutdown()
    assert code != 0 and "nothing applied" in capsys.readouterr().err
    assert "return a - b" in (repo / "calc.py").read_text()


def test_protect_adds_files_the_agent_must_not_edit(repo: Path, tmp_path: Path, capsys) -> None:
    server = Server()
    try:
        server.plan = [_answer(search_replace_block("calc.py", "    return a - b\n", "    return a + b\n"))]
        code = cli_main(["agent", "fix add", "--repo", str(repo), "--endpoint", server.url, "--test", TEST_COMMAND,
                         "--protect", "calc.py", "--max-steps", "1", "--trajectory", str(tmp_path / "t.jsonl")])
    finally:
        server.httpd.shutdown()
    assert code == 0 and "(no change)" in capsys.readouterr().out
    turn = json.loads((tmp_path / "t.jsonl").read_text().splitlines()[1])
    assert "tests must not be changed" in turn["observation"]
