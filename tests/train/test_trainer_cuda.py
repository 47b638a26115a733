"""The trainer on a CUDA GPU: bf16 autocast, compiled blocks, FSDP2/DDP under torchrun, resume.

CI has no GPU, so these skip there; they ran on a lent H200 (see docs/training.md, "On a GPU").
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from trainer_helpers import Interrupt, dies_at_call, tiny_config  # tests/train/trainer_helpers.py

from smallcode.model.checkpoint import Checkpoint
from smallcode.train.checkpoint import latest_checkpoint
from smallcode.train.config import TrainConfig
from smallcode.train.trainer import Trainer, read_metrics

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def moe_config(**changes: object) -> TrainConfig:
    """The tiny MoE (8 experts, top-2, window 32 with 2 global tokens) on 128-token rows."""
    cfg = tiny_config(steps=12, batch_size=8, lr=3e-3, eval_every=6, save_every=4)
    over = {**cfg.model_overrides, "n_experts": 8, "top_k": 2, "window": 32, "n_global": 2}
    cfg = cfg.replace(model_overrides=over, data=cfg.data.replace(seq_len=128))
    return cfg.replace(**changes) if changes else cfg


def train_losses(run_dir: Path) -> list[float]:
    return [r["loss"] for r in read_metrics(run_dir / "metrics.jsonl") if r["type"] == "train"]


def test_bf16_autocast_trains_close_to_float32_with_float32_weights(tmp_path: Path) -> None:
    Trainer(moe_config(), tmp_path / "bf16").run()
    Trainer(moe_config(precision="float32"), tmp_path / "fp32").run()
    bf16, fp32 = torch.tensor(train_losses(tmp_path / "bf16")), torch.tensor(train_losses(tmp_path / "fp32"))
    assert torch.isfinite(bf16).all()
    assert not torch.equal(bf16, fp32)  # autocast was in effect
    torch.testing.assert_close(bf16, fp32, rtol=0.03, atol=0.03)
    assert bf16[-1] < bf16[0] - 0.5
    with safe_open(str(tmp_path / "bf16" / "final" / "model.safetensors"), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float32}  # master weights stay float32


def test_compiled_blocks_on_cuda_train_like_eager_ones(tmp_path: Path) -> None:
    # inductor on CUDA in bf16: the grouped expert matmul is captured in the graph here
    Trainer(moe_config(steps=4), tmp_path / "eager").run()
    Trainer(moe_config(steps=4, compile=True), tmp_path / "compiled").run()
    torch.testing.assert_close(torch.tensor(train_losses(tmp_path / "compiled")),
                               torch.tensor(train_losses(tmp_path / "eager")), rtol=0.02, atol=0.02)


def test_activation_checkpointing_on_cuda(tmp_path: Path) -> None:
    Trainer(moe_config(steps=4, precision="float32"), tmp_path / "a").run()
    Trainer(moe_config(steps=4, precision="float32", activation_checkpointing=True), tmp_path / "b").run()
    torch.testing.assert_close(torch.tensor(train_losses(tmp_path / "b")), torch.tensor(train_losses(tmp_path / "a")),
                               rtol=1e-4, atol=1e-4)


def test_resume_on_cuda_continues_the_same_run(tmp_path: Path) -> None:
    # float32 so that only the order of atomic adds in the gather's backward differs between runs
    cfg = moe_config(steps=10, save_every=4, precision="float32")
    Trainer(cfg, tmp_path / "straight").run()
    with pytest.raises(Interrupt):
        Trainer(cfg, tmp_path / "broken", objective=dies_at_call(7)).run()
    assert latest_checkpoint(tmp_path / "broken").name == "step_0000004"
    Trainer(cfg, tmp_path / "broken").run(resume=True)
    torch.testing.assert_close(torch.tensor(train_losses(tmp_path / "broken")),
                               torch.tensor(train_losses(tmp_path / "straight")), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_torchrun_on_one_gpu_wraps_and_matches_one_process(tmp_path: Path, parallel: str) -> None:
    cfg = moe_config(steps=6, precision="float32")
    Trainer(cfg, tmp_path / "single").run()
    cfg.replace(parallel=parallel).save(tmp_path / "run.yaml")
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "1",
         "-m", "smallcode.cli.main", "train", str(tmp_path / "run.yaml"), "--out", str(tmp_path / "tr"), "--quiet"],
        env=dict(os.environ), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    torch.testing.assert_close(torch.tensor(train_losses(tmp_path / "tr")),
                               torch.tensor(train_losses(tmp_path / "single")), rtol=1e-4, atol=1e-4)
    a, b = (Checkpoint.open(tmp_path / run / "final").load_model() for run in ("single", "tr"))
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        torch.testing.assert_close(q, p, rtol=1e-3, atol=1e-4, msg=name)
