"""The reference model has one forward path: the torch mode does not change what it returns."""

from __future__ import annotations

import pytest
import torch

from smallcode.model import LMOutput, ModelConfig, SmallCodeLM


def outputs(model: SmallCodeLM, ids: torch.Tensor, prefill: int) -> list[LMOutput]:
    """A full forward, then a prefill and one-token steps through a cache."""
    cache = model.new_cache(ids.shape[0])
    outs = [model(ids), model(ids[:, :prefill], cache)]
    outs += [model(ids[:, t:t + 1], cache) for t in range(prefill, ids.shape[1])]
    return outs


@pytest.mark.parametrize(("n_experts", "B"), [(4, 1), (4, 3), (1, 2)])
def test_outputs_are_identical_with_and_without_inference_mode(n_experts: int, B: int) -> None:
    torch.manual_seed(0)
    model = SmallCodeLM(ModelConfig.preset("tiny", n_experts=n_experts, top_k=min(2, n_experts))).eval()
    ids = torch.randint(0, 256, (B, 12))
    with_grad = outputs(model, ids, 4)
    with torch.inference_mode():
        inference = outputs(model, ids, 4)
    for ref, got in zip(with_grad, inference, strict=True):
        assert torch.equal(got.logits, ref.logits)
        assert torch.equal(got.balance_loss, ref.balance_loss)
        assert torch.equal(got.z_loss, ref.z_loss)
        if n_experts == 1:
            assert ref.expert_load is None and got.expert_load is None
        else:
            assert ref.balance_loss > 0 and got.expert_load is not None
            assert torch.equal(got.expert_load, ref.expert_load)


def test_every_projection_goes_through_its_module() -> None:
    """Forward hooks (what quantisers and exporters attach to) see every linear layer and every MoE
    layer, in training, in a prefill and in a one-token decode step alike."""
    model = SmallCodeLM(ModelConfig.preset("tiny")).eval()
    watched = {name: m for name, m in model.named_modules()
               if isinstance(m, torch.nn.Linear) or type(m).__name__ == "MoE"}
    assert len(watched) == 3 * model.config.n_layers + 1  # wqkv, wo, ffn per block; the head
    calls: list[str] = []
    for name, m in watched.items():
        m.register_forward_hook(lambda mod, args, out, name=name: calls.append(name))
    ids = torch.randint(0, 256, (2, 6))
    model(ids)
    with torch.inference_mode():
        cache = model.new_cache(2)
        model(ids[:, :5], cache)
        model(ids[:, 5:], cache)
    assert sorted(calls) == sorted(3 * list(watched))
