"""``smallcode data prepare|verify`` through the real entry point."""

from __future__ import annotations

from pathlib import Path

import pytest

from smallcode.cli.main import main
from smallcode.data import ShardLoader

REPO = Path(__file__).resolve().parents[2]


def test_prepare_verify_and_load(
    small_corpus: Path, tiny_tokenizer_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "shards"
    argv = ["data", "prepare", "--corpus", str(small_corpus), "--tokenizer", str(tiny_tokenizer_dir), "--out", str(out),
            "--config", str(REPO / "configs" / "data" / "prepare.yaml"), "--set", "workers=1", "--set",
            "val_fraction=0.3", "--quiet"]  # fmt: skip
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "30 files" in text and "kept 30" in text
    assert main(["data", "verify", str(out)]) == 0
    assert "ok" in capsys.readouterr().out
    assert ShardLoader(out, 2, 16, seed=0).batch(0).shape == (2, 17)
    # Again without --overwrite: refused with a one-line error.
    assert main(argv) == 1
    assert "already exists" in capsys.readouterr().err


def test_bad_override_is_a_config_error(
    small_corpus: Path, tiny_tokenizer_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["data", "prepare", "--corpus", str(small_corpus), "--tokenizer", str(tiny_tokenizer_dir),
            "--out", str(tmp_path / "o"), "--set", "val_fraction=2"]  # fmt: skip
    assert main(argv) == 1
    assert "val_fraction" in capsys.readouterr().err
