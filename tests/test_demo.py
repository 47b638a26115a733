from __future__ import annotations

import json

from smallcode.cli.main import main as cli_main


def test_demo_learns_and_checkpoints(tmp_path, capsys) -> None:
    rc = cli_main(["demo", "--out", str(tmp_path), "--preset", "tiny", "--steps", "30", "--batch", "4",
                   "--seq-len", "64", "--corpus-bytes", "1000000"])
    assert rc == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["reload_bit_exact"] is True
    assert report["val_loss_after"] < report["val_loss_before"] - 1.0  # from ~ln(256) towards byte statistics
    assert (tmp_path / "checkpoint" / "model.safetensors").is_file()
    assert json.loads((tmp_path / "report.json").read_text()) == report
