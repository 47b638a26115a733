"""AdamW with decay on matrices only, and the warm-up + cosine learning-rate schedule.

The schedule is a pure function of the step, so a resumed run needs nothing but the step to
continue it; there is no scheduler object whose state could drift from the optimizer's.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def build_optimizer(model: nn.Module, lr: float, weight_decay: float, betas: tuple[float, float]
                    ) -> torch.optim.AdamW:
    """AdamW; norms' gains (1-D parameters) are not decayed, every matrix is."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.dim() >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=betas, foreach=True)


def lr_at(step: int, total_steps: int, peak: float, warmup_steps: int, min_ratio: float) -> float:
    """Learning rate of optimizer step ``step`` (0-based): linear warm-up, then cosine to ``peak * min_ratio``."""
    if warmup_steps and step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps - 1)
    progress = min(1.0, (step - warmup_steps) / span)
    return peak * (min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress)))
