"""Optimizers and the learning-rate schedules.

Two optimizer set-ups, chosen by ``TrainConfig.optimizer``:

* ``adamw``: torch's AdamW on everything; norms' gains (1-D parameters) are not decayed.
* ``muon``: the weight matrices of the blocks (attention projections and the experts' stacks) are
  updated by ``Muon`` (momentum, then the update orthogonalised by a Newton-Schulz iteration; Keller
  Jordan's optimizer as the nanoGPT speedruns use it), and the embedding, the output head, the norms
  and the router by AdamW, which is what Muon's authors prescribe for those.

``torch.optim.Muon`` exists, but it takes 2-D parameters only (our experts are (E, rows, cols)
stacks, a dense model's single expert included) and runs the iteration in bfloat16, which on a CPU
without bfloat16 units is ~50x slower than float32 (measured here: 84 ms against 1.5 ms for one
256x768 product). ``Muon`` below orthogonalises every matrix of a stack at once, in float32 on the
CPU and bfloat16 on a GPU, and is checked against torch's iteration in the tests.

The schedules are pure functions of the step, so a resumed run needs nothing but the step to
continue it; there is no scheduler object whose state could drift from the optimizer's.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Literal

import torch
from torch import nn

OptimizerKind = Literal["adamw", "muon"]
Schedule = Literal["cosine", "wsd"]

# Newton-Schulz quintic coefficients of Keller Jordan's Muon (also torch.optim.Muon's defaults)
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)


def orthogonalize(g: torch.Tensor, steps: int = 5, eps: float = 1e-7) -> torch.Tensor:
    """Approximately U V^T of each matrix in ``g`` (..., m, n), by the quintic Newton-Schulz iteration."""
    a, b, c = NS_COEFFICIENTS
    x = g.to(torch.bfloat16 if g.is_cuda else torch.float32)
    tall = x.shape[-2] > x.shape[-1]
    if tall:  # iterate on the smaller Gram matrix
        x = x.mT
    x = x / (x.norm(dim=(-2, -1), keepdim=True) + eps)  # spectral norm <= Frobenius norm <= 1
    for _ in range(steps):
        gram = x @ x.mT
        x = a * x + (b * gram + c * gram @ gram) @ x
    return (x.mT if tall else x).to(g.dtype)


class Muon(torch.optim.Optimizer):
    """SGD momentum (Nesterov) whose update is orthogonalised per matrix; stacks of matrices allowed.

    The update of an (m, n) matrix is scaled by sqrt(max(1, m / n)), as in Keller Jordan's Muon, so
    that tall and wide matrices move alike; weight decay is decoupled (multiplied by the lr).
    """

    def __init__(self, params: Iterable[torch.Tensor] | Iterable[dict], lr: float = 0.02, momentum: float = 0.95,
                 weight_decay: float = 0.0, nesterov: bool = True, ns_steps: int = 5) -> None:
        super().__init__(params, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay,
                                  "nesterov": nesterov, "ns_steps": ns_steps})
        for group in self.param_groups:
            for p in group["params"]:
                if p.dim() < 2:
                    raise ValueError(f"Muon updates matrices (or stacks of them); got a {p.dim()}-D parameter")

    @torch.no_grad()
    def step(self, closure: None = None) -> None:  # type: ignore[override]
        for group in self.param_groups:
            lr, mom, wd = group["lr"], group["momentum"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p)
                buf = state["momentum_buffer"]
                buf.lerp_(p.grad, 1 - mom)
                update = p.grad.lerp(buf, mom) if group["nesterov"] else buf
                update = orthogonalize(update, group["ns_steps"])
                scale = math.sqrt(max(1.0, p.shape[-2] / p.shape[-1]))
                if wd:
                    p.mul_(1 - lr * wd)
                p.add_(update, alpha=-lr * scale)


def build_optimizers(model: nn.Module, lr: float, weight_decay: float, betas: tuple[float, float],
                     kind: OptimizerKind = "adamw", muon_lr: float = 0.02, muon_momentum: float = 0.95
                     ) -> list[torch.optim.Optimizer]:
    """The optimizers of ``kind`` over ``model``'s trainable parameters (see the module docstring).

    AdamW decays matrices but not 1-D parameters; with ``muon`` the blocks' matrices go to Muon
    (their weight decay the same ``weight_decay``) and AdamW keeps the embedding, head, norms and router.
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if kind == "muon":
        hidden = [p for n, p in named if p.dim() >= 2 and ".blocks." in f".{n}" and "router" not in n]
        ids = {id(p) for p in hidden}
        rest = [(n, p) for n, p in named if id(p) not in ids]
    else:
        hidden, rest = [], named
    decay = [p for _, p in rest if p.dim() >= 2]
    no_decay = [p for _, p in rest if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    out: list[torch.optim.Optimizer] = [torch.optim.AdamW(groups, lr=lr, betas=betas, foreach=True)]
    if hidden:
        out.append(Muon(hidden, lr=muon_lr, momentum=muon_momentum, weight_decay=weight_decay))
    return out


def build_optimizer(model: nn.Module, lr: float, weight_decay: float, betas: tuple[float, float]
                    ) -> torch.optim.AdamW:
    """Plain AdamW over every parameter (the ``adamw`` set-up as one optimizer)."""
    (opt,) = build_optimizers(model, lr, weight_decay, betas)
    assert isinstance(opt, torch.optim.AdamW)
    return opt


def lr_at(step: int, total_steps: int, peak: float, warmup_steps: int, min_ratio: float,
          schedule: Schedule = "cosine", decay_fraction: float = 0.5) -> float:
    """Learning rate of optimizer step ``step`` (0-based).

    ``cosine``: linear warm-up, then cosine to ``peak * min_ratio`` at the last step.
    ``wsd`` (warm-up, stable, decay): linear warm-up, constant ``peak``, then a linear decay to
    ``peak * min_ratio`` over the last ``decay_fraction`` of the steps (the nanoGPT speedruns' shape;
    with ``min_ratio`` 0 it ends at zero).
    """
    if warmup_steps and step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    if schedule == "wsd":
        decay_steps = max(1, round(decay_fraction * total_steps))
        start = total_steps - decay_steps
        if step < start:
            return peak
        progress = min(1.0, (step - start + 1) / decay_steps)
        return peak * (1.0 - (1.0 - min_ratio) * progress)
    span = max(1, total_steps - warmup_steps - 1)
    progress = min(1.0, (step - warmup_steps) / span)
    return peak * (min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress)))
