"""Our model against transformers' Mixtral (MoE) and Mistral (dense) with copied weights."""

from __future__ import annotations

import pytest
import torch

from smallcode.config import ConfigError
from smallcode.export.hf import from_hf_state_dict, hf_config, to_hf_model
from smallcode.model import ModelConfig, SmallCodeLM

pytest.importorskip("transformers")


def pair(**overrides: object) -> tuple[SmallCodeLM, torch.nn.Module]:
    config = ModelConfig.preset("tiny", n_global=0, **overrides)
    ours = SmallCodeLM(config).eval()
    return ours, to_hf_model(ours)


@pytest.mark.parametrize("moe", [True, False])
@pytest.mark.parametrize("T", [7, 16, 45])  # shorter than, equal to and longer than the window (16)
def test_logits_match(moe: bool, T: int) -> None:
    ours, hf = pair() if moe else pair(n_experts=1, top_k=1)
    assert type(hf).__name__ == ("MixtralForCausalLM" if moe else "MistralForCausalLM")
    ids = torch.randint(0, 256, (2, T))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).logits, hf(ids).logits, atol=1e-5, rtol=1e-5)


def test_tied_embeddings_match() -> None:
    ours, hf = pair(tie_embeddings=True)
    ids = torch.randint(0, 256, (1, 30))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).logits, hf(ids).logits, atol=1e-5, rtol=1e-5)


def test_balance_loss_matches_per_layer() -> None:
    from transformers.models.mixtral.modeling_mixtral import load_balancing_loss_func

    ours, hf = pair(n_layers=1)
    ids = torch.randint(0, 256, (2, 40))
    with torch.no_grad():
        out = ours(ids)
        hf_out = hf(ids, output_router_logits=True)
    torch.testing.assert_close(out.balance_loss, hf_out.aux_loss, atol=1e-6, rtol=1e-6)
    # With several layers we average per-layer Switch losses; HF pools the layers before the
    # product. Per layer the two definitions are the same function:
    ours, hf = pair(n_layers=3)
    with torch.no_grad():
        out = ours(ids)
        logits = hf(ids, output_router_logits=True).router_logits
    per_layer = [load_balancing_loss_func((layer,), 4, 2) for layer in logits]
    torch.testing.assert_close(out.balance_loss, torch.stack(per_layer).mean(), atol=1e-6, rtol=1e-6)


def test_gradients_match() -> None:
    ours, hf = pair()
    ours.train()
    hf.train()
    ids = torch.randint(0, 256, (2, 33))
    ours(ids).logits.square().mean().backward()
    hf(ids).logits.square().mean().backward()
    hf_grads = {k: p.grad for k, p in hf.named_parameters()}
    ours_as_hf = from_hf_state_dict(hf_grads, ours.config)
    for k, p in ours.named_parameters():
        torch.testing.assert_close(p.grad, ours_as_hf[k], atol=1e-6, rtol=1e-4, msg=k)


def test_round_trip_from_hf() -> None:
    ours, hf = pair()
    back = SmallCodeLM(ours.config)
    back.load_state_dict(from_hf_state_dict(hf.state_dict(), ours.config), strict=False)
    ids = torch.randint(0, 256, (1, 20))
    with torch.no_grad():
        torch.testing.assert_close(back(ids).logits, ours(ids).logits, atol=0, rtol=0)


def test_global_tokens_refuse_export() -> None:
    with pytest.raises(ConfigError, match="n_global"):
        hf_config(ModelConfig.preset("tiny"))
