"""Mixture-of-Experts feed-forward: router, SwiGLU experts, sort-based dispatch, auxiliary losses.

The router scores every expert with a linear layer, keeps the ``top_k`` highest softmax
probabilities per token and renormalises them to sum to one (Mixtral's routing). Tokens are then
sorted by expert so each expert's rows are contiguous, and one grouped matmul per projection runs
all experts at once: there is no Python loop over tokens or experts. A dense model is the same
module with one expert and no router. It has one path whatever the torch mode (under
``torch.inference_mode()`` too it returns the auxiliary losses); decode-time shortcuts are
swapped in by ``smallcode.runtime.cpu_decode``.

Auxiliary losses, per layer (the model averages them over layers):
* load balance (Switch Transformer, eq. 4; Mixtral): ``E * sum_e f_e * P_e`` with ``f_e`` the share
  of the top-k assignments that go to expert e and ``P_e`` its mean router probability;
* router z-loss (ST-MoE): mean over tokens of ``logsumexp(router logits) ** 2``.
This module does not weight them: the coefficients live in ``ModelConfig`` and the training
objective applies them.

Shape legend: N tokens, D model width, F expert hidden width, E experts, K top_k, A = N * K
(token, expert) assignments.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from smallcode.model.config import ModelConfig


@dataclass
class MoEStats:
    """What one MoE layer reports besides its output."""

    balance_loss: torch.Tensor
    """Scalar load-balance loss (differentiable through the router probabilities)."""
    z_loss: torch.Tensor
    """Scalar router z-loss."""
    load_E: torch.Tensor
    """Share of assignments per expert (detached, sums to 1)."""


class Router(nn.Module):
    def __init__(self, d_model: int, n_experts: int, top_k: int) -> None:
        super().__init__()
        self.top_k = top_k
        self.weight = nn.Parameter(torch.empty(n_experts, d_model))

    def forward(self, x_ND: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns router logits (N, E), renormalised top-k weights (N, K) and expert ids (N, K)."""
        logits_NE = F.linear(x_ND, self.weight).float()
        probs_NE = logits_NE.softmax(dim=-1)
        weights_NK, experts_NK = probs_NE.topk(self.top_k, dim=-1)
        weights_NK = weights_NK / weights_NK.sum(dim=-1, keepdim=True)
        return logits_NE, weights_NK, experts_NK


def balance_loss(logits_NE: torch.Tensor, counts_E: torch.Tensor, top_k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Switch/Mixtral load-balance loss and each expert's share of the assignments: scalar, (E,)."""
    N, E = logits_NE.shape
    frac_E = counts_E.to(logits_NE.dtype) / N  # sums to top_k, as in the Switch/Mixtral definition
    prob_E = logits_NE.softmax(dim=-1).mean(dim=0)
    return E * (frac_E * prob_E).sum(), (frac_E / top_k).detach()


def z_loss(logits_NE: torch.Tensor) -> torch.Tensor:
    return torch.logsumexp(logits_NE, dim=-1).square().mean()


_grouped_mm = getattr(F, "grouped_mm", None) or torch._grouped_mm  # public from torch 2.10


def _grouped_swiglu(x_AD: torch.Tensor, w_gate_up: torch.Tensor, w_down: torch.Tensor, offs: torch.Tensor,
                    d_ff: int) -> torch.Tensor:
    """Every expert's SwiGLU on its own contiguous rows of ``x_AD`` (row groups end at ``offs``)."""
    if x_AD.is_cuda and x_AD.dtype != torch.bfloat16:
        # CUDA's grouped kernel takes bf16 only: a float32 run on a GPU goes expert by expert
        counts = torch.diff(offs, prepend=offs.new_zeros(1)).tolist()
        outs = []
        for e, x_XD in enumerate(x_AD.split(counts)):
            gate, up = F.linear(x_XD, w_gate_up[e]).split(d_ff, dim=-1)
            outs.append(F.linear(F.silu(gate) * up, w_down[e]))
        return torch.cat(outs)
    gate, up = _grouped_mm(x_AD, w_gate_up.transpose(-2, -1), offs=offs).split(d_ff, dim=-1)
    return _grouped_mm(F.silu(gate) * up, w_down.transpose(-2, -1), offs=offs)


_grouped_swiglu_eager = torch.compiler.disable(_grouped_swiglu)


class Experts(nn.Module):
    """E SwiGLU experts stored as stacked weights (Hugging Face's layout, read transposed by the matmul)."""

    def __init__(self, n_experts: int, d_model: int, d_ff: int) -> None:
        super().__init__()
        self.d_ff = d_ff
        self.w_gate_up = nn.Parameter(torch.empty(n_experts, 2 * d_ff, d_model))  # gate rows, then up rows
        self.w_down = nn.Parameter(torch.empty(n_experts, d_model, d_ff))

    def expert(self, x_XD: torch.Tensor, e: int) -> torch.Tensor:
        """Expert ``e`` applied to every row of ``x_XD``."""
        gate, up = F.linear(x_XD, self.w_gate_up[e]).split(self.d_ff, dim=-1)
        return F.linear(F.silu(gate) * up, self.w_down[e])

    def forward(self, x_AD: torch.Tensor, counts_E: torch.Tensor | None) -> torch.Tensor:
        """Rows of ``x_AD`` are grouped by expert, ``counts_E`` rows each (None: the single expert)."""
        if counts_E is None:
            return self.expert(x_AD, 0)
        offs = torch.cumsum(counts_E, dim=0, dtype=torch.int32)
        w_gate_up, w_down = self.w_gate_up, self.w_down
        if torch.is_autocast_enabled(x_AD.device.type):
            # grouped_mm is not on autocast's list of matmuls: cast as autocast does for F.linear
            dt = torch.get_autocast_dtype(x_AD.device.type)
            x_AD, w_gate_up, w_down = x_AD.to(dt), w_gate_up.to(dt), w_down.to(dt)
        if torch.compiler.is_compiling() and x_AD.dtype != torch.bfloat16:
            # torch.compile traces grouped_mm for bf16 only (its fake-tensor check refuses float32),
            # so under compile a float32 model runs this one piece eagerly and the rest compiled.
            return _grouped_swiglu_eager(x_AD, w_gate_up, w_down, offs, self.d_ff)
        return _grouped_swiglu(x_AD, w_gate_up, w_down, offs, self.d_ff)


class MoE(nn.Module):
    """Router + experts; with ``n_experts == 1`` a plain SwiGLU feed-forward."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.n_experts, self.top_k = config.n_experts, config.top_k
        self.router = Router(config.d_model, config.n_experts, config.top_k) if config.is_moe else None
        self.experts = Experts(config.n_experts, config.d_model, config.d_ff)

    def forward(self, x_BTD: torch.Tensor) -> tuple[torch.Tensor, MoEStats | None]:
        shape = x_BTD.shape
        x_ND = x_BTD.reshape(-1, shape[-1])
        if self.router is None:
            return self.experts(x_ND, counts_E=None).view(shape), None
        logits_NE, weights_NK, experts_NK = self.router(x_ND)
        out_ND, counts_E = self.dispatch(x_ND, weights_NK, experts_NK)
        bal, load_E = balance_loss(logits_NE, counts_E, self.top_k)
        return out_ND.view(shape), MoEStats(bal, z_loss(logits_NE), load_E)

    def dispatch(self, x_ND: torch.Tensor, weights_NK: torch.Tensor, experts_NK: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """Each token through its chosen experts, mixed by its weights: (N, D) and the counts per expert (E,)."""
        N, K = experts_NK.shape
        # Sort the N*K assignments by expert; a stable sort keeps token order inside each expert.
        flat_A = experts_NK.flatten()
        order_A = torch.argsort(flat_A, stable=True)
        counts_E = torch.bincount(flat_A, minlength=self.n_experts)
        y_AD = self.experts(x_ND[order_A // K], counts_E)
        # Undo the sort with a gather (its backward is a scatter, no atomics), then mix the K outputs.
        y_NKD = y_AD[torch.argsort(order_A)].view(N, K, -1)
        return torch.bmm(weights_NK.to(y_NKD.dtype).unsqueeze(1), y_NKD).squeeze(1), counts_E
