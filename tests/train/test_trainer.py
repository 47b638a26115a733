"""The training loop in one process: schedule, accumulation, resume, non-finite steps, metrics."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from trainer_helpers import Interrupt, dies_at_call, tiny_config, tiny_model_overrides  # tests/train/trainer_helpers.py

from smallcode.config import ConfigError
from smallcode.model.checkpoint import Checkpoint, CheckpointError
from smallcode.train.checkpoint import latest_checkpoint, save_train_checkpoint
from smallcode.train.config import DistillConfig, TrainConfig
from smallcode.train.objectives import next_token_objective
from smallcode.train.optim import build_optimizer, lr_at
from smallcode.train.trainer import Trainer, TrainingError, expert_load_stats, read_metrics


def train_losses(run_dir: Path) -> list[float]:
    return [r["loss"] for r in read_metrics(run_dir / "metrics.jsonl") if r["type"] == "train"]


def test_schedule_warmup_then_cosine_to_floor() -> None:
    peak, total, warm, floor = 1e-3, 111, 10, 0.1
    lrs = [lr_at(s, total, peak, warm, floor) for s in range(total)]
    assert lrs[:10] == pytest.approx([peak * (s + 1) / 10 for s in range(10)])
    assert lrs[10] == pytest.approx(peak)
    assert lrs[-1] == pytest.approx(peak * floor)
    # halfway through the cosine (step 60 of 10..110) the rate is halfway between peak and floor
    assert lr_at(60, total, peak, warm, floor) == pytest.approx(peak * (floor + (1 - floor) * 0.5))
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:], strict=False))


def test_weight_decay_on_matrices_only() -> None:
    from smallcode.model import ModelConfig, SmallCodeLM

    model = SmallCodeLM(ModelConfig.preset("tiny"))
    opt = build_optimizer(model, 1e-3, 0.1, (0.9, 0.95))
    decayed = {id(p) for p in opt.param_groups[0]["params"]}
    for name, p in model.named_parameters():
        assert (id(p) in decayed) == (p.dim() >= 2), name
    assert opt.param_groups[1]["weight_decay"] == 0.0


def test_training_lowers_validation_loss_and_writes_everything(tmp_path: Path) -> None:
    result = Trainer(tiny_config(steps=12, eval_every=6), tmp_path).run()
    evals = [r["val_loss"] for r in read_metrics(tmp_path / "metrics.jsonl") if r["type"] == "eval"]
    assert len(evals) == 2 and evals[1] < evals[0] < math.log(tiny_model_overrides()["vocab_size"])
    assert result.val_loss == evals[-1]
    assert (tmp_path / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = [r for r in read_metrics(tmp_path / "metrics.jsonl") if r["type"] == "train"]
    assert [r["step"] for r in rows] == list(range(1, 13))
    for key in ("loss", "ce", "lr", "grad_norm", "tokens_per_s", "balance_loss", "z_loss", "skipped"):
        assert key in rows[0], key
    # the final model is a loadable checkpoint with the shards' tokenizer
    model = Checkpoint.open(result.final).load_model()
    shards_tokenizer = Path(tiny_config().data.path) / "tokenizer.json"
    assert (result.final / "tokenizer.json").read_text() == shards_tokenizer.read_text()
    assert model.config.vocab_size == tiny_model_overrides()["vocab_size"]
    assert json.loads((tmp_path / "summary.json").read_text())["steps"] == 12


def test_moe_metrics_report_expert_load(tmp_path: Path) -> None:
    cfg = tiny_config(steps=2, model_overrides=tiny_model_overrides())  # tiny's own 4 experts top-2
    Trainer(cfg, tmp_path).run()
    row = read_metrics(tmp_path / "metrics.jsonl")[0]
    assert row["balance_loss"] > 0 and 0 < row["expert_load_entropy"] <= 1
    assert row["expert_load_min"] <= 1 <= row["expert_load_max"]


def test_expert_load_stats_against_hand_values() -> None:
    stats = expert_load_stats(torch.tensor([[0.25, 0.25, 0.25, 0.25], [0.5, 0.5, 0.0, 0.0]]))
    assert stats["expert_load_entropy"] == pytest.approx((1.0 + math.log(2) / math.log(4)) / 2)
    assert stats["expert_load_max"] == pytest.approx(2.0) and stats["expert_load_min"] == pytest.approx(0.0)


def test_gradient_accumulation_equals_the_bigger_batch(tmp_path: Path) -> None:
    Trainer(tiny_config(batch_size=4, grad_accum=1), tmp_path / "a").run()
    Trainer(tiny_config(batch_size=2, grad_accum=2), tmp_path / "b").run()
    torch.testing.assert_close(torch.tensor(train_losses(tmp_path / "b")), torch.tensor(train_losses(tmp_path / "a")),
                               rtol=1e-5, atol=1e-5)


def grad_forwards(trainer: Trainer) -> list[int]:
    """Counts, per block, the calls of its attention made with autograd recording: once per training
    forward, and once more in the backward when the block is recomputed there (evaluation runs without
    grad and is not counted). The hook is on a module inside the block, which a recomputation calls again."""
    counts = [0] * len(trainer.model.blocks)
    for i, block in enumerate(trainer.model.blocks):
        def count(*_: object, i: int = i) -> None:
            counts[i] += torch.is_grad_enabled()

        block.attn.register_forward_hook(count)
    return counts


def test_activation_checkpointing_changes_nothing_but_memory(tmp_path: Path) -> None:
    plain = Trainer(tiny_config(steps=3), tmp_path / "a")
    plain_calls = grad_forwards(plain)
    plain.run()
    checkpointed = Trainer(tiny_config(steps=3, activation_checkpointing=True), tmp_path / "b")
    checkpointed_calls = grad_forwards(checkpointed)
    checkpointed.run()
    torch.testing.assert_close(torch.tensor(train_losses(tmp_path / "b")), torch.tensor(train_losses(tmp_path / "a")),
                               rtol=1e-6, atol=1e-6)
    # the feature is on: every block ran again in each of the 3 backward passes (its activations were not kept)
    assert plain_calls == [3, 3]
    assert checkpointed_calls == [6, 6]


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_resume_in_process_is_bit_identical(tmp_path: Path, optimizer: str) -> None:
    cfg = tiny_config(steps=7, save_every=3, optimizer=optimizer, schedule="wsd")
    Trainer(cfg, tmp_path / "straight").run()
    with pytest.raises(Interrupt):
        Trainer(cfg, tmp_path / "broken", objective=dies_at_call(6)).run()
    assert latest_checkpoint(tmp_path / "broken").name == "step_0000003"
    with pytest.raises(TrainingError, match="--resume"):
        Trainer(cfg, tmp_path / "broken").run()
    Trainer(cfg, tmp_path / "broken").run(resume=True)
    assert train_losses(tmp_path / "broken") == train_losses(tmp_path / "straight")
    a, b = (Checkpoint.open(tmp_path / run / "final").load_model() for run in ("straight", "broken"))
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(p, q), name


def test_resume_refuses_another_config(tmp_path: Path) -> None:
    cfg = tiny_config(steps=4)
    Trainer(cfg.replace(steps=2), tmp_path).run()
    with pytest.raises(TrainingError, match="steps"):
        Trainer(cfg, tmp_path).run(resume=True)


def test_finished_run_resumes_as_a_no_op(tmp_path: Path) -> None:
    first = Trainer(tiny_config(steps=2), tmp_path).run()
    again = Trainer(tiny_config(steps=2), tmp_path).run(resume=True)
    assert again.val_loss == first.val_loss and len(train_losses(tmp_path)) == 2


def snapshotting(poison_at: set[int], where: str = "loss"):  # noqa: ANN201
    """An objective that records the weights it sees and poisons the loss or gradients of some calls."""
    seen: list[torch.Tensor] = []

    def objective(model, batch):  # noqa: ANN001, ANN202
        seen.append(torch.cat([p.detach().flatten() for p in model.parameters()]).clone())
        total, ce, metrics = next_token_objective(model, batch)
        if len(seen) in poison_at:
            if where == "loss":
                total = total * float("nan")
            else:  # finite loss, infinite gradient
                model.lm_head.weight.register_hook(lambda g: g * float("inf") if len(seen) in poison_at else g)
        return total, ce, metrics

    return objective, seen


@pytest.mark.parametrize("where", ["loss", "grad"])
def test_a_non_finite_step_is_skipped_and_counted(tmp_path: Path, where: str) -> None:
    objective, seen = snapshotting({3}, where)
    Trainer(tiny_config(steps=5, max_bad_steps=1), tmp_path, objective=objective).run()
    rows = [r for r in read_metrics(tmp_path / "metrics.jsonl") if r["type"] == "train"]
    assert [r["skipped"] for r in rows] == [0, 0, 1, 1, 1]
    assert rows[2].get("skipped_step") and not rows[3].get("skipped_step")
    assert torch.equal(seen[3], seen[2])  # step 3 left the weights as they were
    assert not torch.equal(seen[4], seen[3])  # and training went on
    assert all(torch.isfinite(s).all() for s in seen)


def test_persistent_non_finite_steps_stop_the_run_without_poisoned_checkpoints(tmp_path: Path) -> None:
    objective, seen = snapshotting({3, 4, 5, 6, 7, 8})
    with pytest.raises(TrainingError, match="step 5: 3 steps in a row"):
        Trainer(tiny_config(steps=8, max_bad_steps=2, save_every=1), tmp_path, objective=objective).run()
    ckpt = latest_checkpoint(tmp_path)
    assert ckpt is not None and ckpt.name == "step_0000004"  # saves went on: the weights were still those of step 2
    model = Checkpoint.open(ckpt).load_model()
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_a_checkpoint_with_nans_is_never_written(tmp_path: Path) -> None:
    from smallcode.model import ModelConfig, SmallCodeLM

    model = SmallCodeLM(ModelConfig.preset("tiny"))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["norm.weight"][0] = float("nan")
    with pytest.raises(CheckpointError, match="non-finite"):
        save_train_checkpoint(tmp_path, 1, model, state, {}, None, keep=2)
    assert latest_checkpoint(tmp_path) is None and not (tmp_path / "checkpoints" / "step_0000001").exists()


def test_bad_configs_are_refused_with_the_field_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="grad_accum"):
        tiny_config(grad_accum=0)
    with pytest.raises(ConfigError, match="distill is required"):
        tiny_config(objective="distill")
    with pytest.raises(ConfigError, match="vocab_size"):
        Trainer(tiny_config(model_overrides={"vocab_size": 77, "n_experts": 1, "top_k": 1}), tmp_path)


@pytest.mark.parametrize(("section", "words"), [
    ("distill: {teacher: t, temprature: 2.0}", ["TrainConfig.distill", "temprature"]),
    ("distill: {teacher: t, kind: foward}", ["TrainConfig.distill", "DistillConfig.kind", "'forward', 'reverse'"]),
    ("distill: {kind: forward}", ["TrainConfig.distill", "teacher"]),
    ("model_overrides: {d_modle: 384}", ["TrainConfig.model_overrides", "d_modle"]),
    ("model_overrides: {d_model: 384.0}", ["TrainConfig.model_overrides.d_model", "int"]),
    ("precision: fp8", ["TrainConfig.precision", "'bfloat16'", "'fp8'"]),
])
def test_typos_in_a_stage_file_are_refused_when_it_is_loaded(tmp_path: Path, section: str, words: list[str]) -> None:
    path = tmp_path / "stage.yaml"
    distill = "" if section.startswith("distill:") else "distill: {teacher: t}\n"
    path.write_text(f"objective: distill\n{distill}{section}\n")
    with pytest.raises(ConfigError) as e:
        TrainConfig.load(path)
    assert all(w in str(e.value) for w in words), str(e.value)
    path.write_text("objective: distill\ndistill: {teacher: t, alpha: 1}\nmodel_overrides: {rope_base: 500}\n")
    cfg = TrainConfig.load(path)
    assert cfg.distill == DistillConfig(teacher="t", alpha=1.0) and cfg.model_overrides == {"rope_base": 500.0}


def test_init_from_a_checkpoint_continues_from_its_weights(tmp_path: Path) -> None:
    first = Trainer(tiny_config(steps=4), tmp_path / "a").run()
    trainer = Trainer(tiny_config(steps=1, init=str(first.final), model_overrides={}), tmp_path / "b")
    parent = Checkpoint.open(first.final).load_model()
    for p, q in zip(parent.parameters(), trainer.model.parameters(), strict=True):
        assert torch.equal(p, q)
    with pytest.raises(ConfigError, match="shapes"):
        Trainer(tiny_config(init=str(first.final), model_overrides={"d_model": 32}), tmp_path / "c")


def test_fine_tuning_on_jsonl_learns_the_completions(tmp_path: Path) -> None:
    from smallcode.train.config import DataConfig
    from smallcode.train.sft import write_jsonl

    pairs = [{"prompt": f"def add_{i}(x):\n", "completion": f"    return x + {i}\n"} for i in range(24)]
    write_jsonl(pairs[:20], tmp_path / "train.jsonl")
    write_jsonl(pairs[20:], tmp_path / "val.jsonl")
    data = DataConfig(kind="jsonl", path=str(tmp_path / "train.jsonl"), validation_path=str(tmp_path / "val.jsonl"),
                      tokenizer=str(Path(tiny_config().data.path) / "tokenizer.json"), seq_len=24)
    result = Trainer(tiny_config(data=data, steps=30, eval_every=15, lr=3e-2), tmp_path / "run").run()
    evals = [r["val_loss"] for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if r["type"] == "eval"]
    # the completions follow a pattern a tiny model picks up: far below the uniform guess
    assert evals[-1] < evals[0] and evals[-1] < 0.3 * math.log(tiny_model_overrides()["vocab_size"])
    assert result.final.joinpath("tokenizer.json").is_file()


def test_tensorboard_gets_the_same_scalars_as_the_jsonl(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    Trainer(tiny_config(steps=3, tensorboard=True), tmp_path).run()
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    logged = [e.value for e in events.Scalars("train/loss")]
    assert logged == pytest.approx(train_losses(tmp_path), rel=1e-6)


def test_asking_for_a_missing_logger_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "wandb", None)  # as if it were not installed
    with pytest.raises(ConfigError, match="pip install wandb"):
        Trainer(tiny_config(steps=1, wandb=True), tmp_path).run()


@pytest.mark.parametrize("experts", [1, 4])
def test_compiled_blocks_train_like_eager_ones(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               experts: int) -> None:
    # dynamo's capture of every block, run as captured (what the "eager" backend does: inductor's C++ build
    # is too slow for CI, and the capture of the blocks is what this checks; float32 MoE: grouped_mm runs
    # outside the graph) by a backend that counts the graphs it is given and their calls
    graphs: list[torch.fx.GraphModule] = []
    calls = [0]

    def backend(gm: torch.fx.GraphModule, example_inputs: list[torch.Tensor]) -> Callable:
        graphs.append(gm)

        def run(*args: object) -> object:
            calls[0] += 1
            return gm.forward(*args)

        return run

    original = torch.nn.Module.compile
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, **kw: original(self, backend=backend))
    torch._dynamo.reset()  # blocks compiled by earlier tests fill dynamo's cache; past its limit it runs eager
    cfg = tiny_config(steps=3)
    if experts > 1:
        cfg = cfg.replace(model_overrides={**cfg.model_overrides, "n_experts": experts, "top_k": 2})
    Trainer(cfg, tmp_path / "eager").run()
    assert calls == [0]
    compiled = Trainer(cfg.replace(compile=True), tmp_path / "compiled")
    compiled.run()
    torch.testing.assert_close(torch.tensor(train_losses(tmp_path / "compiled")),
                               torch.tensor(train_losses(tmp_path / "eager")), rtol=1e-6, atol=1e-6)
    # the blocks were captured: graphs came to the backend, and every block's forward of every training
    # step (3 steps, each block once) ran through one
    n_blocks = len(compiled.model.blocks)
    assert graphs and calls[0] >= 3 * n_blocks, (len(graphs), calls)


def test_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from smallcode.cli.main import main

    cfg = tmp_path / "cfg.yaml"
    tiny_config().replace(data=tiny_config().data.replace(path=str(tmp_path / "missing"))).save(cfg)
    assert main(["train", str(cfg), "--out", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err.strip()
    assert "missing" in err and len(err.splitlines()) == 1 and "Traceback" not in err
    tiny_config().save(cfg)
    assert main(["train", str(cfg), "--out", str(tmp_path / "run"), "--set", "steps=0"]) == 1
    assert "steps" in capsys.readouterr().err
