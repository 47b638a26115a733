"""The fused linear cross-entropy against the plain logits + F.cross_entropy path."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from smallcode.model import ModelConfig, SmallCodeLM
from smallcode.train.objectives import linear_cross_entropy, next_token_loss


@pytest.mark.parametrize(("N", "chunk"), [(37, 8), (64, 64), (5, 512)])
def test_matches_plain_cross_entropy(N: int, chunk: int) -> None:
    h = torch.randn(N, 16, requires_grad=True)
    w = torch.randn(50, 16, requires_grad=True)
    t = torch.randint(0, 50, (N,))
    t[::4] = -100  # ignored rows
    ours = linear_cross_entropy(h, w, t, chunk=chunk)
    ref = F.cross_entropy(h @ w.T, t, ignore_index=-100)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)
    g_ours = torch.autograd.grad(ours * 3.0, (h, w))
    g_ref = torch.autograd.grad(ref * 3.0, (h, w))
    for a, b in zip(g_ours, g_ref, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(linear_cross_entropy(h, w, t, chunk=chunk), ref, atol=1e-5, rtol=1e-5)


def test_all_rows_ignored_is_zero_not_nan() -> None:
    h, w = torch.randn(4, 8, requires_grad=True), torch.randn(10, 8)
    loss = linear_cross_entropy(h, w, torch.full((4,), -100))
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(h.grad, torch.zeros_like(h))


@pytest.mark.parametrize("tie", [False, True])
def test_next_token_loss_matches_the_model_logits(tie: bool) -> None:
    model = SmallCodeLM(ModelConfig.preset("tiny", tie_embeddings=tie))
    tokens = torch.randint(0, 256, (2, 41))
    total, ce, metrics = next_token_loss(model, tokens)
    grads = torch.autograd.grad(total, list(model.parameters()))
    out = model(tokens[:, :-1])
    ref_ce = F.cross_entropy(out.logits.reshape(-1, 256), tokens[:, 1:].reshape(-1))
    ref_total = ref_ce + out.aux_loss(model.config)
    torch.testing.assert_close(ce, ref_ce, atol=1e-5, rtol=1e-5)
    ref_grads = torch.autograd.grad(ref_total, list(model.parameters()))
    for a, b in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    assert metrics["expert_load"].shape == (2, 4)
