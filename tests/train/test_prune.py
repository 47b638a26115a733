"""Width pruning keeps the hidden units that carry the activations, and exactly the parent's function when
the removed units contributed nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from smallcode.config import ConfigError
from smallcode.model import ModelConfig, SmallCodeLM
from smallcode.model.checkpoint import Checkpoint, save_checkpoint
from smallcode.train.prune import ffn_importance, prune_checkpoint, prune_ffn

DENSE = ModelConfig.preset("tiny", n_experts=1, top_k=1, d_ff=96)


def dense_with_dead_units(dead: torch.Tensor) -> SmallCodeLM:
    """A dense tiny model whose hidden units ``dead`` (per layer) have zero gate and up rows."""
    torch.manual_seed(0)
    model = SmallCodeLM(DENSE)
    with torch.no_grad():
        for block in model.blocks:
            w = block.ffn.experts.w_gate_up[0]
            w[dead] = 0.0
            w[DENSE.d_ff + dead] = 0.0
    return model


def test_pruning_the_dead_units_keeps_the_function_exactly() -> None:
    dead = torch.arange(0, 96, 2)  # every other unit
    model = dense_with_dead_units(dead)
    ids = torch.randint(0, DENSE.vocab_size, (2, 24))
    pruned = prune_ffn(model, 48, ids)
    assert pruned.config == DENSE.replace(d_ff=48)
    keep = torch.arange(1, 96, 2)
    for block, parent in zip(pruned.blocks, model.blocks, strict=True):
        w = parent.ffn.experts.w_gate_up[0]
        torch.testing.assert_close(block.ffn.experts.w_gate_up[0], torch.cat([w[keep], w[96 + keep]]))
        torch.testing.assert_close(block.ffn.experts.w_down[0], parent.ffn.experts.w_down[0][:, keep])
    test_ids = torch.randint(0, DENSE.vocab_size, (3, 40))
    with torch.no_grad():
        torch.testing.assert_close(pruned(test_ids).logits, model(test_ids).logits, atol=1e-5, rtol=1e-5)
    # the rest of the model is copied, not shared
    assert pruned.embed.weight.data_ptr() != model.embed.weight.data_ptr()
    torch.testing.assert_close(pruned.embed.weight, model.embed.weight)


def test_importance_is_the_mean_absolute_activation() -> None:
    model = dense_with_dead_units(torch.arange(10))
    ids = torch.randint(0, DENSE.vocab_size, (2, 16))
    scores = ffn_importance(model, ids)
    assert len(scores) == DENSE.n_layers and scores[0].shape == (96,)
    assert torch.all(scores[0][:10] == 0) and torch.all(scores[0][10:] > 0)
    # layer 0's by hand: its input is the normed residual after attention
    cos, sin = model.rope(torch.arange(ids.shape[1]))
    with torch.no_grad():
        h = model.embed(ids)
        h = h + model.blocks[0].attn(model.blocks[0].attn_norm(h), cos[:, None], sin[:, None])
        x = model.blocks[0].ffn_norm(h).flatten(0, 1)
    gate, up = (x @ model.blocks[0].ffn.experts.w_gate_up[0].T).chunk(2, dim=-1)
    torch.testing.assert_close(scores[0], (torch.nn.functional.silu(gate) * up).abs().mean(0), atol=1e-6, rtol=1e-4)


def test_prune_refuses_moe_parents_and_impossible_widths(tmp_path: Path) -> None:
    ids = torch.randint(0, DENSE.vocab_size, (1, 8))
    with pytest.raises(ConfigError, match="dense"):
        prune_ffn(SmallCodeLM(ModelConfig.preset("tiny")), 16, ids)
    with pytest.raises(ConfigError, match="between 1 and"):
        prune_ffn(SmallCodeLM(DENSE), 200, ids)
    save_checkpoint(SmallCodeLM(DENSE), tmp_path / "parent")
    out = prune_checkpoint(tmp_path / "parent", tmp_path / "pruned", 32, ids)
    ckpt = Checkpoint.open(out)
    assert ckpt.config.d_ff == 32 and ckpt.meta["prune"]["d_ff"] == 32
