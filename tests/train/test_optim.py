"""Muon against torch's own Newton-Schulz iteration and optimizer and against the published iteration written
out in float64, the optimizer split, the WSD schedule."""

from __future__ import annotations

import math

import pytest
import torch
from trainer_helpers import tiny_config  # tests/train/trainer_helpers.py

from smallcode.model import ModelConfig, SmallCodeLM
from smallcode.train.optim import Muon, build_optimizers, lr_at, orthogonalize
from smallcode.train.trainer import Trainer, read_metrics


@pytest.mark.parametrize("shape", [(48, 80), (80, 48), (64, 64)])
def test_orthogonalize_matches_torchs_iteration(shape: tuple[int, int]) -> None:
    from torch.optim._muon import _zeropower_via_newtonschulz

    g = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    ours = orthogonalize(g)
    # torch iterates in bfloat16, we in float32 on the CPU: equal up to bfloat16 rounding
    theirs = _zeropower_via_newtonschulz(g, (3.4445, -4.7750, 2.0315), 5, 1e-7).float()
    assert (ours - theirs).abs().max() < 0.03
    # what the iteration is for: singular values pulled into a band around 1 (from a wide spread;
    # five steps cannot lift the near-zero smallest one of a random square matrix)
    s, s0 = torch.linalg.svdvals(ours), torch.linalg.svdvals(g)
    assert (s > 0.5).float().mean() > 0.9 and s.max() < 1.3
    assert s0.max() / s0.median() > 1.7 > s.max() / s.median()


QUINTIC = (3.4445, -4.7750, 2.0315)
"""The quintic Newton-Schulz coefficients published with Keller Jordan's Muon."""


def newton_schulz(g: torch.Tensor, steps: int) -> torch.Tensor:
    """The published iteration written out on its own, in float64: from X = G / |G|_F (wide side up),
    ``steps`` times X <- aX + b(XX^T)X + c(XX^T)(XX^T)X."""
    a, b, c = QUINTIC
    x = g.double()
    tall = x.shape[0] > x.shape[1]
    if tall:
        x = x.T
    x = x / x.norm()
    for _ in range(steps):
        ax = x @ x.T @ x
        x = a * x + b * ax + c * (x @ x.T @ ax)
    return x.T if tall else x


def muon_reference(p: torch.Tensor, grads: list[torch.Tensor], lr: float, momentum: float, weight_decay: float,
                   ns_steps: int = 5) -> torch.Tensor:
    """Muon's steps on ``p`` written out in float64: Nesterov momentum, the update orthogonalised by
    ``newton_schulz``, scaled by sqrt(max(1, rows / columns)), decoupled weight decay."""
    p, buf = p.double(), torch.zeros_like(p, dtype=torch.float64)
    scale = math.sqrt(max(1.0, p.shape[0] / p.shape[1]))
    for g in grads:
        g = g.double()
        buf = momentum * buf + (1 - momentum) * g
        update = newton_schulz((1 - momentum) * g + momentum * buf, ns_steps)
        p = p * (1 - lr * weight_decay) - lr * scale * update
    return p


@pytest.mark.parametrize("shape", [(48, 80), (80, 48)])
def test_orthogonalize_takes_exactly_its_steps(shape: tuple[int, int]) -> None:
    g = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    for steps in (1, 4, 5, 6):
        err = (orthogonalize(g, steps).double() - newton_schulz(g, steps)).abs().max()
        assert err < 1e-5, (steps, err)  # float32 against float64
    # one step more or less moves the result by far more than that tolerance
    five = newton_schulz(g, 5)
    assert (newton_schulz(g, 4) - five).abs().max() > 1e-3 and (newton_schulz(g, 6) - five).abs().max() > 1e-3
    assert (orthogonalize(g).double() - five).abs().max() < 1e-5  # five steps unless told otherwise


def test_orthogonalize_treats_a_stack_as_separate_matrices() -> None:
    g = torch.randn(3, 40, 24, generator=torch.Generator().manual_seed(1))
    stacked = orthogonalize(g)
    for i in range(3):
        torch.testing.assert_close(stacked[i], orthogonalize(g[i]), atol=1e-5, rtol=1e-5)


def test_muon_step_equals_torch_muon_on_a_matrix() -> None:
    torch.manual_seed(0)
    a = torch.nn.Parameter(torch.randn(32, 16))
    b = torch.nn.Parameter(a.detach().clone())
    start = a.detach().clone()
    ours = Muon([a], lr=0.05, momentum=0.9, weight_decay=0.1)
    theirs = torch.optim.Muon([b], lr=0.05, momentum=0.9, weight_decay=0.1, adjust_lr_fn="original")
    for step in range(3):
        g = torch.randn(32, 16, generator=torch.Generator().manual_seed(step))
        a.grad, b.grad = g.clone(), g.clone()
        ours.step()
        theirs.step()
    assert (a - b).abs().max() < 5e-3  # bfloat16 iteration on their side
    # That bound cannot tell Newton-Schulz step counts apart; the float64 reference can.
    grads = [torch.randn(32, 16, generator=torch.Generator().manual_seed(step)) for step in range(3)]
    want = muon_reference(start, grads, lr=0.05, momentum=0.9, weight_decay=0.1)
    assert (a.detach().double() - want).abs().max() < 1e-5
    for wrong in (4, 6):
        off = muon_reference(start, grads, lr=0.05, momentum=0.9, weight_decay=0.1, ns_steps=wrong)
        assert (off - want).abs().max() > 1e-3, wrong
    c = torch.nn.Parameter(start.clone())  # the step count asked for is the one run
    three = Muon([c], lr=0.05, momentum=0.9, weight_decay=0.1, ns_steps=3)
    for g in grads:
        c.grad = g.clone()
        three.step()
    want = muon_reference(start, grads, lr=0.05, momentum=0.9, weight_decay=0.1, ns_steps=3)
    assert (c.detach().double() - want).abs().max() < 1e-5


def test_muon_refuses_vectors() -> None:
    with pytest.raises(ValueError, match="matrices"):
        Muon([torch.nn.Parameter(torch.zeros(4))])


def test_muon_takes_the_blocks_matrices_and_adamw_the_rest() -> None:
    model = SmallCodeLM(ModelConfig.preset("tiny"))
    adamw, muon = build_optimizers(model, 1e-3, 0.1, (0.9, 0.95), kind="muon", muon_lr=0.02)
    in_muon = {id(p) for g in muon.param_groups for p in g["params"]}
    in_adamw = {id(p) for g in adamw.param_groups for p in g["params"]}
    names = dict(model.named_parameters())
    assert in_muon.isdisjoint(in_adamw) and in_muon | in_adamw == {id(p) for p in names.values()}
    for name, p in names.items():
        wants_muon = name.startswith("blocks.") and p.dim() >= 2 and "router" not in name
        assert (id(p) in in_muon) == wants_muon, name
    assert {id(model.embed.weight), id(model.lm_head.weight)} <= in_adamw
    (only,) = build_optimizers(model, 1e-3, 0.1, (0.9, 0.95))  # adamw: one optimizer over everything
    assert isinstance(only, torch.optim.AdamW)


def test_wsd_schedule_warms_up_holds_then_decays_linearly_to_the_floor() -> None:
    peak, total, warm = 1e-2, 100, 10
    lrs = [lr_at(s, total, peak, warm, 0.0, "wsd", decay_fraction=0.4) for s in range(total)]
    assert lrs[:warm] == pytest.approx([peak * (s + 1) / warm for s in range(warm)])
    assert lrs[warm:60] == pytest.approx([peak] * 50)
    assert lrs[-1] == pytest.approx(0.0, abs=1e-12)
    steps = [a - b for a, b in zip(lrs[60:], lrs[61:], strict=False)]
    assert steps == pytest.approx([peak / 40] * 39)  # a straight line down


def test_a_muon_run_learns_and_its_schedule_drives_both_optimizers(tmp_path) -> None:  # noqa: ANN001
    cfg = tiny_config(steps=12, eval_every=6, optimizer="muon", muon_lr=0.02, schedule="wsd", decay_fraction=0.5,
                      min_lr_ratio=0.0)
    trainer = Trainer(cfg, tmp_path)
    trainer.run()
    evals = [r["val_loss"] for r in read_metrics(tmp_path / "metrics.jsonl") if r["type"] == "eval"]
    assert evals[1] < evals[0] < math.log(cfg.model_overrides["vocab_size"])
    # the last step ran at the floor: both optimizers' groups were set from the one schedule
    assert all(g["lr"] == pytest.approx(0.0, abs=1e-12) for opt in trainer.optimizers for g in opt.param_groups)


def test_zero_init_starts_uniform_then_every_parameter_learns(tmp_path) -> None:  # noqa: ANN001
    cfg = tiny_config(steps=3, eval_every=0, optimizer="muon", zero_init=True, warmup_steps=0)
    trainer = Trainer(cfg, tmp_path)
    model = trainer.model
    zeroed = {n for n, p in model.named_parameters() if not p.any()}
    assert "lm_head.weight" in zeroed and any(n.endswith("wo.weight") for n in zeroed)
    assert any(n.endswith("w_down") for n in zeroed)
    vocab = model.config.vocab_size
    ids = torch.randint(0, vocab, (2, 8))
    with torch.no_grad():
        logp = torch.log_softmax(model(ids).logits, -1)
    assert torch.allclose(logp, torch.full_like(logp, -math.log(vocab)))  # a uniform first prediction
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer.run()
    # the head moves at step 1; the blocks' outputs, which get no gradient through a zero head, by step 3
    assert all(not torch.equal(before[n], p) for n, p in model.named_parameters())
    assert all(p.any() for p in model.parameters())


def test_zero_init_is_refused_on_a_checkpoint() -> None:
    from smallcode.config import ConfigError

    with pytest.raises(ConfigError, match="zero_init"):
        tiny_config(zero_init=True, init="some/checkpoint")
