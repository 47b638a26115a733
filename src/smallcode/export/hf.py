"""The one place that knows Hugging Face's names: smallcode checkpoints as transformers model directories.

``export_hf(checkpoint, out)`` writes a directory that ``AutoModelForCausalLM`` and ``AutoTokenizer``
load. A model with ``n_global == 0`` is written as the transformers class computing the same
function (``hf_kind``), through an explicit key map used in both directions:

* no attention biases: ``MixtralForCausalLM`` (MoE) or ``MistralForCausalLM`` (one expert), with
  ``sliding_window = window``;
* a q/k/v bias without an output bias, one expert: ``Qwen2ForCausalLM``, every layer windowed
  (``use_sliding_window``, ``max_window_layers = 0``), or no window at all when the window covers
  ``max_seq_len`` (a full-attention model, as Qwen2.5 ships);
* an output bias, one expert, full attention: ``LlamaForCausalLM`` with ``attention_bias`` (a
  missing q/k/v bias is written as zeros, which is the same function).

RoPE scaling goes along as transformers' ``rope_parameters`` (``rope_type`` linear or llama3). What
none of these expresses (global tokens, attention biases with experts or with a window Llama lacks)
is written with its own weights and config and the modeling file in ``remote/`` (``auto_map``;
loading needs ``trust_remote_code=True``). Either way the tokenizer goes
along with its special tokens (FIM, file separator when the tokenizer has one, chat roles), the
end-of-text token as eos and the chat template.

``transformers`` is imported only inside the functions that need it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import save_file

from smallcode.config import ConfigError
from smallcode.export import check_destination
from smallcode.fileio import as_created, atomic_dir
from smallcode.model.checkpoint import Checkpoint, copy_hf_tokenizer_files
from smallcode.model.config import ModelConfig
from smallcode.tokenizer.code_tokenizer import CONFIG_FILE as TOKENIZER_CONFIG_FILE
from smallcode.tokenizer.code_tokenizer import TOKENIZER_FILE

HfKind = Literal["MixtralForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "LlamaForCausalLM",
                 "SmallCodeForCausalLM"]
REMOTE_DIR = Path(__file__).parent / "remote"
REMOTE_FILES = ("configuration_smallcode.py", "modeling_smallcode.py")
"""Copied from ``REMOTE_DIR`` into an export of a model with global tokens (its ``auto_map`` names them)."""



def trusted_remote_code(path: str | Path) -> bool:
    """Whether transformers may run the model code in the directory ``path`` (``trust_remote_code``):
    only when it is this package's own modeling files byte for byte, i.e. an export of ours with global
    tokens. Every loader of Hugging Face directories asks this, so no other code ever runs."""
    path = Path(path)
    return all((path / name).is_file() and (path / name).read_bytes() == (REMOTE_DIR / name).read_bytes()
               for name in REMOTE_FILES)


def no_hf_equivalent(config: ModelConfig) -> str | None:
    """Why no transformers class computes ``config``'s function (one line), or None when one does."""
    if config.n_global:
        return (f"ModelConfig.n_global is {config.n_global}: global tokens have no transformers equivalent "
                "(export_hf writes such a model with smallcode's own modeling file)")
    if config.is_moe and (config.qkv_bias or config.out_bias):
        return ("ModelConfig.qkv_bias/out_bias with n_experts > 1: Mixtral has no attention biases "
                "(export_hf writes such a model with smallcode's own modeling file)")
    if config.out_bias and config.window < config.max_seq_len:
        return (f"ModelConfig.out_bias with window {config.window} < max_seq_len {config.max_seq_len}: Llama's "
                "attention_bias has no sliding window (export_hf writes such a model with smallcode's own "
                "modeling file)")
    return None


def rope_parameters(config: ModelConfig) -> dict[str, Any]:
    """transformers' ``rope_parameters`` (v5; ``rope_scaling`` before) for ``config``'s RoPE."""
    params: dict[str, Any] = {"rope_type": "default" if config.rope_scaling == "none" else config.rope_scaling,
                              "rope_theta": config.rope_base}
    if config.rope_scaling != "none":
        params["factor"] = config.rope_factor
    if config.rope_scaling == "llama3":
        params |= {"low_freq_factor": config.rope_low_freq_factor, "high_freq_factor": config.rope_high_freq_factor,
                   "original_max_position_embeddings": config.rope_original_max_len}
    return params


def hf_config(config: ModelConfig) -> Any:
    """The transformers config of ``hf_kind(config)`` for the same function; a ``ConfigError`` when
    there is none (``no_hf_equivalent`` says why)."""
    reason = no_hf_equivalent(config)
    if reason:
        raise ConfigError(reason)
    from transformers import LlamaConfig, MistralConfig, MixtralConfig, Qwen2Config

    common = dict(
        vocab_size=config.vocab_size, hidden_size=config.d_model, intermediate_size=config.d_ff,
        num_hidden_layers=config.n_layers, num_attention_heads=config.n_heads,
        num_key_value_heads=config.n_kv_heads, head_dim=config.hd, max_position_embeddings=config.max_seq_len,
        rms_norm_eps=config.norm_eps, rope_parameters=rope_parameters(config),
        tie_word_embeddings=config.tie_embeddings, hidden_act="silu", attention_dropout=0.0,
    )
    kind = hf_kind(config)
    if kind == "MixtralForCausalLM":
        return MixtralConfig(num_local_experts=config.n_experts, num_experts_per_tok=config.top_k,
                             router_aux_loss_coef=config.balance_loss_coef, router_jitter_noise=0.0,
                             sliding_window=config.window, **common)
    if kind == "Qwen2ForCausalLM":
        # Qwen2 windows the layers from max_window_layers on; a window covering the whole context is none.
        windowed = config.window < config.max_seq_len
        return Qwen2Config(use_sliding_window=windowed, sliding_window=config.window if windowed else None,
                           max_window_layers=0 if windowed else config.n_layers, **common)
    if kind == "LlamaForCausalLM":
        return LlamaConfig(attention_bias=True, mlp_bias=False, **common)
    return MistralConfig(sliding_window=config.window, **common)


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
        if config.out_bias:
            pairs.append((ours + "attn.wo.bias", theirs + "self_attn.o_proj.bias"))
        if config.is_moe:
            pairs += [
                (ours + "ffn.router.weight", theirs + "mlp.gate.weight"),
                (ours + "ffn.experts.w_gate_up", theirs + "mlp.experts.gate_up_proj"),
                (ours + "ffn.experts.w_down", theirs + "mlp.experts.down_proj"),
            ]
    return pairs


def to_hf_state_dict(state: dict[str, torch.Tensor], config: ModelConfig) -> dict[str, torch.Tensor]:
    """Our state dict -> the state dict of ``hf_kind(config)`` (tensors are shared, not copied)."""
    hf_config(config)  # refuses configs with no HF equivalent
    out = {theirs: state[ours] for ours, theirs in _key_map(config)}
    qs, ks = config.n_heads * config.hd, config.n_kv_heads * config.hd
    for i in range(config.n_layers):
        ours, theirs = f"blocks.{i}.", f"model.layers.{i}."
        w = state[ours + "attn.wqkv.weight"]
        q, k, v = w.split([qs, ks, ks])
        out |= {theirs + "self_attn.q_proj.weight": q, theirs + "self_attn.k_proj.weight": k,
                theirs + "self_attn.v_proj.weight": v}
        if config.qkv_bias or config.out_bias:  # Llama's attention_bias has all four; zeros are no bias
            b = state[ours + "attn.wqkv.bias"] if config.qkv_bias else w.new_zeros(w.shape[0])
            q, k, v = b.split([qs, ks, ks])
            out |= {theirs + "self_attn.q_proj.bias": q, theirs + "self_attn.k_proj.bias": k,
                    theirs + "self_attn.v_proj.bias": v}
        if not config.is_moe:
            gate, up = state[ours + "ffn.experts.w_gate_up"][0].split(config.d_ff)
            out |= {theirs + "mlp.gate_proj.weight": gate, theirs + "mlp.up_proj.weight": up,
                    theirs + "mlp.down_proj.weight": state[ours + "ffn.experts.w_down"][0]}
    return out


def from_hf_state_dict(hf_state: dict[str, torch.Tensor], config: ModelConfig) -> dict[str, torch.Tensor]:
    """A state dict of ``hf_kind(config)`` -> ours; a missing key names itself.

    Only the tensors ``config`` has a place for are read: a Llama q/k/v bias when ``qkv_bias`` is off
    is left behind (an importer sets ``qkv_bias`` when those biases are not all zero)."""
    def get(key: str) -> torch.Tensor:
        if key not in hf_state:
            raise KeyError(f"Hugging Face state dict has no {key!r}")
        return hf_state[key]

    out = {ours: get(theirs) for ours, theirs in _key_map(config)}
    for i in range(config.n_layers):
        ours, theirs = f"blocks.{i}.", f"model.layers.{i}.self_attn."
        out[ours + "attn.wqkv.weight"] = torch.cat(
            [get(theirs + "q_proj.weight"), get(theirs + "k_proj.weight"), get(theirs + "v_proj.weight")])
        if config.qkv_bias:
            out[ours + "attn.wqkv.bias"] = torch.cat(
                [get(theirs + "q_proj.bias"), get(theirs + "k_proj.bias"), get(theirs + "v_proj.bias")])
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


def hf_kind(config: ModelConfig) -> HfKind:
    """The transformers class an export of ``config`` loads as."""
    if no_hf_equivalent(config):
        return "SmallCodeForCausalLM"
    if config.out_bias:
        return "LlamaForCausalLM"
    if config.qkv_bias:
        return "Qwen2ForCausalLM"
    return "MixtralForCausalLM" if config.is_moe else "MistralForCausalLM"


def remote_config(config: ModelConfig) -> dict[str, Any]:
    """``config.json`` of an export with global tokens: our architecture fields, read by ``remote/``'s config."""
    arch = {k: v for k, v in config.to_dict().items()
            if k not in ("top_k", "tie_embeddings", "balance_loss_coef", "z_loss_coef", "init_std", "rope_scaling")}
    return {
        "model_type": "smallcode",
        "architectures": ["SmallCodeForCausalLM"],
        "auto_map": {"AutoConfig": "configuration_smallcode.SmallCodeConfig",
                     "AutoModelForCausalLM": "modeling_smallcode.SmallCodeForCausalLM"},
        **arch,
        "head_dim": config.hd,
        "num_experts_per_tok": config.top_k,  # transformers would read a config's top_k as a sampling option
        "rope_scaling_type": config.rope_scaling,  # its configs take rope_scaling for their rope_parameters
        "tie_word_embeddings": config.tie_embeddings,
    }


def export_hf(checkpoint: str | Path, out: str | Path, force: bool = False) -> Path:
    """Write the checkpoint in ``checkpoint`` as a transformers model directory ``out``; returns ``out``.

    ``out`` must not exist or be empty unless ``force`` (it is then replaced). The directory is built
    under a temporary name and renamed into place, so a failed export leaves nothing behind.
    """
    checkpoint, out = Path(checkpoint), Path(out)
    check_destination(checkpoint, out, force)
    ckpt = Checkpoint.open(checkpoint)
    tokenizer = ckpt.load_tokenizer()
    config = ckpt.config
    # The tokenizer's special ids decide when generation stops and how batches are padded.
    # Every stop id is an eos for generate, as for our engine (a chat turn ends at <|end|>).
    # (an imported model's tokenizer may have no pad token of its own: it still generates)
    special = {"eos_token_id": list(tokenizer.stop_ids), "pad_token_id": tokenizer.pad_id_or_none,
               "bos_token_id": None}
    with atomic_dir(out) as tmp:
        if hf_kind(config) == "SmallCodeForCausalLM":
            state = ckpt.weights()
            if config.tie_embeddings:
                state.pop("lm_head.weight")  # transformers ties it back to embed.weight
            save_file({k: v.contiguous() for k, v in state.items()}, tmp / "model.safetensors",
                      metadata={"format": "pt"})
            dtype = str(state["embed.weight"].dtype).removeprefix("torch.")
            meta = {**remote_config(config), **special, "dtype": dtype}
            (tmp / "config.json").write_text(json.dumps(meta, indent=2) + "\n")
            (tmp / "generation_config.json").write_text(json.dumps(special, indent=2) + "\n")
            for name in REMOTE_FILES:
                shutil.copyfile(REMOTE_DIR / name, tmp / name)
        else:
            ours = ckpt.load_model()
            model = to_hf_model(ours).to(ours.lm_head.weight.dtype)  # stored as the checkpoint stores it
            for k, v in special.items():
                setattr(model.config, k, v)
                setattr(model.generation_config, k, v)
            model.save_pretrained(tmp)
        shutil.copyfile(ckpt.tokenizer_file, tmp / TOKENIZER_FILE)  # type: ignore[arg-type]
        if tokenizer.native:
            (tmp / TOKENIZER_CONFIG_FILE).write_text(json.dumps(tokenizer.hf_config(), indent=2) + "\n")
        else:  # an imported model's tokenizer files, unchanged (the generation config is the export's own)
            copy_hf_tokenizer_files(ckpt.directory, tmp, skip=("generation_config.json",))
        as_created(*tmp.glob("*.safetensors"))  # safetensors writes them 0600: weights are no secret
    return out
