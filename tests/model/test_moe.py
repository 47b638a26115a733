"""MoE dispatch and auxiliary losses against direct per-token computations."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from smallcode.model import ModelConfig
from smallcode.model.moe import MoE


def make(n_experts: int = 4, top_k: int = 2) -> MoE:
    moe = MoE(ModelConfig.preset("tiny", n_experts=n_experts, top_k=top_k))
    for p in moe.parameters():
        torch.nn.init.normal_(p, std=0.2)
    return moe


def per_token_reference(moe: MoE, x_ND: torch.Tensor) -> torch.Tensor:
    """Route and run each token on its own: the slow obvious version of the dispatch."""
    ex = moe.experts
    F_ = ex.d_ff
    out = []
    for x in x_ND:
        if moe.router is None:
            chosen, w = [0], torch.ones(1)
        else:
            probs = (moe.router.weight @ x).softmax(-1)
            top = probs.topk(moe.top_k)
            chosen, w = top.indices.tolist(), top.values / top.values.sum()
        y = torch.zeros_like(x)
        for e, we in zip(chosen, w, strict=True):
            g, u = ex.w_gate_up[e][:F_] @ x, ex.w_gate_up[e][F_:] @ x
            y = y + we * (ex.w_down[e] @ (F.silu(g) * u))
        out.append(y)
    return torch.stack(out)


@pytest.mark.parametrize(("E", "k"), [(4, 2), (8, 2), (4, 1), (4, 4), (1, 1)])
def test_dispatch_matches_per_token(E: int, k: int) -> None:
    moe = make(E, k)
    x = torch.randn(3, 7, 64)
    y, stats = moe(x)
    torch.testing.assert_close(y.view(-1, 64), per_token_reference(moe, x.view(-1, 64)), atol=1e-5, rtol=1e-5)
    if E == 1:
        assert stats is None and moe.router is None
    else:
        assert stats is not None
        torch.testing.assert_close(stats.load_E.sum(), torch.tensor(1.0))


def test_dispatch_gradients_match_per_token() -> None:
    moe = make()
    x = torch.randn(10, 64, requires_grad=True)
    y, _ = moe(x)
    gy = torch.randn_like(y)
    ours = torch.autograd.grad(y, [x, *moe.parameters()], gy)
    ref = torch.autograd.grad(per_token_reference(moe, x), [x, *moe.parameters()], gy)
    for a, b in zip(ours, ref, strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_an_expert_with_no_tokens_is_fine() -> None:
    moe = make(4, 1)
    with torch.no_grad():
        moe.router.weight.zero_()
        moe.router.weight[2] = 5.0  # with positive inputs every token picks expert 2
    x = torch.rand(2, 5, 64) + 0.1
    y, stats = moe(x)
    assert stats.load_E.tolist() == [0.0, 0.0, 1.0, 0.0]
    torch.testing.assert_close(y.view(-1, 64), per_token_reference(moe, x.view(-1, 64)), atol=1e-5, rtol=1e-5)


def test_balance_and_z_loss_by_hand() -> None:
    moe = make(4, 2)
    x = torch.randn(16, 64)
    _, stats = moe(x)
    logits = x @ moe.router.weight.T
    probs = logits.softmax(-1)
    chosen = probs.topk(2).indices
    frac = torch.stack([(chosen == e).any(-1).float().sum() for e in range(4)]) / 16
    expected = 4 * (frac * probs.mean(0)).sum()
    torch.testing.assert_close(stats.balance_loss, expected)
    torch.testing.assert_close(stats.z_loss, (torch.logsumexp(logits, -1) ** 2).mean())
    torch.testing.assert_close(stats.load_E, frac / 2)


def test_uniform_router_gives_balance_loss_top_k() -> None:
    moe = make(4, 2)
    with torch.no_grad():
        moe.router.weight.zero_()
    _, stats = moe(torch.randn(12, 64))
    # uniform probabilities: E * sum_e f_e / E = sum_e f_e = top_k
    torch.testing.assert_close(stats.balance_loss, torch.tensor(2.0))


@pytest.mark.parametrize(("E", "k", "N"), [(4, 2, 1), (8, 2, 1), (8, 2, 3), (4, 4, 8), (1, 1, 1)])
def test_inference_mode_does_not_change_what_the_layer_returns(E: int, k: int, N: int) -> None:
    """One path whatever the torch mode: a decode-sized input in inference mode gets the same output
    and the same auxiliary losses as with gradients on."""
    moe = make(E, k)
    x = torch.randn(N, 1, 64)
    y, stats = moe(x)
    with torch.inference_mode():
        y_inf, stats_inf = moe(x)
    assert torch.equal(y_inf, y)
    if E == 1:
        assert stats is None and stats_inf is None
        return
    assert stats_inf is not None
    for name in ("balance_loss", "z_loss", "load_E"):
        assert torch.equal(getattr(stats_inf, name), getattr(stats, name)), name
