"""Hugging Face causal-LM directories as smallcode models: ``smallcode import hf`` and ``serve --model HF_DIR``.

A Llama, Mistral, Qwen2 (Qwen2.5) or Mixtral directory is the same function as a ``SmallCodeLM``
with ``n_global = 0``: the same pre-norm blocks (RMSNorm, grouped-query attention with rotate-half
RoPE, SwiGLU feed-forward or Mixtral's top-k softmax-renormalised experts), the same weights under
other names. ``hf_model_config`` turns its ``config.json`` (transformers 4.x ``rope_theta`` /
``rope_scaling`` or 5.x ``rope_parameters``) into a ``ModelConfig``: a sliding window becomes
``window``, a full-attention model gets ``window = max_seq_len = max_position_embeddings``; Llama 3
and linear RoPE scaling, Qwen2's q/k/v bias, Llama's ``attention_bias`` and tied embeddings are
``ModelConfig`` options. Whatever these models cannot express is refused in one line naming the
architecture and what is missing: StarCoder2 (LayerNorm with biases, a plain GELU MLP), any other
architecture, quantised weights, other RoPE scalings, activations other than SiLU, MLP biases,
Qwen2 with windowed and full-attention layers mixed.

The weights are streamed: each of our tensors is the concatenation, along the first axis, of one or
more of theirs (``q|k|v`` rows, ``gate|up`` rows, Mixtral's experts one after the other), so it is
written (``import_hf``) or copied into the model (``load_hf_as_smallcode``) one source tensor at a
time, each read from its shard through its own ``safe_open`` (the shard's memory map goes when the
tensor is done). Peak memory is a few tensors for an import and the model itself for a load.
The key names come from ``smallcode.export.hf._key_map`` (the map the export uses); Mixtral's
experts are read as transformers 5 writes them and real checkpoints have them
(``block_sparse_moe.experts.N.w1/w2/w3``) or fused (``mlp.experts.gate_up_proj``/``down_proj``).

An import is a checkpoint (``Checkpoint.open(out).load_model()``) plus the model's own tokenizer
files, copied unchanged, and two fields in its ``config.json``: ``"tokenizer_kind": "huggingface"``
and ``"imported_from"`` (architecture, source directory, sha256 of the source ``config.json``).
"""

from __future__ import annotations

import json
import math
import shutil
import struct
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError, safe_open

from smallcode.config import ConfigError
from smallcode.errors import UserError
from smallcode.export.hf import _key_map
from smallcode.fileio import atomic_dir, sha256_file
from smallcode.model.checkpoint import CONFIG_FILE, FORMAT_VERSION, WEIGHTS_FILE, copy_hf_tokenizer_files
from smallcode.model.config import ModelConfig
from smallcode.tokenizer.code_tokenizer import TOKENIZER_FILE

if TYPE_CHECKING:
    from smallcode.model.transformer import SmallCodeLM

__all__ = ["SUPPORTED", "HFImportError", "hf_model_config", "import_hf", "is_importable",
           "load_hf_as_smallcode"]

SUPPORTED = ("LlamaForCausalLM", "MistralForCausalLM", "MixtralForCausalLM", "Qwen2ForCausalLM")
"""The transformers classes an import understands (``architectures[0]`` of ``config.json``)."""
_MODEL_TYPES = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "mixtral": "MixtralForCausalLM",
                "qwen2": "Qwen2ForCausalLM"}

HF_DEFAULTS: dict[str, dict[str, Any]] = {
    "LlamaForCausalLM": {"num_key_value_heads": None, "hidden_act": "silu", "max_position_embeddings": 2048,
                         "rms_norm_eps": 1e-6, "tie_word_embeddings": False, "rope_theta": 10000.0,
                         "attention_bias": False, "mlp_bias": False},
    "MistralForCausalLM": {"num_key_value_heads": 8, "hidden_act": "silu", "max_position_embeddings": 4096 * 32,
                           "rms_norm_eps": 1e-6, "tie_word_embeddings": False, "rope_theta": 10000.0,
                           "sliding_window": 4096},
    "MixtralForCausalLM": {"num_key_value_heads": 8, "hidden_act": "silu", "max_position_embeddings": 4096 * 32,
                           "rms_norm_eps": 1e-5, "tie_word_embeddings": False, "rope_theta": 1e6,
                           "sliding_window": None, "num_local_experts": 8, "num_experts_per_tok": 2,
                           "router_aux_loss_coef": 0.001},
    "Qwen2ForCausalLM": {"num_key_value_heads": 32, "hidden_act": "silu", "max_position_embeddings": 32768,
                         "rms_norm_eps": 1e-6, "tie_word_embeddings": False, "rope_theta": 10000.0,
                         "use_sliding_window": False, "sliding_window": 4096, "max_window_layers": 28},
}
"""What transformers (5.25) assumes for a field a ``config.json`` leaves out, per class (a test holds
them against transformers' own config classes)."""

INDEX_FILE = "model.safetensors.index.json"
SOURCE_WEIGHTS = "model.safetensors"
_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}
_DTYPE_NAMES = {v: k for k, v in _DTYPES.items()}


class HFImportError(UserError, ValueError):
    """A Hugging Face directory that cannot be imported; the message names the problem (one line)."""


# ---- config.json -> ModelConfig ----------------------------------------------------------------------
def _architecture(hf_config: dict[str, Any]) -> str:
    archs = hf_config.get("architectures")
    if isinstance(archs, list) and archs and isinstance(archs[0], str):
        return archs[0]
    model_type = hf_config.get("model_type")
    return _MODEL_TYPES.get(model_type, f"model_type {model_type!r}") if isinstance(model_type, str) \
        else "an unnamed architecture (no architectures or model_type)"


def _refuse_architecture(arch: str) -> None:
    supported = ", ".join(SUPPORTED)
    if arch == "Starcoder2ForCausalLM":
        raise HFImportError(f"{arch} is not supported: its blocks use LayerNorm with biases and a non-gated GELU "
                            f"MLP, smallcode's are RMSNorm + SwiGLU (supported: {supported})")
    raise HFImportError(f"{arch} is not supported (supported: {supported})")


def _rope(hf_config: dict[str, Any], arch: str, get: Any) -> dict[str, Any]:
    """The ModelConfig RoPE fields from transformers 5's ``rope_parameters`` or 4.x's ``rope_theta`` +
    ``rope_scaling`` (whose kind was ``type`` in older files)."""
    params = hf_config.get("rope_parameters")
    if params is None:
        params = hf_config.get("rope_scaling") or {}
    if not isinstance(params, dict):
        raise HFImportError(f"{arch}: rope_parameters/rope_scaling is a {type(params).__name__}, not a mapping")
    if any(isinstance(v, dict) for v in params.values()):
        raise HFImportError(f"{arch}: RoPE parameters per layer type ({sorted(params)}) are not supported "
                            "(smallcode's layers share one RoPE)")
    theta = params.get("rope_theta", get("rope_theta"))
    kind = params.get("rope_type", params.get("type", "default"))
    partial = params.get("partial_rotary_factor", hf_config.get("partial_rotary_factor", 1.0))
    if partial != 1.0:
        raise HFImportError(f"{arch}: partial_rotary_factor {partial} is not supported (smallcode rotates "
                            "the whole head)")
    fields: dict[str, Any] = {"rope_base": float(theta)}
    if kind in ("default", None):
        return fields
    if kind not in ("linear", "llama3"):
        raise HFImportError(f"{arch}: rope type {kind!r} is not supported (smallcode's RoPE does default, "
                            "linear and llama3 scaling)")
    needed = ["factor"] + (["low_freq_factor", "high_freq_factor", "original_max_position_embeddings"]
                           if kind == "llama3" else [])
    missing = [k for k in needed if params.get(k) is None]
    if missing:
        raise HFImportError(f"{arch}: {kind} rope scaling without {', '.join(missing)}")
    fields |= {"rope_scaling": kind, "rope_factor": float(params["factor"])}
    if kind == "llama3":
        fields |= {"rope_low_freq_factor": float(params["low_freq_factor"]),
                   "rope_high_freq_factor": float(params["high_freq_factor"]),
                   "rope_original_max_len": int(params["original_max_position_embeddings"])}
    return fields


def _window(hf_config: dict[str, Any], arch: str, get: Any, n_layers: int, max_len: int) -> int:
    """The attention window: a sliding window where every layer has it, else the whole context."""
    if arch == "LlamaForCausalLM":
        return max_len
    if arch == "Qwen2ForCausalLM":
        window = get("sliding_window") if get("use_sliding_window") else None
        if window is None:
            return max_len
        # transformers windows the layers from max_window_layers on, unless config.json lists them
        types = hf_config.get("layer_types") or [
            "sliding_attention" if i >= get("max_window_layers") else "full_attention" for i in range(n_layers)]
        windowed = sum(t == "sliding_attention" for t in types)
        if windowed == 0:
            return max_len
        if windowed != len(types):
            raise HFImportError(f"{arch}: use_sliding_window with {windowed} of {len(types)} layers windowed "
                                "is not supported (smallcode's layers share one window; every layer or none)")
        return int(window)
    window = get("sliding_window")
    return max_len if window is None else int(window)


def hf_model_config(hf_config: dict[str, Any]) -> ModelConfig:
    """The ``ModelConfig`` computing the function of a Hugging Face ``config.json`` (parsed); refuses an
    architecture or option smallcode cannot express with an :class:`HFImportError` naming it."""
    if not isinstance(hf_config, dict):
        raise HFImportError(f"config.json holds a JSON {type(hf_config).__name__}, not an object")
    arch = _architecture(hf_config)
    quant = hf_config.get("quantization_config")
    if quant is not None:
        method = quant.get("quant_method", "unknown method") if isinstance(quant, dict) else quant
        raise HFImportError(f"{arch}: a quantised checkpoint (quantization_config: {method}); import takes "
                            "float weights (float32, float16, bfloat16): import the unquantised model")
    if arch not in SUPPORTED:
        _refuse_architecture(arch)
    defaults = HF_DEFAULTS[arch]

    def get(key: str) -> Any:
        return hf_config[key] if key in hf_config else defaults.get(key)

    required = ["vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads"]
    missing = [k for k in required if not isinstance(hf_config.get(k), int)]
    if missing:
        raise HFImportError(f"{arch}: config.json has no integer {', '.join(missing)}")
    act = get("hidden_act")
    if act not in ("silu", "swish"):
        raise HFImportError(f"{arch}: hidden_act {act!r} is not supported (smallcode's feed-forward is SwiGLU, "
                            "SiLU-gated)")
    if arch == "LlamaForCausalLM" and get("mlp_bias"):
        raise HFImportError(f"{arch}: mlp_bias is not supported (smallcode's feed-forward has no biases)")
    d, n_heads, n_layers = hf_config["hidden_size"], hf_config["num_attention_heads"], hf_config["num_hidden_layers"]
    head_dim = hf_config.get("head_dim")
    if head_dim is not None and d % n_heads == 0 and head_dim == d // n_heads:
        head_dim = None  # the default width, as our configs write it
    max_len = int(get("max_position_embeddings"))
    fields: dict[str, Any] = dict(
        vocab_size=hf_config["vocab_size"], d_model=d, n_layers=n_layers, n_heads=n_heads,
        n_kv_heads=get("num_key_value_heads") or n_heads, head_dim=head_dim,
        d_ff=hf_config["intermediate_size"], n_experts=1, top_k=1, n_global=0,
        window=_window(hf_config, arch, get, n_layers, max_len), max_seq_len=max_len,
        norm_eps=float(get("rms_norm_eps")), tie_embeddings=bool(get("tie_word_embeddings")),
        **_rope(hf_config, arch, get),
    )
    if isinstance(hf_config.get("initializer_range"), float):
        fields["init_std"] = hf_config["initializer_range"]
    if arch == "MixtralForCausalLM":
        fields |= {"n_experts": get("num_local_experts"), "top_k": get("num_experts_per_tok"),
                   "balance_loss_coef": float(get("router_aux_loss_coef"))}
    if arch == "Qwen2ForCausalLM":
        fields["qkv_bias"] = True  # Qwen2's q/k/v projections always have one, its output projection none
    if arch == "LlamaForCausalLM" and get("attention_bias"):
        fields |= {"qkv_bias": True, "out_bias": True}
    try:
        return ModelConfig(**fields)
    except ConfigError as e:
        raise HFImportError(f"{arch}: {e}") from e


# ---- the source directory ----------------------------------------------------------------------------
@dataclass(frozen=True)
class _Stored:
    """Where one source tensor lives and what it is."""

    file: Path
    dtype: str
    """safetensors' name (``F32``, ``BF16``, ...)."""
    shape: tuple[int, ...]


def _read_config(src: Path) -> dict[str, Any]:
    if not src.is_dir():
        raise HFImportError(f"{src}: not a directory (import takes a Hugging Face model directory)")
    path = src / CONFIG_FILE
    if not path.is_file():
        raise HFImportError(f"{path}: missing (a Hugging Face model directory has config.json)")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise HFImportError(f"{path}: not valid JSON ({e})") from e


def _stored_tensors(src: Path) -> dict[str, _Stored]:
    """Every tensor of the directory's safetensors weights (sharded or not), from the file headers only."""
    index = src / INDEX_FILE
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
            raise HFImportError(f"{index}: not a safetensors index (no weight_map: {e})") from e
        shards = sorted(set(weight_map.values()))
        absent = [s for s in shards if not (src / s).is_file()]
        if absent:
            raise HFImportError(f"{src}: shard {absent[0]} is missing ({len(absent)} of the {len(shards)} shards "
                                f"{INDEX_FILE} names are absent)")
    elif (src / SOURCE_WEIGHTS).is_file():
        weight_map, shards = None, [SOURCE_WEIGHTS]
    elif (src / "pytorch_model.bin").is_file() or (src / "pytorch_model.bin.index.json").is_file():
        raise HFImportError(f"{src}: only PyTorch pickle weights (pytorch_model.bin), which smallcode does not "
                            "unpickle; convert them to safetensors first (transformers: load the model and "
                            "save_pretrained it)")
    else:
        raise HFImportError(f"{src}: no {SOURCE_WEIGHTS} or {INDEX_FILE} (import takes safetensors weights)")
    stored: dict[str, _Stored] = {}
    for shard in shards:
        path = src / shard
        try:
            with safe_open(path, "pt") as f:
                for key in f.keys():
                    part = f.get_slice(key)
                    stored[key] = _Stored(path, part.get_dtype(), tuple(part.get_shape()))
        except (SafetensorError, OSError) as e:
            raise HFImportError(f"{path}: unreadable, truncated or corrupt safetensors file ({e})") from e
    for key, shard in (weight_map or {}).items():
        if key not in stored or stored[key].file.name != Path(shard).name:
            raise HFImportError(f"{src / shard}: does not hold {key!r}, which {INDEX_FILE} places there")
    return stored


def _tokenizer_size(path: Path) -> int:
    """One more than the largest token id of a ``tokenizer.json`` (added tokens included)."""
    from tokenizers import Tokenizer

    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as e:  # tokenizers raises a bare Exception for a malformed file; named here
        raise HFImportError(f"{path}: not a readable tokenizer.json ({e})") from e
    vocab = tokenizer.get_vocab(with_added_tokens=True)
    return max(vocab.values()) + 1 if vocab else 0


def _check_tokenizer(src: Path, config: ModelConfig) -> None:
    path = src / TOKENIZER_FILE
    if path.is_file():
        size = _tokenizer_size(path)
        if size > config.vocab_size:
            raise HFImportError(f"{path}: the tokenizer has {size} token ids but the model's embedding only "
                                f"{config.vocab_size} rows (vocab_size): the tokenizer does not belong to "
                                "these weights")


# ---- the weight plan: each of our tensors from theirs -------------------------------------------------
@dataclass(frozen=True)
class _Planned:
    name: str
    shape: tuple[int, ...]
    sources: tuple[tuple[str, tuple[int, ...]], ...]
    """(their key, the shape it must have), concatenated along the first axis in this order."""


def _plan(config: ModelConfig, arch: str, stored: dict[str, _Stored], src: Path,
          zeros: frozenset[str] = frozenset()) -> list[_Planned]:
    """Our tensors (as the checkpoint stores them: a tied head only once) and their sources, checked
    against what the directory holds; anything of theirs left over but ``zeros`` (biases found to be
    all zero, which are no bias) is refused by name."""
    from smallcode.model.transformer import SmallCodeLM

    with torch.device("meta"):
        ours = {k: tuple(v.shape) for k, v in SmallCodeLM(config).state_dict().items()}
    if config.tie_embeddings:
        ours.pop("lm_head.weight")
    H, K, D, F, E = config.n_heads * config.hd, config.n_kv_heads * config.hd, config.d_model, config.d_ff, \
        config.n_experts
    sources: dict[str, list[tuple[str, tuple[int, ...]]]] = {o: [(t, ours[o])] for o, t in _key_map(config)}
    for i in range(config.n_layers):
        o, t = f"blocks.{i}.", f"model.layers.{i}."
        qkv = list(zip("qkv", (H, K, K), strict=True))
        sources[o + "attn.wqkv.weight"] = [(t + f"self_attn.{p}_proj.weight", (n, D)) for p, n in qkv]
        if config.qkv_bias:
            sources[o + "attn.wqkv.bias"] = [(t + f"self_attn.{p}_proj.bias", (n,)) for p, n in qkv]
        if not config.is_moe:
            sources[o + "ffn.experts.w_gate_up"] = [(t + "mlp.gate_proj.weight", (F, D)),
                                                    (t + "mlp.up_proj.weight", (F, D))]
            sources[o + "ffn.experts.w_down"] = [(t + "mlp.down_proj.weight", (D, F))]
            continue
        # Mixtral as its checkpoints (and transformers 5's save_pretrained) store it, unless fused
        moe = t + "block_sparse_moe."
        if t + "mlp.gate.weight" not in stored:
            sources[o + "ffn.router.weight"] = [(moe + "gate.weight", (E, D))]
        if t + "mlp.experts.gate_up_proj" not in stored:
            sources[o + "ffn.experts.w_gate_up"] = [(f"{moe}experts.{e}.{w}.weight", (F, D))
                                                    for e in range(E) for w in ("w1", "w3")]
            sources[o + "ffn.experts.w_down"] = [(f"{moe}experts.{e}.w2.weight", (D, F)) for e in range(E)]
    if set(sources) != set(ours):  # the map and the model disagree: a bug here, not the user's
        raise RuntimeError(f"weight plan does not cover the model: {sorted(set(ours) ^ set(sources))[:5]}")
    plan = []
    for name, shape in ours.items():
        for key, want in sources[name]:
            if key not in stored:
                raise HFImportError(f"{src}: no tensor {key!r} (a {arch} with this config.json has it)")
            if stored[key].shape != want:
                raise HFImportError(f"{stored[key].file}: tensor {key!r} has shape {stored[key].shape}, a {arch} "
                                    f"with this config.json needs {want}")
            if stored[key].dtype not in _DTYPES:
                raise HFImportError(f"{stored[key].file}: tensor {key!r} is stored as {stored[key].dtype} (a quantised "
                                    "or non-float checkpoint); import takes float32, float16 or bfloat16 weights")
        if sum(math.prod(w) for _, w in sources[name]) != math.prod(shape):
            raise RuntimeError(f"weight plan for {name}: sources do not make up {shape}")
        plan.append(_Planned(name, shape, tuple(sources[name])))
    used = {key for p in plan for key, _ in p.sources}
    ignored = {k for k in stored if k.endswith(".rotary_emb.inv_freq")}  # older checkpoints saved RoPE tables
    if config.tie_embeddings:
        ignored.add("lm_head.weight")
    extra = sorted(set(stored) - used - ignored - zeros)
    if extra:
        more = f" and {len(extra) - 3} more" if len(extra) > 3 else ""
        raise HFImportError(f"{src}: tensors a {arch} with this config.json does not have: {extra[:3]}{more} "
                            "(smallcode cannot place them: biases or a layout it does not express)")
    return plan


def _pieces(planned: _Planned, stored: dict[str, _Stored]) -> Iterator[torch.Tensor]:
    """The source tensors of ``planned`` in order, each read through its own ``safe_open``: the shard's
    memory map (and the pages of it that count as resident) goes once the tensor is used."""
    for key, _ in planned.sources:
        with safe_open(stored[key].file, "pt") as f:
            yield f.get_tensor(key)


@dataclass(frozen=True)
class _Source:
    """A checked source directory: its config, our config and the plan of our tensors."""

    src: Path
    hf_config: dict[str, Any]
    arch: str
    config: ModelConfig
    stored: dict[str, _Stored]
    plan: list[_Planned]

    def dtype_of(self, planned: _Planned) -> torch.dtype:
        return _DTYPES[self.stored[planned.sources[0][0]].dtype]


def _open_source(src: str | Path) -> _Source:
    src = Path(src)
    hf_config = _read_config(src)
    try:
        config = hf_model_config(hf_config)
    except HFImportError as e:
        raise HFImportError(f"{src}: {e}") from None
    arch = _architecture(hf_config)
    _check_tokenizer(src, config)
    stored = _stored_tensors(src)
    zeros = _zero_qkv_biases(config, stored)
    if zeros:
        config = config.replace(qkv_bias=False)
    return _Source(src, hf_config, arch, config, stored, _plan(config, arch, stored, src, zeros))


def _zero_qkv_biases(config: ModelConfig, stored: dict[str, _Stored]) -> frozenset[str]:
    """The q/k/v bias keys of a Llama ``attention_bias`` model when every one is zero, else nothing.

    Llama's option biases all four projections; a model with an output bias only (ours, exported
    as such a Llama) carries zero q/k/v biases, and is imported without them, as it was. They are
    small (a few rows per layer), so reading them costs nothing next to the weights."""
    if not (config.qkv_bias and config.out_bias):
        return frozenset()
    keys = [f"model.layers.{i}.self_attn.{p}_proj.bias" for i in range(config.n_layers) for p in "qkv"]
    if not all(k in stored and stored[k].dtype in _DTYPES for k in keys):
        return frozenset()  # the plan names what is missing or not a float
    for key in keys:
        with safe_open(stored[key].file, "pt") as f:
            if f.get_tensor(key).any():
                return frozenset()
    return frozenset(keys)


# ---- writing ------------------------------------------------------------------------------------------
def _write_safetensors(path: Path, source: _Source, dtype: torch.dtype | None, metadata: dict[str, str],
                       progress: bool) -> None:
    """Our ``model.safetensors``, one source tensor at a time.

    safetensors' ``save_file`` serialises the whole state dict in memory first (twice the model at
    peak). The format is simple and documented: an 8-byte little-endian header length, a JSON header
    giving each tensor's dtype, shape and byte range, then the tensors' raw little-endian bytes
    back to back. The header is known from the plan, so it is written first and each tensor's bytes
    follow as its sources are read. Wider dtypes come first, so every tensor stays aligned to its
    element size; safetensors' own reader checks the file when it is loaded.
    """
    from tqdm import tqdm

    if sys.byteorder != "little":  # the raw bytes below are the machine's
        raise RuntimeError("import_hf writes safetensors on little-endian machines only")
    specs = [(p, dtype or source.dtype_of(p)) for p in source.plan]
    specs.sort(key=lambda s: -s[1].itemsize)  # stable: the plan's order within a width
    header: dict[str, Any] = {"__metadata__": metadata}
    offset = 0
    for planned, dt in specs:
        size = math.prod(planned.shape) * dt.itemsize
        header[planned.name] = {"dtype": _DTYPE_NAMES[dt], "shape": list(planned.shape),
                                "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the data starts 8-aligned, as safetensors' writer pads it
    with open(path, "wb") as f, tqdm(total=len(specs), unit="tensor", desc=f"import {source.src.name}",
                                     disable=not progress) as bar:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for planned, dt in specs:
            for piece in _pieces(planned, source.stored):
                f.write(piece.to(dt).contiguous().view(-1).view(torch.uint8).numpy())
                del piece
            bar.update()
        if f.tell() != 8 + len(raw) + offset:
            raise RuntimeError(f"{path}: wrote {f.tell()} bytes, the header promises {8 + len(raw) + offset}")


def _check_out(src: Path, out: Path, force: bool) -> None:
    if out.resolve() == src.resolve():
        raise HFImportError(f"{out}: is the source directory itself; write the import to another directory")
    if out.exists() and not out.is_dir():
        raise HFImportError(f"{out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise HFImportError(f"{out}: exists and is not empty (use --force to replace it)")


def import_hf(src: str | Path, out: str | Path, *, dtype: torch.dtype | None = None, force: bool = False,
              progress: bool = True) -> Path:
    """Write the Hugging Face model directory ``src`` as a smallcode checkpoint ``out``; returns ``out``.

    ``dtype`` None keeps each tensor as stored. ``out`` must not exist or be empty unless ``force``
    (it is then replaced). Everything is checked (config, tokenizer size, every tensor's name, shape
    and dtype) before a byte is written, and the directory is built under a temporary name, so a
    refused or failed import leaves nothing behind. Peak memory is a few source tensors.
    """
    src, out = Path(src), Path(out)
    if dtype is not None and dtype not in _DTYPE_NAMES:
        raise HFImportError(f"dtype {dtype} is not one import writes (float32, float16, bfloat16)")
    source = _open_source(src)
    _check_out(src, out, force)
    with atomic_dir(out) as tmp:
        _write_safetensors(tmp / WEIGHTS_FILE, source, dtype, {"format_version": str(FORMAT_VERSION)}, progress)
        if (src / TOKENIZER_FILE).is_file():  # the model's tokenizer files, unchanged
            shutil.copyfile(src / TOKENIZER_FILE, tmp / TOKENIZER_FILE)
        copy_hf_tokenizer_files(src, tmp)
        meta: dict[str, Any] = {"format_version": FORMAT_VERSION, "model": source.config.to_dict()}
        if (src / TOKENIZER_FILE).is_file():
            meta["tokenizer_kind"] = "huggingface"
        meta["imported_from"] = {"architecture": source.arch, "source": str(src.resolve()),
                                 "config_sha256": sha256_file(src / CONFIG_FILE)}
        (tmp / CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return out


def load_hf_as_smallcode(src: str | Path, *, device: str | torch.device = "cpu",
                         dtype: torch.dtype | None = None) -> SmallCodeLM:
    """The Hugging Face model directory ``src`` as a ``SmallCodeLM`` in memory (eval mode), without a
    checkpoint on disk: the import's checks and mapping, the model built on the meta device and
    filled one source tensor at a time (peak memory: the model plus one tensor).

    ``dtype`` None: the dtype the embedding is stored in.
    """
    from smallcode.model.transformer import SmallCodeLM

    source = _open_source(src)
    config = source.config
    if dtype is None:
        dtype = source.dtype_of(next(p for p in source.plan if p.name == "embed.weight"))
    with torch.device("meta"):
        model = SmallCodeLM(config)
    model = model.to(dtype).to_empty(device=device)
    if config.tie_embeddings:
        model.lm_head.weight = model.embed.weight
    state = model.state_dict()
    with torch.no_grad():
        for planned in source.plan:
            flat, at = state[planned.name].view(-1), 0
            for piece in _pieces(planned, source.stored):
                flat[at:at + piece.numel()].copy_(piece.reshape(-1))
                at += piece.numel()
                del piece
    # to_empty left the tables uninitialised; in the model's dtype, as Checkpoint.load_model(dtype=) has them
    model.rope = model.rope.for_config(config, device).to(dtype)
    return model.eval()


def is_importable(src: str | Path) -> bool:
    """Whether ``src`` is a Hugging Face directory of a supported family with safetensors weights, judged
    by its ``config.json`` and file names alone; never raises."""
    src = Path(src)
    try:
        hf_model_config(_read_config(src))
    except (HFImportError, OSError):
        return False
    return (src / INDEX_FILE).is_file() or (src / SOURCE_WEIGHTS).is_file()
