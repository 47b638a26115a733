"""Training objectives. Today: next-token cross-entropy, fused with the output projection.

``linear_cross_entropy(h, W, targets)`` equals ``F.cross_entropy(h @ W.T, targets)`` (mean over
targets that are not ``ignore_index``) without ever holding the (N, V) logits: rows go through in
chunks that fit in cache, and while a chunk's logits are at hand their gradient (softmax minus
one-hot) is turned straight into the gradients of ``h`` and ``W``, which backward then only scales.
The matmul work is the same as the plain path; what goes away is several passes over a logits
tensor far larger than the caches (and its memory). Distillation lives in ``distill.py``.

Shape legend: N rows (tokens), D width, V vocabulary, C rows per chunk.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from smallcode.model.transformer import SmallCodeLM, Trunk


def _chunk_logits(h_CD: torch.Tensor, w_VD: torch.Tensor) -> torch.Tensor:
    return (h_CD @ w_VD.T).float()


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h_ND: torch.Tensor, w_VD: torch.Tensor, targets_N: torch.Tensor,  # noqa: ANN001
                ignore_index: int, chunk: int) -> torch.Tensor:
        valid_N = targets_N != ignore_index
        count = valid_N.sum().clamp(min=1).to(torch.float32)
        safe_N = torch.where(valid_N, targets_N, 0)
        grad_h = torch.empty_like(h_ND)
        grad_w = torch.zeros(w_VD.shape, dtype=torch.float32, device=w_VD.device)
        total = torch.zeros((), dtype=torch.float32, device=h_ND.device)
        for s in range(0, h_ND.shape[0], chunk):
            h_CD, t_C, v_C = h_ND[s : s + chunk], safe_N[s : s + chunk], valid_N[s : s + chunk]
            g_CV = _chunk_logits(h_CD, w_VD)
            lse_C = torch.logsumexp(g_CV, dim=-1)
            picked_C = g_CV.gather(1, t_C[:, None]).squeeze(1)
            total += ((lse_C - picked_C) * v_C).sum()
            # d(mean loss)/d(logits) = (softmax - onehot(target)) / count, zero on ignored rows
            g_CV.sub_(lse_C[:, None]).exp_()
            g_CV.scatter_add_(1, t_C[:, None], -torch.ones_like(picked_C)[:, None])
            g_CV.mul_((v_C.to(g_CV.dtype) / count)[:, None])
            g_CV = g_CV.to(h_ND.dtype)
            grad_h[s : s + chunk] = g_CV @ w_VD
            grad_w.addmm_(g_CV.T.float(), h_CD.float())
        ctx.save_for_backward(grad_h, grad_w.to(w_VD.dtype))
        return total / count

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor) -> tuple:  # noqa: ANN001
        grad_h, grad_w = ctx.saved_tensors
        return grad_h * grad_out, grad_w * grad_out, None, None, None


def linear_cross_entropy(h_ND: torch.Tensor, w_VD: torch.Tensor, targets_N: torch.Tensor,
                         ignore_index: int = -100, chunk: int = 512) -> torch.Tensor:
    """Mean cross-entropy of ``h @ W.T`` against ``targets`` (rows equal to ``ignore_index`` skipped)."""
    if torch.is_grad_enabled() and (h_ND.requires_grad or w_VD.requires_grad):
        return _LinearCrossEntropy.apply(h_ND, w_VD, targets_N, ignore_index, chunk)
    # no gradient wanted: the same chunks, loss only
    valid_N = targets_N != ignore_index
    total = h_ND.new_zeros((), dtype=torch.float32)
    for s in range(0, h_ND.shape[0], chunk):
        logits = _chunk_logits(h_ND[s : s + chunk], w_VD)
        total += F.cross_entropy(logits, targets_N[s : s + chunk], ignore_index=ignore_index, reduction="sum")
    return total / valid_N.sum().clamp(min=1)


def router_terms(model: SmallCodeLM, trunk: Trunk) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The router's weighted auxiliary loss and its metrics (zero and empty-ish for a dense model)."""
    aux = model.config.balance_loss_coef * trunk.balance_loss + model.config.z_loss_coef * trunk.z_loss
    metrics = {"balance_loss": trunk.balance_loss.detach(), "z_loss": trunk.z_loss.detach()}
    if trunk.expert_load is not None:
        metrics["expert_load"] = trunk.expert_load
    return aux, metrics


def next_token_objective(model: SmallCodeLM, batch: dict[str, torch.Tensor]
                         ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """The trainer's objective interface for next-token prediction.

    ``batch`` holds ``input_ids`` (B, T) and ``labels`` (B, T) with -100 where no loss is taken.
    Returns (total loss with the router's weighted auxiliary losses, cross-entropy alone, metrics).
    """
    trunk = model.trunk(batch["input_ids"])
    ce = linear_cross_entropy(trunk.hidden.flatten(0, 1), model.lm_head.weight, batch["labels"].reshape(-1))
    aux, metrics = router_terms(model, trunk)
    return ce + aux, ce, metrics


def next_token_loss(model: SmallCodeLM, tokens_BT1: torch.Tensor, ignore_index: int = -100
                    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """Loss of predicting ``tokens[:, 1:]`` from ``tokens[:, :-1]`` (see ``next_token_objective``)."""
    labels = tokens_BT1[:, 1:]
    if ignore_index != -100:
        labels = labels.masked_fill(labels == ignore_index, -100)
    return next_token_objective(model, {"input_ids": tokens_BT1[:, :-1], "labels": labels})
