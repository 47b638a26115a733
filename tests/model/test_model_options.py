"""The options an imported model needs (attention biases, RoPE scaling), against transformers' own models.

Each family's combination is a tiny random model: Qwen2 (q/k/v bias, tied embeddings, full attention
or a window, linear scaling), Llama 3 (llama3 scaling with a small ``original_max_position_embeddings``
so that every sequence here passes it), Llama with ``attention_bias`` (both biases), and Mixtral with
llama3 scaling. The references are transformers' classes holding the same weights: their float32
logits, and their greedy ``generate``, which our engine (KV cache, decode kernels) must reproduce
token for token. The RoPE frequencies are also compared bit for bit with transformers' own.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch

from factories import make_model, tiny_tokenizer  # type: ignore[import-not-found]
from smallcode.config import ConfigError
from smallcode.export.hf import (
    from_hf_state_dict,
    hf_config,
    hf_kind,
    rope_parameters,
    to_hf_model,
    to_hf_state_dict,
)
from smallcode.model import ModelConfig, SmallCodeLM
from smallcode.model.checkpoint import Checkpoint, save_checkpoint
from smallcode.model.layers import RotaryEmbedding, rope_inv_freq
from smallcode.runtime import Engine, SamplingParams, cpu_decode
from smallcode.runtime.cpu_decode import prepare_for_decoding

transformers = pytest.importorskip("transformers")

DENSE = {"n_global": 0, "n_experts": 1, "top_k": 1}
LLAMA3 = {"rope_scaling": "llama3", "rope_factor": 8.0, "rope_low_freq_factor": 1.0,
          "rope_high_freq_factor": 4.0, "rope_original_max_len": 32}
FAMILIES = {  # name: (ModelConfig overrides on the tiny preset, the transformers class it is)
    "qwen2": ({**DENSE, "qkv_bias": True, "tie_embeddings": True, "window": 128}, "Qwen2ForCausalLM"),
    "qwen2-window-linear": ({**DENSE, "qkv_bias": True, "window": 16, "rope_scaling": "linear", "rope_factor": 2.5},
                            "Qwen2ForCausalLM"),
    "llama3": ({**DENSE, **LLAMA3, "window": 128}, "LlamaForCausalLM"),
    "llama-attention-bias": ({**DENSE, "qkv_bias": True, "out_bias": True, "window": 128}, "LlamaForCausalLM"),
    "mixtral-llama3": ({"n_global": 0, **LLAMA3}, "MixtralForCausalLM"),
}
PROMPT_LEN, NEW_TOKENS = 12, 100  # 112 positions: past rope_original_max_len (32), within max_seq_len (128)


pytestmark = pytest.mark.usefixtures("one_thread")


def with_biases(model: SmallCodeLM, scale: float = 0.5) -> SmallCodeLM:
    """Random biases: the initialisation's zeros would make a dropped bias go unnoticed."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".bias"):
                p.copy_(torch.randn(p.shape, generator=g) * scale)
    return model


def ours_of(family: str) -> SmallCodeLM:
    return with_biases(make_model(**FAMILIES[family][0]))


def theirs_of(model: SmallCodeLM, kind: str) -> torch.nn.Module:
    """transformers' ``kind`` holding ``model``'s weights. Llama 3 without biases exports as Mistral
    (``hf_kind``); its Llama twin is built here from the same config and key map, which both share."""
    if kind == hf_kind(model.config):
        return to_hf_model(model)
    assert kind == "LlamaForCausalLM" and model.config.window >= model.config.max_seq_len
    from transformers import LlamaConfig, LlamaForCausalLM

    fields = hf_config(model.config).to_dict()
    keep = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
            "num_key_value_heads", "head_dim", "max_position_embeddings", "rms_norm_eps", "rope_parameters",
            "tie_word_embeddings")
    hf = LlamaForCausalLM(LlamaConfig(**{k: fields[k] for k in keep}))
    missing, unexpected = hf.load_state_dict(to_hf_state_dict(model.state_dict(), model.config), strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}
    return hf.eval()


@pytest.mark.parametrize("family", FAMILIES)
def test_logits_equal_transformers(family: str) -> None:
    ours = ours_of(family)
    theirs = theirs_of(ours, FAMILIES[family][1])
    assert type(theirs).__name__ == FAMILIES[family][1]
    ids = torch.randint(0, 512, (2, 120))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).logits, theirs(ids).logits, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_weights_round_trip_and_gradients_match(family: str) -> None:
    """The key map carries the biases both ways, and a training step's gradients are transformers'."""
    ours = ours_of(family).train()
    theirs = theirs_of(ours, FAMILIES[family][1]).train()
    back = from_hf_state_dict(theirs.state_dict(), ours.config)
    state = {k: v for k, v in ours.state_dict().items()  # a tied head is the embedding
             if not (ours.config.tie_embeddings and k == "lm_head.weight")}
    assert back.keys() == state.keys() and all(torch.equal(back[k], state[k]) for k in state)
    ids = torch.randint(0, 512, (2, 40))
    ours(ids).logits.square().mean().backward()
    theirs(ids).logits.square().mean().backward()
    grads = from_hf_state_dict({k: p.grad for k, p in theirs.named_parameters()}, ours.config)
    for k, p in ours.named_parameters():
        torch.testing.assert_close(p.grad, grads[k], atol=1e-6, rtol=1e-4, msg=k)


@pytest.mark.parametrize("family", FAMILIES)
def test_greedy_engine_equals_transformers_generate(family: str) -> None:
    ours = ours_of(family)
    theirs = theirs_of(ours, FAMILIES[family][1])
    engine = Engine(copy.deepcopy(ours), tiny_tokenizer())  # the engine swaps in the decode kernels
    g = torch.Generator().manual_seed(2)
    prompts = [torch.randint(0, 400, (n,), generator=g).tolist() for n in (PROMPT_LEN, PROMPT_LEN // 2)]
    got = engine.generate_ids(prompts, SamplingParams(max_tokens=NEW_TOKENS, temperature=0.0, ignore_eos=True))
    for prompt, completion in zip(prompts, got, strict=True):
        want = theirs.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                               max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False,
                               eos_token_id=None, pad_token_id=0)
        assert completion.token_ids == want[0, len(prompt):].tolist()


def decode_logits(model: SmallCodeLM, ids: torch.Tensor, prefill: int) -> torch.Tensor:
    cache = model.new_cache(ids.shape[0], initial_slots=4)  # a ring that grows (and wraps when windowed)
    outs = [model(ids[:, :prefill], cache).logits]
    outs += [model(ids[:, t:t + 1], cache).logits for t in range(prefill, ids.shape[1])]
    return torch.cat(outs, dim=1)


@pytest.mark.parametrize("kernels", ["built", "off"])
@pytest.mark.parametrize("family", ["qwen2-window-linear", "llama-attention-bias"])
def test_decode_kernels_equal_the_reference(family: str, kernels: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if kernels == "off":
        monkeypatch.setenv("SMALLCODE_CPU_KERNELS", "0")
    cpu_decode.forget_kernel()
    try:
        if kernels == "built" and not cpu_decode.available():
            pytest.skip("no C compiler: the few-row kernel is not built")
        reference = ours_of(family)
        ids = torch.randint(0, 512, (3, 60))
        with torch.no_grad():
            full = reference(ids).logits
        model = prepare_for_decoding(copy.deepcopy(reference))
        assert model.blocks[0].attn.wqkv.bias is not None
        with torch.inference_mode():
            torch.testing.assert_close(decode_logits(model, ids, 5), full, atol=1e-5, rtol=1e-5)
    finally:
        cpu_decode.forget_kernel()


@pytest.mark.parametrize("overrides", [
    {"rope_scaling": "linear", "rope_factor": 4.0},
    LLAMA3,
    {**LLAMA3, "rope_factor": 32.0, "rope_low_freq_factor": 2.0, "rope_high_freq_factor": 16.0,
     "rope_original_max_len": 4096, "rope_base": 500000.0, "head_dim": 128},  # Llama 3.2's numbers
])
def test_rope_frequencies_are_transformers_bits(overrides: dict) -> None:
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    config = ModelConfig.preset("tiny", **overrides)
    theirs = LlamaRotaryEmbedding(LlamaConfig(hidden_size=config.d_model, num_attention_heads=config.n_heads,
                                              head_dim=config.hd, rope_parameters=rope_parameters(config)))
    assert torch.equal(rope_inv_freq(config), theirs.inv_freq)
    # and the scaling does something: frequencies differ from the plain ones
    assert not torch.equal(rope_inv_freq(config), rope_inv_freq(config.replace(rope_scaling="none")))


def test_llama3_scaling_by_hand() -> None:
    """The three bands of Llama 3.1's rule, from its definition: wavelengths above original/low are
    divided by the factor, below original/high kept, in between blended in original/wavelength."""
    config = ModelConfig.preset("tiny", **LLAMA3)
    plain = rope_inv_freq(config.replace(rope_scaling="none")).double()
    got = rope_inv_freq(config).double()
    bands = set()
    for f, g in zip(plain.tolist(), got.tolist(), strict=True):
        wavelength = 2 * math.pi / f
        if wavelength > 32 / 1.0:
            want, band = f / 8.0, "long"
        elif wavelength < 32 / 4.0:
            want, band = f, "short"
        else:
            s = (32 / wavelength - 1.0) / (4.0 - 1.0)
            want, band = (1 - s) * f / 8.0 + s * f, "between"
        bands.add(band)
        assert g == pytest.approx(want, rel=1e-6)
    assert bands == {"long", "short", "between"}  # the tiny config has frequencies in every band


def test_a_loaded_checkpoint_keeps_the_scaling_and_biases(tmp_path) -> None:
    model = with_biases(make_model(**DENSE, **LLAMA3, qkv_bias=True, out_bias=True, window=128))
    loaded = Checkpoint.open(save_checkpoint(model, tmp_path / "ck")).load_model()
    assert torch.equal(loaded.rope.inv_freq, rope_inv_freq(model.config))
    assert torch.equal(loaded.blocks[1].attn.wo.bias, model.blocks[1].attn.wo.bias)
    ids = torch.randint(0, 512, (1, 50))
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, model(ids).logits, atol=0, rtol=0)
    # positions past the table are computed from the same frequencies
    rope = RotaryEmbedding.for_config(model.config)
    far = torch.tensor([500])
    assert torch.equal(rope(far)[0], torch.cat([500.0 * rope.inv_freq] * 2).cos()[None])


def test_state_keys_and_counts() -> None:
    config = ModelConfig.preset("tiny", qkv_bias=True, out_bias=True)
    state = SmallCodeLM(config).state_dict()
    qkv = (config.n_heads + 2 * config.n_kv_heads) * config.hd
    assert state["blocks.0.attn.wqkv.bias"].shape == (qkv,)
    assert state["blocks.1.attn.wo.bias"].shape == (config.d_model,)
    assert not state["blocks.0.attn.wqkv.bias"].any()  # biases start at zero
    plain = ModelConfig.preset("tiny")
    assert config.num_params() - plain.num_params() == config.n_layers * (qkv + config.d_model)


@pytest.mark.parametrize(("overrides", "kind"), [
    ({"n_global": 0, "qkv_bias": True}, "SmallCodeForCausalLM"),  # MoE: Mixtral has no biases
    ({**DENSE, "out_bias": True, "window": 16}, "SmallCodeForCausalLM"),  # Llama has no window
    ({**DENSE, "out_bias": True, "window": 128}, "LlamaForCausalLM"),  # no q/k/v bias: written as zeros
    ({**DENSE, "qkv_bias": True}, "Qwen2ForCausalLM"),
    ({"qkv_bias": True, "out_bias": True, **LLAMA3}, "SmallCodeForCausalLM"),
])
def test_kind_of_each_combination(overrides: dict, kind: str) -> None:
    config = ModelConfig.preset("tiny", **overrides)
    assert hf_kind(config) == kind
    if kind == "SmallCodeForCausalLM":
        with pytest.raises(ConfigError, match="n_global|bias"):
            hf_config(config)


def test_llama_with_output_bias_only_matches() -> None:
    ours = with_biases(make_model(**DENSE, out_bias=True, window=128))
    theirs = to_hf_model(ours)
    assert type(theirs).__name__ == "LlamaForCausalLM" and not theirs.model.layers[0].self_attn.q_proj.bias.any()
    ids = torch.randint(0, 512, (1, 70))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).logits, theirs(ids).logits, atol=1e-5, rtol=1e-5)


def test_qwen2_window_semantics() -> None:
    """A windowed Qwen2 windows every layer; a full-attention one has no window at all."""
    windowed = hf_config(ModelConfig.preset("tiny", **DENSE, qkv_bias=True, window=16))
    assert windowed.sliding_window == 16 and set(windowed.layer_types) == {"sliding_attention"}
    full = hf_config(ModelConfig.preset("tiny", **DENSE, qkv_bias=True, window=128))
    assert full.sliding_window is None and set(full.layer_types) == {"full_attention"}
