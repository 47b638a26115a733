"""Width pruning: a dense model with a narrower feed-forward, cut from a wider trained one.

This is how the recipe makes its student from its teacher instead of from scratch (the Minitron
recipe, Muralidharan et al. 2024: prune a trained model, then distil from the unpruned one to
recover): every weight but the feed-forward is copied, and each layer keeps the ``d_ff`` hidden
units of its SwiGLU that matter most, the rest removed. A unit's importance is the mean absolute
value of its activation, ``|silu(x W_gate) * (x W_up)|``, over calibration tokens (the activation
criterion Minitron found best); ties are broken by position, so the result is deterministic. The
kept units stay in their original order.

Pruning changes the function (what the removed units added is gone), so the pruned model is only
a starting point: the distillation stage that follows trains it against the unpruned teacher.
Only dense models are pruned (the recipe upcycles after pruning, not before).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
import torch.nn.functional as F

from smallcode.config import ConfigError
from smallcode.fileio import sha256_file
from smallcode.model.checkpoint import Checkpoint, save_checkpoint
from smallcode.model.transformer import SmallCodeLM, model_from_state


@torch.no_grad()
def ffn_importance(model: SmallCodeLM, calibration_BT: torch.Tensor) -> list[torch.Tensor]:
    """Per layer, the (d_ff,) mean absolute activation of each feed-forward hidden unit on the tokens."""
    inputs: list[torch.Tensor] = []
    hooks = [block.ffn.register_forward_pre_hook(lambda _m, args: inputs.append(args[0].detach()))
             for block in model.blocks]
    was_training = model.training
    try:
        model.eval()
        model.trunk(calibration_BT.to(model.device))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    out = []
    for block, x_BTD in zip(model.blocks, inputs, strict=True):
        w_gate_up = block.ffn.experts.w_gate_up[0]  # (2 * d_ff, D): gate rows, then up rows
        gate, up = (x_BTD.flatten(0, 1) @ w_gate_up.T).chunk(2, dim=-1)
        out.append((F.silu(gate) * up).abs().mean(0))
    return out


@torch.no_grad()
def prune_ffn(model: SmallCodeLM, d_ff: int, calibration_BT: torch.Tensor) -> SmallCodeLM:
    """A copy of dense ``model`` whose feed-forwards keep their ``d_ff`` most important hidden units."""
    config = model.config
    if config.n_experts != 1:
        raise ConfigError(f"prune: the parent must be dense (n_experts == 1), it has {config.n_experts} experts")
    if not 1 <= d_ff <= config.d_ff:
        raise ConfigError(f"prune: d_ff must be between 1 and the parent's {config.d_ff}, got {d_ff!r}")
    importance = ffn_importance(model, calibration_BT)
    state = dict(model.state_dict())
    for i, score in enumerate(importance):
        # stable descending order: among equal scores the earlier unit wins
        keep = torch.sort(torch.argsort(score, descending=True, stable=True)[:d_ff]).values
        prefix = f"blocks.{i}.ffn.experts."
        w_gate_up = state[prefix + "w_gate_up"]  # (1, 2 * d_ff_old, D)
        state[prefix + "w_gate_up"] = torch.cat([w_gate_up[:, keep], w_gate_up[:, config.d_ff + keep]], dim=1)
        state[prefix + "w_down"] = state[prefix + "w_down"][:, :, keep]  # (1, D, d_ff)
    return model_from_state(model, dataclasses.replace(config, d_ff=d_ff), state)


def prune_checkpoint(parent_dir: str | Path, out_dir: str | Path, d_ff: int, calibration_BT: torch.Tensor) -> Path:
    """Prune the checkpoint in ``parent_dir`` to ``d_ff`` and write it, with its tokenizer, to ``out_dir``."""
    parent_dir, out_dir = Path(parent_dir), Path(out_dir)
    parent = Checkpoint.open(parent_dir)
    pruned = prune_ffn(parent.load_model(), d_ff, calibration_BT)
    extra = {"pruned_from": {"path": str(parent_dir.resolve()), "weights_sha256": sha256_file(parent.weights_file)},
             "prune": {"d_ff": d_ff, "calibration_tokens": int(calibration_BT.numel())}}
    return save_checkpoint(pruned, out_dir, tokenizer_file=parent.tokenizer_file, extra=extra)
