"""``import_hf`` / ``load_hf_as_smallcode``: a Hugging Face directory becomes our model computing its function.

For each family a tiny random model is built with transformers from a config (Llama with Llama 3
RoPE scaling and a short original context, Llama with linear scaling, Llama with attention biases,
Mistral with a window shorter than the test sequence, Qwen2 with tied embeddings and its q/k/v bias,
Mixtral), saved sharded with ``save_pretrained``, imported, and held against transformers itself:
float32 logits on a sequence several Mistral windows long, and 100 greedy tokens (ours through the
KV cache) against ``generate(do_sample=False)``. Then the round trip of our own presets through
``export_hf``, the refusals, and a memory probe of the streaming import in a subprocess.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from export_helpers import make_model  # type: ignore[import-not-found]

from smallcode.export.hf import export_hf, from_hf_state_dict
from smallcode.export.hf_import import (
    HF_DEFAULTS,
    HFImportError,
    hf_model_config,
    import_hf,
    is_importable,
    load_hf_as_smallcode,
)
from smallcode.model import SmallCodeLM
from smallcode.model.checkpoint import Checkpoint, save_checkpoint

transformers = pytest.importorskip("transformers")

COMMON = dict(vocab_size=256, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=160, initializer_range=0.1)
LLAMA3 = {"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0, "low_freq_factor": 1.0,
          "high_freq_factor": 4.0, "original_max_position_embeddings": 16}
FAMILIES: dict[str, tuple[str, dict[str, Any]]] = {  # name: (config class, its options)
    "llama3": ("LlamaConfig", {"rope_parameters": LLAMA3}),
    "llama-linear": ("LlamaConfig", {"rope_parameters": {"rope_type": "linear", "rope_theta": 500.0, "factor": 4.0}}),
    "llama-bias": ("LlamaConfig", {"attention_bias": True}),
    "mistral": ("MistralConfig", {"sliding_window": 8}),
    "qwen2": ("Qwen2Config", {"tie_word_embeddings": True}),
    "mixtral": ("MixtralConfig", {"num_local_experts": 4, "num_experts_per_tok": 2, "sliding_window": None}),
}
T = 45  # several Mistral windows (8), past Llama 3's original context (16)


def _hf_model(name: str) -> torch.nn.Module:
    cls, options = FAMILIES[name]
    torch.manual_seed(sum(map(ord, name)))
    model = transformers.AutoModelForCausalLM.from_config(getattr(transformers, cls)(**COMMON, **options)).eval()
    with torch.no_grad():  # transformers starts biases at zero, which would hide a bias left out
        for key, p in model.named_parameters():
            if key.endswith(".bias"):
                p.normal_(0.0, 0.5)
    return model


@pytest.fixture(scope="module")
def families(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[torch.nn.Module, Path, Path]]:
    """name: (the transformers model, its sharded save_pretrained directory, our import of it)."""
    root = tmp_path_factory.mktemp("families")
    out = {}
    for name in FAMILIES:
        hf = _hf_model(name)
        hf.save_pretrained(root / f"hf-{name}", max_shard_size="100KB")
        assert len(list((root / f"hf-{name}").glob("*.safetensors"))) > 1  # the sharded layout is what is read
        out[name] = (hf, root / f"hf-{name}", import_hf(root / f"hf-{name}", root / name, progress=False))
    return out


@pytest.mark.parametrize("name", FAMILIES)
def test_logits_match_transformers(name: str, families: dict) -> None:
    hf, src, ckpt = families[name]
    ids = torch.randint(0, 256, (2, T))
    with torch.no_grad():
        want = hf(ids).logits
        for ours in (Checkpoint.open(ckpt).load_model().eval(), load_hf_as_smallcode(src)):
            torch.testing.assert_close(ours(ids).logits, want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", FAMILIES)
def test_100_greedy_tokens_match_generate(name: str, families: dict) -> None:
    hf, _, ckpt = families[name]
    prompt = torch.randint(0, 256, (1, 12))
    model = Checkpoint.open(ckpt).load_model().eval()
    cache = model.new_cache(1)
    ours = []
    with torch.no_grad():
        logits = model(prompt, cache, last_only=True).logits
        for _ in range(100):
            ours.append(int(logits[0, -1].argmax()))
            logits = model(torch.tensor([[ours[-1]]]), cache).logits
        hf.generation_config.eos_token_id = None  # 100 tokens whatever they are
        theirs = hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=100, do_sample=False)
    assert theirs[0, 12:].tolist() == ours


@pytest.mark.parametrize("name", FAMILIES)
def test_weights_are_transformers_own_bit_for_bit(name: str, families: dict) -> None:
    hf, _, ckpt = families[name]
    ckpt = Checkpoint.open(ckpt)
    want = from_hf_state_dict(hf.state_dict(), ckpt.config)
    got = ckpt.weights()
    if ckpt.config.tie_embeddings:  # stored once; weights() hands the head out as the embedding
        assert got.pop("lm_head.weight") is got["embed.weight"]
    assert set(got) == set(want)
    for key, value in want.items():
        assert got[key].dtype == value.dtype and torch.equal(got[key], value), key


def test_the_config_says_what_transformers_computes(families: dict) -> None:
    configs = {name: Checkpoint.open(ckpt).config for name, (_, _, ckpt) in families.items()}
    assert configs["mistral"].window == 8 and configs["mistral"].max_seq_len == 160
    for name in ("llama3", "qwen2", "mixtral"):  # full attention: the window is the whole context
        assert configs[name].window == configs[name].max_seq_len == 160 and configs[name].n_global == 0
    assert (configs["llama3"].rope_scaling, configs["llama3"].rope_original_max_len) == ("llama3", 16)
    assert (configs["llama-linear"].rope_scaling, configs["llama-linear"].rope_base) == ("linear", 500.0)
    assert configs["qwen2"].qkv_bias and not configs["qwen2"].out_bias and configs["qwen2"].tie_embeddings
    assert configs["llama-bias"].qkv_bias and configs["llama-bias"].out_bias
    assert (configs["mixtral"].n_experts, configs["mixtral"].top_k) == (4, 2)
    tied = load_hf_as_smallcode(families["qwen2"][1])
    assert tied.lm_head.weight.data_ptr() == tied.embed.weight.data_ptr()
    meta = Checkpoint.open(families["qwen2"][2]).meta
    assert meta["imported_from"]["architecture"] == "Qwen2ForCausalLM" and "tokenizer_kind" not in meta


def test_transformers_4_config_layout_reads_the_same() -> None:
    """transformers 4.x wrote ``rope_theta`` beside ``rope_scaling`` (older files: ``type``), 5.x
    ``rope_parameters``."""
    v5 = transformers.LlamaConfig(**COMMON, rope_parameters=LLAMA3).to_dict()
    v4 = {k: v for k, v in v5.items() if k != "rope_parameters"}
    scaling = {k: v for k, v in LLAMA3.items() if k not in ("rope_theta", "rope_type")}
    for kind in ("rope_type", "type"):
        old = {**v4, "rope_theta": 10000.0, "rope_scaling": {kind: "llama3", **scaling}}
        assert hf_model_config(old) == hf_model_config(v5)
    assert hf_model_config({**v4, "rope_theta": 123.0, "rope_scaling": None}).rope_base == 123.0


@pytest.mark.parametrize("arch", list(HF_DEFAULTS))
def test_defaults_are_transformers_own(arch: str) -> None:
    cls = getattr(transformers, arch.replace("ForCausalLM", "Config"))
    fields = {f.name: f.default for f in __import__("dataclasses").fields(cls)}
    for key, value in HF_DEFAULTS[arch].items():
        assert (cls.default_theta if key == "rope_theta" else fields[key]) == value, (arch, key)


def test_mixtral_fused_experts_read_the_same(families: dict, tmp_path: Path) -> None:
    """transformers 5 holds Mixtral's experts fused in memory (``mlp.experts.gate_up_proj``); a file with that
    layout imports to the same weights as the per-expert layout ``save_pretrained`` writes."""
    from safetensors.torch import save_file

    hf, src, ckpt = families["mixtral"]
    on_disk = json.loads((src / "model.safetensors.index.json").read_text())["weight_map"]
    assert "model.layers.0.block_sparse_moe.experts.3.w1.weight" in on_disk  # what save_pretrained writes
    state = hf.state_dict()
    assert "model.layers.0.mlp.experts.gate_up_proj" in state
    fused = tmp_path / "fused"
    fused.mkdir()
    shutil.copyfile(src / "config.json", fused / "config.json")
    save_file({k: v.contiguous() for k, v in state.items()}, fused / "model.safetensors")
    got = Checkpoint.open(import_hf(fused, tmp_path / "out", progress=False)).weights()
    want = Checkpoint.open(ckpt).weights()
    assert all(torch.equal(got[k], want[k]) for k in want)


DENSE = {"n_global": 0, "n_experts": 1, "top_k": 1}
ROUND_TRIPS = {  # name: (ModelConfig overrides of the tiny preset, the class export_hf writes)
    "moe": ({"n_global": 0}, "MixtralForCausalLM"),
    "dense": (DENSE, "MistralForCausalLM"),
    "dense-llama3-rope": ({**DENSE, "rope_scaling": "llama3", "rope_factor": 8.0, "rope_original_max_len": 16},
                          "MistralForCausalLM"),
    "qkv-bias-window": ({**DENSE, "qkv_bias": True}, "Qwen2ForCausalLM"),
    "attention-bias-full": ({**DENSE, "qkv_bias": True, "out_bias": True, "max_seq_len": 16}, "LlamaForCausalLM"),
    # written as a Llama with zero q/k/v biases; those are no bias, and the import leaves them out
    "out-bias-only": ({**DENSE, "out_bias": True, "max_seq_len": 16}, "LlamaForCausalLM"),
}


@pytest.mark.parametrize("name", ROUND_TRIPS)
def test_round_trip_of_our_presets(name: str, tmp_path: Path, tiny_tokenizer_dir: Path) -> None:
    overrides, arch = ROUND_TRIPS[name]
    model = make_model(**overrides)
    with torch.no_grad():  # biases start at zero; random ones show they travel
        for key, p in model.named_parameters():
            if key.endswith(".bias"):
                p.normal_(0.0, 0.5)
    ckpt = save_checkpoint(model, tmp_path / "ours", tokenizer_file=tiny_tokenizer_dir / "tokenizer.json")
    exported = export_hf(ckpt, tmp_path / "hf")
    back = Checkpoint.open(import_hf(exported, tmp_path / "back", progress=False))
    assert back.config == model.config
    weights, original = back.weights(), Checkpoint.open(ckpt).weights()
    assert set(weights) == set(original) and all(torch.equal(weights[k], original[k]) for k in original)
    ids = torch.randint(0, 512, (2, 40))
    with torch.no_grad():
        torch.testing.assert_close(back.load_model().eval()(ids).logits, model(ids).logits, atol=0, rtol=0)
    # the tokenizer files come along unchanged, and the checkpoint says whose they are
    for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        assert (back.directory / name).read_bytes() == (exported / name).read_bytes(), name
    assert back.extra["tokenizer_kind"] == "huggingface"
    assert back.extra["imported_from"]["architecture"] == arch
    assert back.extra["imported_from"]["source"] == str(exported.resolve())
    import hashlib

    assert back.extra["imported_from"]["config_sha256"] == hashlib.sha256(
        (exported / "config.json").read_bytes()).hexdigest()


def test_dtype_is_kept_unless_asked(families: dict, tmp_path: Path) -> None:
    from safetensors import safe_open

    hf, _, _ = families["qwen2"]
    src = tmp_path / "bf16"
    hf.to(torch.bfloat16).save_pretrained(src)
    hf.to(torch.float32)
    for dtype, want in ((None, "BF16"), (torch.float32, "F32"), (torch.float16, "F16")):
        out = import_hf(src, tmp_path / str(dtype), dtype=dtype, progress=False)
        with safe_open(out / "model.safetensors", "pt") as f:
            assert {f.get_slice(k).get_dtype() for k in f.keys()} == {want}
            assert f.metadata() == {"format_version": "1"}
    # loaded as stored, it computes what the import loaded in that dtype computes
    bf16, ids = load_hf_as_smallcode(src), torch.randint(0, 256, (1, 20))
    assert bf16.embed.weight.dtype == torch.bfloat16
    loaded = Checkpoint.open(tmp_path / "None").load_model(dtype=torch.bfloat16)
    with torch.no_grad():
        assert torch.equal(bf16(ids).logits, loaded(ids).logits)
    assert load_hf_as_smallcode(src, dtype=torch.float32).embed.weight.dtype == torch.float32


# ---- refusals ------------------------------------------------------------------------------------------
def _llama(**changes: Any) -> dict[str, Any]:
    return {**transformers.LlamaConfig(**COMMON).to_dict(), "architectures": ["LlamaForCausalLM"], **changes}


@pytest.mark.parametrize("config, problem", [
    ({**transformers.Starcoder2Config(**COMMON).to_dict(), "architectures": ["Starcoder2ForCausalLM"]},
     "Starcoder2ForCausalLM is not supported: its blocks use LayerNorm with biases and a non-gated GELU MLP"),
    (_llama(architectures=["GPT2LMHeadModel"]), "GPT2LMHeadModel is not supported (supported: LlamaForCausalLM, "
                                                "MistralForCausalLM, MixtralForCausalLM, Qwen2ForCausalLM)"),
    (_llama(quantization_config={"quant_method": "gptq", "bits": 4}),
     "a quantised checkpoint (quantization_config: gptq)"),
    (_llama(quantization_config={"quant_method": "awq"}), "quantization_config: awq"),
    (_llama(rope_parameters={"rope_type": "yarn", "rope_theta": 1e4, "factor": 4.0}),
     "rope type 'yarn' is not supported"),
    (_llama(rope_parameters={"rope_type": "dynamic", "rope_theta": 1e4, "factor": 2.0}), "rope type 'dynamic'"),
    (_llama(rope_parameters=None, rope_scaling={"type": "longrope", "long_factor": [1.0]}), "rope type 'longrope'"),
    (_llama(rope_parameters={"rope_type": "llama3", "rope_theta": 1e4, "factor": 8.0}),
     "llama3 rope scaling without low_freq_factor, high_freq_factor, original_max_position_embeddings"),
    (_llama(hidden_act="gelu"), "hidden_act 'gelu' is not supported"),
    (_llama(mlp_bias=True), "LlamaForCausalLM: mlp_bias is not supported"),
    ({**transformers.Qwen2Config(**COMMON, use_sliding_window=True, sliding_window=8, max_window_layers=1).to_dict(),
      "architectures": ["Qwen2ForCausalLM"]}, "use_sliding_window with 1 of 2 layers windowed is not supported"),
    ({"model_type": "gpt_neox"}, "model_type 'gpt_neox' is not supported"),
])
def test_unsupported_configs_are_refused_by_name(config: dict, problem: str) -> None:
    with pytest.raises(HFImportError) as e:
        hf_model_config(config)
    assert problem in str(e.value) and "\n" not in str(e.value)


def test_qwen2_windows_only_when_every_layer_does() -> None:
    def window(**options: Any) -> int:
        cfg = transformers.Qwen2Config(**COMMON, **options).to_dict()
        return hf_model_config({**cfg, "architectures": ["Qwen2ForCausalLM"]}).window

    assert window(use_sliding_window=False, sliding_window=8) == 160  # Qwen2.5 ships this: full attention
    assert window(use_sliding_window=True, sliding_window=8, max_window_layers=0) == 8
    assert window(use_sliding_window=True, sliding_window=8, max_window_layers=2) == 160


def _copy(families: dict, name: str, tmp_path: Path) -> Path:
    return Path(shutil.copytree(families[name][1], tmp_path / f"bad-{name}"))


def _shards(src: Path) -> list[Path]:
    return sorted(src.glob("model-*.safetensors"))


def _truncate(src: Path) -> None:
    shard = _shards(src)[1]
    shard.write_bytes(shard.read_bytes()[:-64])


def _pickle_only(src: Path) -> None:
    for f in [*src.glob("*.safetensors"), src / "model.safetensors.index.json"]:
        f.unlink()
    (src / "pytorch_model.bin").write_bytes(b"not unpickled")


def _wrong_tokenizer(src: Path, tokenizer_dir: Path) -> None:
    shutil.copyfile(tokenizer_dir / "tokenizer.json", src / "tokenizer.json")  # 400 ids for 256 rows


def _biases_the_config_denies(src: Path) -> None:
    config = json.loads((src / "config.json").read_text())
    (src / "config.json").write_text(json.dumps({**config, "attention_bias": False}))


def _int8_weights(src: Path) -> None:
    from safetensors.torch import load_file, save_file

    shard = _shards(src)[0]
    state = load_file(shard)
    key = next(iter(state))
    save_file({**state, key: state[key].to(torch.int8)}, shard)


@pytest.mark.parametrize("name, damage, problem", [
    ("mistral", lambda src, _: _shards(src)[1].unlink(), "shard {shard1} is missing"),
    ("mistral", lambda src, _: _truncate(src), "{shard1}: unreadable, truncated or corrupt safetensors file"),
    ("mistral", lambda src, _: _pickle_only(src), "only PyTorch pickle weights (pytorch_model.bin)"),
    ("mistral", _wrong_tokenizer, "tokenizer has 400 token ids but the model's embedding only 256 rows"),
    ("llama-bias", lambda src, _: _biases_the_config_denies(src),
     "tensors a LlamaForCausalLM with this config.json does not have: ['model.layers.0.self_attn.k_proj.bias'"),
    ("mistral", lambda src, _: _int8_weights(src), "is stored as I8 (a quantised or non-float checkpoint)"),
    ("mistral", lambda src, _: (src / "config.json").write_text("{\"model_type\": "), "config.json: not valid JSON"),
])
def test_bad_directories_are_refused_by_name_and_leave_nothing(name: str, damage: Any, problem: str, families: dict,
                                                               tmp_path: Path, tiny_tokenizer_dir: Path) -> None:
    src = _copy(families, name, tmp_path)
    shard1 = _shards(src)[1].name
    damage(src, tiny_tokenizer_dir)
    for call in (lambda: import_hf(src, tmp_path / "out", progress=False), lambda: load_hf_as_smallcode(src)):
        with pytest.raises(HFImportError) as e:
            call()
        assert problem.format(shard1=shard1) in str(e.value) and "\n" not in str(e.value), str(e.value)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))


def test_a_padded_embedding_is_fine(families: dict, tmp_path: Path, tiny_tokenizer_dir: Path) -> None:
    """Qwen's embedding has more rows than its tokenizer has ids; only the reverse is refused."""
    ckpt = save_checkpoint(make_model(n_global=0, n_experts=1, top_k=1, vocab_size=600), tmp_path / "ours",
                           tokenizer_file=tiny_tokenizer_dir / "tokenizer.json")
    back = import_hf(export_hf(ckpt, tmp_path / "hf"), tmp_path / "back", progress=False)
    assert Checkpoint.open(back).config.vocab_size == 600


def test_an_existing_directory_is_kept_unless_forced(families: dict, tmp_path: Path) -> None:
    src = families["mistral"][1]
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep").write_text("mine")
    with pytest.raises(HFImportError, match="exists and is not empty .use --force"):
        import_hf(src, out, progress=False)
    assert (out / "keep").read_text() == "mine"
    import_hf(src, out, force=True, progress=False)
    assert not (out / "keep").exists() and Checkpoint.is_checkpoint(out)
    with pytest.raises(HFImportError, match="is the source directory itself"):
        import_hf(src, src, force=True, progress=False)


def test_is_importable(families: dict, tmp_path: Path) -> None:
    assert all(is_importable(src) for _, src, _ in families.values())
    assert not is_importable(families["qwen2"][2])  # our own checkpoint
    assert not is_importable(tmp_path / "missing")
    star = tmp_path / "star"
    star.mkdir()
    (star / "config.json").write_text(json.dumps(transformers.Starcoder2Config(**COMMON).to_dict()))
    (star / "model.safetensors").write_bytes(b"")
    assert not is_importable(star)
    bin_only = _copy(families, "mistral", tmp_path)
    _pickle_only(bin_only)
    assert not is_importable(bin_only)  # transformers can load it; we would not


# ---- memory --------------------------------------------------------------------------------------------
PROBE = """
import json, sys
import tokenizers, tqdm  # what the import loads on first use, loaded before the first reading
import smallcode.model.transformer
from smallcode.export.hf_import import import_hf, load_hf_as_smallcode

def hwm():
    return next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmHWM"))

before = hwm()
import_hf(sys.argv[1], sys.argv[2], progress=False)
imported = hwm()
model = load_hf_as_smallcode(sys.argv[1])
print(json.dumps({"before": before, "import": imported, "load": hwm()}))
"""


def test_import_streams_within_a_fraction_of_the_model(tmp_path: Path) -> None:
    """A ~170 MB sharded float32 Llama: the import's peak grows by a fraction of the model (one tensor
    at a time; safetensors' own save_file would need twice the model), loading it by the model."""
    from safetensors.torch import save_file

    # no tensor over 5% of the model (the largest, the embedding, 8 MB), so a bound of a quarter sees
    # whether the import holds one tensor or the model
    cfg = transformers.LlamaConfig(vocab_size=2048, hidden_size=1024, intermediate_size=1792, num_hidden_layers=4,
                                   num_attention_heads=8, num_key_value_heads=8, max_position_embeddings=64)
    src = tmp_path / "src"
    src.mkdir()
    (src / "config.json").write_text(json.dumps({**cfg.to_dict(), "architectures": ["LlamaForCausalLM"]}))
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in transformers.LlamaForCausalLM(cfg).state_dict().items()}
    gen = torch.Generator().manual_seed(0)
    weight_map, shard, n = {}, {}, 0
    for i, (key, shape) in enumerate(shapes.items()):
        shard[key] = torch.randn(shape, generator=gen)
        if sum(t.numel() for t in shard.values()) * 4 > 40e6 or i == len(shapes) - 1:
            n += 1
            save_file(shard, src / f"model-{n:05d}.safetensors")
            weight_map |= {k: f"model-{n:05d}.safetensors" for k in shard}
            shard = {}
    (src / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    size = sum(f.stat().st_size for f in src.glob("*.safetensors"))
    assert n >= 4 and size > 150e6
    proc = subprocess.run([sys.executable, "-c", PROBE, str(src), str(tmp_path / "out")], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    peak = json.loads(proc.stdout)
    grown_import, grown_load = peak["import"] - peak["before"], peak["load"] - peak["before"]
    print(f"model {size / 1e6:.0f} MB: import peak +{grown_import / 1e6:.0f} MB, load peak +{grown_load / 1e6:.0f} MB")
    assert grown_import < 0.25 * size
    assert grown_load < 1.3 * size  # the model itself, one source tensor and the allocator's slack
    with torch.no_grad():
        out = Checkpoint.open(tmp_path / "out").weights()
        from safetensors import safe_open

        key = "model.layers.2.mlp.down_proj.weight"
        with safe_open(src / weight_map[key], "pt") as f:
            assert torch.equal(out["blocks.2.ffn.experts.w_down"][0], f.get_tensor(key))


def test_the_model_holds_nothing_it_was_not_given(families: dict) -> None:
    """Built on the meta device and filled: every parameter of the loaded model came from the directory."""
    hf, src, _ = families["llama-bias"]
    model = load_hf_as_smallcode(src)
    assert isinstance(model, SmallCodeLM) and not model.training
    want = from_hf_state_dict(hf.state_dict(), model.config)
    for key, p in model.state_dict().items():
        assert torch.equal(p, want[key]), key


def test_an_imported_model_exports_back_with_its_own_tokenizer(tmp_path: Path) -> None:
    """import hf, then export hf: transformers loads the export as the model it came from, with the
    tokenizer files it came with (a foreign tokenizer is not rewritten as ours)."""
    from hf_tokenizers import family_tokenizer  # type: ignore[import-not-found]

    tokenizer = family_tokenizer("qwen2.5-coder")
    torch.manual_seed(0)
    config = transformers.Qwen2Config(**{**COMMON, "vocab_size": len(tokenizer)}, tie_word_embeddings=True)
    hf = transformers.AutoModelForCausalLM.from_config(config).eval()
    hf.generation_config.eos_token_id = tokenizer.eos_token_id
    hf.save_pretrained(tmp_path / "src")
    tokenizer.save_pretrained(tmp_path / "src")
    export_hf(import_hf(tmp_path / "src", tmp_path / "ours", progress=False), tmp_path / "back")
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        assert (tmp_path / "back" / name).read_bytes() == (tmp_path / "src" / name).read_bytes(), name
    text = "def f(x):\n    return x + 1\n<|fim_prefix|>"
    back_tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "back")
    src_tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "src")
    assert back_tok(text)["input_ids"] == src_tok(text)["input_ids"]
    back = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "back", dtype=torch.float32).eval()
    ids = torch.tensor([back_tok(text)["input_ids"]])
    with torch.no_grad():
        torch.testing.assert_close(back(ids).logits, hf(ids).logits, atol=1e-5, rtol=0)
    assert tokenizer.eos_token_id in json.loads((tmp_path / "back" / "config.json").read_text())["eos_token_id"]
