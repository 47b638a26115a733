"""``smallcode demo`` as a newcomer meets it (issue 27): its help says how long it takes and which
options make it shorter, and the checkpoint it writes runs with ``smallcode generate``, the next step
docs/inference.md gives."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from smallcode.cli.demo import demo
from smallcode.cli.main import main as cli_main


def test_help_says_how_long_and_how_to_shorten(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["demo", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    description = text.split("Options:")[0]
    assert re.search(r"about \d+ (s|min)", description), description  # how long, with the defaults
    named = set(re.findall(r"--[a-z][a-z-]*", description))
    assert {"--steps", "--preset"} <= named, description  # how to make it shorter
    options = {opt for param in demo.params for opt in param.opts}
    assert named <= options, named - options  # each option the help names is one the command has


def test_the_demo_checkpoint_runs_with_generate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    assert cli_main(["demo", "--out", str(out), "--preset", "tiny", "--steps", "2", "--batch", "2",
                     "--seq-len", "32"]) == 0
    assert (out / "checkpoint" / "tokenizer.json").is_file()
    capsys.readouterr()
    assert cli_main(["generate", str(out / "checkpoint"), "def fibonacci(n):", "--max-tokens", "4",
                     "--temperature", "0"]) == 0
    captured = capsys.readouterr()
    assert captured.out.endswith("\n") and not captured.err, captured  # the text streamed, no error
