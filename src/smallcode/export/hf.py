"""The one place that knows Hugging Face's names: config and weights to and from Mixtral/Mistral.

A smallcode model with ``n_global == 0`` is the same function as ``MixtralForCausalLM`` (MoE) or
``MistralForCausalLM`` (one expert) with ``sliding_window = window``; with global tokens there is
no Hugging Face equivalent and the export refuses rather than silently change the function.
The key map is written once, as explicit pairs, and used in both directions.
``transformers`` is imported only inside the functions that need it.
"""

from __future__ import annotations

from typing import Any

import torch

from smallcode.config import ConfigError
from smallcode.model.config import ModelConfig


def hf_config(config: ModelConfig) -> Any:
    """A transformers ``MixtralConfig`` (MoE) or ``MistralConfig`` (dense) for the same function."""
    if config.n_global:
        raise ConfigError(
            f"ModelConfig.n_global is {config.n_global}: global tokens have no Hugging Face equivalent; "
            "only n_global = 0 exports to Mixtral/Mistral"
        )
    from transformers import MistralConfig, MixtralConfig

    common = dict(
        vocab_size=config.vocab_size, hidden_size=config.d_model, intermediate_size=config.d_ff,
        num_hidden_layers=config.n_layers, num_attention_heads=config.n_heads,
        num_key_value_heads=config.n_kv_heads, head_dim=config.hd, max_position_embeddings=config.max_seq_len,
        rms_norm_eps=config.norm_eps, rope_theta=config.rope_base, sliding_window=config.window,
        tie_word_embeddings=config.tie_embeddings, hidden_act="silu", attention_dropout=0.0,
    )
    if config.is_moe:
        return MixtralConfig(num_local_experts=config.n_experts, num_experts_per_tok=config.top_k,
                             router_aux_loss_coef=config.balance_loss_coef, router_jitter_noise=0.0,
                             **common)
    return MistralConfig(**common)


def _key_map(config: ModelConfig) -> list[tuple[str, str]]:
    """(smallcode key, HF key) for every tensor that is copied one-to-one."""
    pairs = [("embed.weight", "model.embed_tokens.weight"), ("norm.weight", "model.norm.weight")]
    if not config.tie_embeddings:
        pairs.append(("lm_head.weight", "lm_head.weight"))
    for i in range(config.n_layers):
        ours, theirs = f"blocks.{i}.", f"model.layers.{i}."
        pairs += [
            (ours + "attn_norm.weight", theirs + "input_layernorm.weight"),
            (ours + "ffn_norm.weight", theirs + "post_attention_layernorm.weight"),
            (ours + "attn.wo.weight", theirs + "self_attn.o_proj.weight"),
        ]
        if config.is_moe:
            pairs += [
                (ours + "ffn.router.weight", theirs + "mlp.gate.weight"),
                (ours + "ffn.experts.w_gate_up", theirs + "mlp.experts.gate_up_proj"),
                (ours + "ffn.experts.w_down", theirs + "mlp.experts.down_proj"),
            ]
    return pairs


def to_hf_state_dict(state: dict[str, torch.Tensor], config: ModelConfig) -> dict[str, torch.Tensor]:
    """Our state dict -> transformers Mixtral/Mistral state dict (tensors are shared, not copied)."""
    hf_config(config)  # refuses configs with no HF equivalent
    out = {theirs: state[ours] for ours, theirs in _key_map(config)}
    qs, ks = config.n_heads * config.hd, config.n_kv_heads * config.hd
    for i in range(config.n_layers):
        ours, theirs = f"blocks.{i}.", f"model.layers.{i}."
        q, k, v = state[ours + "attn.wqkv.weight"].split([qs, ks, ks])
        out |= {theirs + "self_attn.q_proj.weight": q, theirs + "self_attn.k_proj.weight": k,
                theirs + "self_attn.v_proj.weight": v}
        if not config.is_moe:
            gate, up = state[ours + "ffn.experts.w_gate_up"][0].split(config.d_ff)
            out |= {theirs + "mlp.gate_proj.weight": gate, theirs + "mlp.up_proj.weight": up,
                    theirs + "mlp.down_proj.weight": state[ours + "ffn.experts.w_down"][0]}
    return out


def from_hf_state_dict(hf_state: dict[str, torch.Tensor], config: ModelConfig) -> dict[str, torch.Tensor]:
    """transformers Mixtral/Mistral state dict -> our state dict; a missing key names itself."""
    def get(key: str) -> torch.Tensor:
        if key not in hf_state:
            raise KeyError(f"Hugging Face state dict has no {key!r}")
        return hf_state[key]

    out = {ours: get(theirs) for ours, theirs in _key_map(config)}
    for i in range(config.n_layers):
        ours, theirs = f"blocks.{i}.", f"model.layers.{i}.self_attn."
        out[ours + "attn.wqkv.weight"] = torch.cat(
            [get(theirs + "q_proj.weight"), get(theirs + "k_proj.weight"), get(theirs + "v_proj.weight")])
        if not config.is_moe:
            mlp = f"model.layers.{i}.mlp."
            out[ours + "ffn.experts.w_gate_up"] = torch.cat(
                [get(mlp + "gate_proj.weight"), get(mlp + "up_proj.weight")])[None]
            out[ours + "ffn.experts.w_down"] = get(mlp + "down_proj.weight")[None]
    return out


def to_hf_model(model: torch.nn.Module) -> Any:
    """A transformers model computing the same function as ``model`` (float32 weights copied)."""
    from transformers import AutoModelForCausalLM

    config: ModelConfig = model.config  # type: ignore[assignment]
    hf = AutoModelForCausalLM.from_config(hf_config(config))
    missing, unexpected = hf.load_state_dict(to_hf_state_dict(model.state_dict(), config), strict=False)
    # With tied embeddings HF reports lm_head as missing and re-ties it; anything else is a bug.
    missing = [k for k in missing if not (config.tie_embeddings and k == "lm_head.weight")]
    if missing or unexpected:
        raise RuntimeError(f"weight map incomplete: missing {missing}, unexpected {unexpected}")
    return hf.eval()
