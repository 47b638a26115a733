"""What a newcomer meets first in ``smallcode lsp`` and ``smallcode stats`` (issue 27): a request about a
document the editor never opened, a log with nothing shown yet, the model's load time, the CLI's errors."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from lsp_helpers import inline, lsp_session, server_stats  # type: ignore[import-not-found]
from pygls.exceptions import JsonRpcException

from factories import wait_for
from smallcode.cli.main import main as cli_main
from smallcode.cli.stats import stats as stats_command
from smallcode.lsp.feedback import append
from smallcode.lsp.models import LocalModel


async def _stderr_until(capfd: pytest.CaptureFixture[str], text: str, timeout_s: float = 20.0) -> str:
    """The server's stderr (pytest-lsp's client copies it to ours as it comes) until it holds ``text``."""
    err, deadline = "", time.monotonic() + timeout_s
    while text not in err and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        err += capfd.readouterr().err
    return err


@pytest.mark.asyncio
async def test_unknown_document_is_an_error_answer_and_one_log_line(checkpoint: Path, tmp_path: Path,
                                                                    capfd: pytest.CaptureFixture[str]) -> None:
    async with lsp_session(["--model", str(checkpoint)], tmp_path) as (client, _):
        with pytest.raises(JsonRpcException, match="unknown document") as error:
            await inline(client, "file:///home/dev/never_opened.py", 0, 0)
        assert error.value.code == -32602  # InvalidParams, as the server's docstring and docs/editors.md say
        err = await _stderr_until(capfd, "unknown document")
        await server_stats(client)  # the server answers on: it kept serving
        await asyncio.sleep(0.5)  # whatever it logged after the answer has reached us too
        err += capfd.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err, err
    assert len(lines) == 1 and "unknown document" in lines[0] and "WARNING" in lines[0], lines


def test_the_model_loads_before_any_request(checkpoint: Path) -> None:
    """``smallcode lsp --model`` makes its LocalModel before it reads stdin: the load starts there, not
    at the first completion (which then waits only for what is left of it)."""
    model = LocalModel(checkpoint)
    try:
        wait_for(lambda: model.scheduler is not None, "the model to load with no request", timeout_s=60)
        assert model.calls == 0
    finally:
        asyncio.run(model.close())


def _log(path: Path, *events: dict) -> Path:
    for event in events:
        append(path, event)
    return path


def test_stats_with_nothing_shown_says_so_instead_of_zero(tmp_path: Path) -> None:
    log = _log(tmp_path / "log.jsonl", {"event": "served", "latency_ms": 50.0}, {"event": "served", "latency_ms": 70.0})
    out = CliRunner().invoke(stats_command, ["--log", str(log)])
    assert out.exit_code == 0, out.output
    assert "acceptance rate: n/a (no completions shown yet)" in out.output and "0.0%" not in out.output
    summary = json.loads(CliRunner().invoke(stats_command, ["--log", str(log), "--json"]).output)
    assert summary["served"] == 2 and summary["acceptance_rate"] is None and summary["rate_of"] is None


@pytest.mark.parametrize("events, rate, of_served", [
    # An editor that only runs the items' accept command: the rate is over what was served, and says so.
    ([{"event": "served"}] * 4 + [{"event": "accepted", "chars": 3}], "25.0%", True),
    # Shown and nothing accepted is a measured 0%.
    ([{"event": "served"}, {"event": "shown"}, {"event": "dismissed"}], "0.0%", False),
])
def test_stats_rate_over_shown_or_served(tmp_path: Path, events: list[dict], rate: str, of_served: bool) -> None:
    out = CliRunner().invoke(stats_command, ["--log", str(_log(tmp_path / "log.jsonl", *events))])
    assert f"acceptance rate: {rate}" in out.output
    assert ("of served" in out.output) == of_served


# ------------------------------------------------------------------ the CLI's errors (the item 7)
def test_lsp_and_stats_errors_are_one_line_exit_1_and_usage_errors_exit_2(tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "log.jsonl"
    bad.write_text('{"event": "served"}\nnot json\n{"event": "shown"}\n')
    assert cli_main(["stats", "--log", str(bad)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(bad) in err and len(err.strip().splitlines()) == 1, err
    for args in (["lsp"], ["lsp", "--endpoint", "ftp://example.org"], ["lsp", "--model", str(tmp_path / "none")],
                 ["stats", "--log", str(tmp_path)]):  # a directory, not a log
        assert cli_main(args) == 2, args
        err = capsys.readouterr().err
        assert err.startswith("Usage: smallcode ") and "\nError: " in err, err  # click's own usage form
