"""``eval agent --suite`` reads its suites as ``eval run --suite`` does: comma-separated, repeated, or both."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import smallcode.eval.agent_bench as agent_bench
from smallcode.cli.main import main


@pytest.mark.parametrize("given", [["repair-humaneval,repair-mbpp"], ["repair-humaneval", "repair-mbpp"],
                                   ["repair-humaneval, repair-mbpp"]])
def test_comma_separated_and_repeated_suites(given: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                             ) -> None:
    loaded: list[str] = []

    def load(suite: str, limit: int | None, repo_file: str | None = None) -> list[Any]:
        loaded.append(suite)
        return []

    def run(*args: Any, **kwargs: Any) -> None:  # the benchmark itself is agent_bench's tests'
        (tmp_path / "out" / "report.md").parent.mkdir(exist_ok=True)
        (tmp_path / "out" / "report.md").write_text("report\n")

    monkeypatch.setattr(agent_bench, "load_repair_suite", load)
    monkeypatch.setattr(agent_bench, "run_repair", run)
    argv = ["eval", "agent", *[a for s in given for a in ("--suite", s)], "--oracle", "--out", str(tmp_path / "out")]
    assert main(argv) == 0
    assert loaded == ["repair-humaneval", "repair-mbpp"]


def test_an_unknown_suite_in_a_list_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["eval", "agent", "--suite", "repair-humaneval,repair-nope", "--oracle", "--out",
                 str(tmp_path / "out")]) == 2
    assert "repair-nope" in capsys.readouterr().err
