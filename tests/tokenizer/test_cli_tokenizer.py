"""``smallcode tokenizer train|stats`` through the real entry point."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from factories import STDLIB
from smallcode.cli.main import main
from smallcode.tokenizer import load_tokenizer


def test_train_then_stats(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    corpus = [STDLIB / "json", STDLIB / "string.py"]  # two --corpus paths: a package and a module
    out = tmp_path / "tok"
    argv = [
        "tokenizer",
        "train",
        "--corpus",
        str(corpus[0]),
        str(corpus[1]),
        "--vocab-size",
        "400",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    assert "vocab 400" in capsys.readouterr().out
    tok = load_tokenizer(out)
    sample = tmp_path / "s.py"
    sample.write_text("def f(x):\n    return x\n\nprint(f(1))\n")
    assert main(["tokenizer", "stats", "--tokenizer", str(out), "--files", str(sample), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    n = len(tok.encode(sample.read_text()))
    assert stats["tokens"] == n and stats["lines"] == 4
    assert stats["bytes_per_token"] == round(sample.stat().st_size / n, 4)


def test_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tokenizer", "stats", "--tokenizer", str(tmp_path), "--files", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "no tokenizer file" in err and "Traceback" not in err


def test_hold_out_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from smallcode import corpus

    root = tmp_path / "stdlib"  # a small stand-in for the embedded corpus and its held-out set
    root.mkdir()
    for name in ("textwrap", "glob", "shlex"):
        (root / f"{name}.py").write_text(f"{name}_value = 1\n" * 20)
    monkeypatch.setattr(corpus, "default_corpus", lambda: [root])
    monkeypatch.setattr(corpus, "default_held_out_modules", lambda: frozenset({"textwrap"}))
    for flag, held, documents in [([], 1, 2), (["--no-hold-out"], 0, 3)]:
        out = tmp_path / f"tok{held}"
        assert main(["tokenizer", "train", "--vocab-size", "300", "--out", str(out), *flag]) == 0
        assert f"{documents} documents" in capsys.readouterr().out
        assert json.loads((out / "train_report.json").read_text())["held_out"] == held
