"""The trainer as separate processes: SIGKILL and resume, a kill during a save, two gloo processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from trainer_helpers import tiny_config  # tests/train/trainer_helpers.py

import factories
from smallcode.train.checkpoint import latest_checkpoint
from smallcode.train.trainer import read_metrics

# Runs the CLI; with STALL_AT set, the save of that step stops after writing everything but
# before the rename, and leaves a marker, so the test can kill it mid-save.
DRIVER = """
import os, sys, time, torch
real_save = torch.save
def stalling_save(obj, f, *args, **kwargs):
    real_save(obj, f, *args, **kwargs)
    if isinstance(obj, dict) and obj.get("step") == int(os.environ.get("STALL_AT", "-1")):
        open(os.environ["STALL_MARK"], "w").close()
        time.sleep(300)
torch.save = stalling_save
from smallcode.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


def cli(tmp_path: Path, *args: str, env: dict | None = None) -> subprocess.Popen:
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    return subprocess.Popen([sys.executable, str(driver), "train", *args, "--quiet"],
                            env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen) -> None:
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err[-2000:]


def losses(run: Path) -> list[float]:
    return [r["loss"] for r in read_metrics(run / "metrics.jsonl") if r["type"] == "train"]


def wait_for(predicate: Callable[[], bool], proc: subprocess.Popen, what: str, timeout: float = 120.0) -> None:
    """``factories.wait_for``, failing at once if the run ``proc`` ends before ``predicate`` holds."""
    def ready() -> bool:
        if predicate():
            return True
        assert proc.poll() is None, f"the run ended before {what}: {proc.stderr.read()[-2000:]}"
        return False

    factories.wait_for(ready, what, timeout_s=timeout, poll_s=0.02)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[float]]:
    """An uninterrupted run, in a process of its own like the runs it is compared with."""
    root = tmp_path_factory.mktemp("reference")
    config = root / "cfg.yaml"
    tiny_config(steps=24, save_every=4, eval_every=0).save(config)
    finish(cli(root, str(config), "--out", str(root / "run")))
    return config, losses(root / "run")


def test_sigkill_then_resume_gives_bit_identical_losses(tmp_path: Path, reference: tuple[Path, list[float]]) -> None:
    config, expected = reference
    run = tmp_path / "run"
    proc = cli(tmp_path, str(config), "--out", str(run))
    wait_for(lambda: len(losses(run)) >= 10, proc, "step 10")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert 10 <= len(losses(run)) < 24
    assert latest_checkpoint(run) is not None
    finish(cli(tmp_path, str(config), "--out", str(run), "--resume"))
    assert losses(run) == expected  # exactly: same floats, same order


def test_kill_during_a_save_keeps_the_previous_checkpoint(tmp_path: Path, reference: tuple[Path, list[float]]) -> None:
    config, expected = reference
    run, mark = tmp_path / "run", tmp_path / "stalled"
    proc = cli(tmp_path, str(config), "--out", str(run), env={"STALL_AT": "8", "STALL_MARK": str(mark)})
    wait_for(mark.exists, proc, "the save of step 8")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    leftovers = list((run / "checkpoints").glob(".step_0000008*"))
    assert leftovers, "the killed save should have left its temporary directory"
    assert latest_checkpoint(run).name == "step_0000004"
    assert not list((run / "checkpoints").glob(".step_*")), "leftovers are removed on the next start"
    finish(cli(tmp_path, str(config), "--out", str(run), "--resume"))
    assert losses(run) == expected


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_two_gloo_processes_match_one_process_with_the_same_global_batch(tmp_path: Path, parallel: str) -> None:
    one, two = tmp_path / "one.yaml", tmp_path / "two.yaml"
    tiny_config(steps=4, batch_size=4, eval_every=2).save(one)
    # FSDP2 also accumulates (two micro-batches of one row), syncing only after the last
    per_process = {"batch_size": 2} if parallel == "ddp" else {"batch_size": 1, "grad_accum": 2}
    tiny_config(steps=4, eval_every=2, parallel=parallel, **per_process).save(two)
    finish(cli(tmp_path, str(one), "--out", str(tmp_path / "single")))
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "-m", "smallcode.cli.main", "train", str(two), "--out", str(tmp_path / "pair"), "--quiet"],
        env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    torch.testing.assert_close(torch.tensor(losses(tmp_path / "pair")), torch.tensor(losses(tmp_path / "single")),
                               rtol=1e-5, atol=1e-5)
    val = [[r["val_loss"] for r in read_metrics(tmp_path / d / "metrics.jsonl") if r["type"] == "eval"]
           for d in ("single", "pair")]
    assert len(val[0]) == len(val[1]) == 2
    # the model written by the pair is the one the single process trained
    from smallcode.model.checkpoint import Checkpoint

    a, b = (Checkpoint.open(tmp_path / run / "final").load_model() for run in ("single", "pair"))
    # Adam divides by the gradient's own scale, so a weight whose gradient is near zero moves by up to
    # lr (1e-2) whatever the float order of the two ranks' sums: 1e-4 is 1% of one step's move.
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(q, p, rtol=1e-4, atol=1e-4)
