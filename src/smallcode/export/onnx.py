"""smallcode checkpoints as ONNX decoder graphs with a constant-memory KV cache.

``export_onnx(checkpoint, out, quantize=None)`` writes a directory holding ``model.onnx``, the
tokenizer and ``smallcode_onnx.json`` (format version, model config, input/output names, the
tokenizer's hash). The graph is one step of our cached forward:

* inputs: ``input_ids`` (B, T), ``position_ids`` (B, T) the absolute positions of the new tokens,
  ``slot_positions`` (B, S) the position each cache slot holds (-1: empty), ``logits_to_keep`` (a
  scalar: how many of the last positions get logits), and per layer ``past_key_values.{i}.key`` /
  ``.value`` (B, K, S, D), the cache exactly as ``KVCache`` stores it (global slots, then the ring);
* outputs: ``logits`` (B, logits_to_keep, V), ``new_keys`` and ``new_values`` (L, B, T, K, D): the
  keys (already rotated) and values of the new tokens only, every layer in one tensor so the caller
  stores them with one write.

The graph builds the window + global mask from the positions, so B, T and S are all dynamic and the
caller decides where new keys go: ``smallcode.runtime.onnx`` writes them into the ring as
``KVCache`` does, which keeps memory at ``n_global + window`` slots however long a row runs. The
graph does not own the cache, so onnxruntime-genai (which expects the graph to return the whole
grown cache) cannot drive it; ``genai_config.json`` is not written (see docs/export.md).

The MoE is exported exactly and without computing unchosen experts: per expert the graph selects
the tokens that routed to it (``NonZero`` + ``Gather``), runs its SwiGLU on those rows only and adds
them back weighted (one ``ScatterElements`` with add per layer). The options of imported models
need no graph inputs: a q/k/v or output bias is an ``Add`` after its projection, and RoPE scaling
lives in the constant frequencies the graph multiplies positions by. Each projection is a ``MatMul``
against a constant weight, which is what onnxruntime's int8 dynamic quantiser and its 4-bit
``MatMulNBits`` quantiser rewrite. onnxruntime's ``com.microsoft::MoE`` op is exact too and can be
chosen (``moe="contrib"``, float32); it was slower at batch 8 and in prefill (docs/export.md).
Not done: ``GroupQueryAttention`` (its window has no global tokens and it owns the cache layout),
``QMoE``, fp16 and GPU graphs. Traced with torch's TorchScript-based exporter (``dynamo=False``):
the dynamo exporter also gives an exact graph of this module, but took 14 s instead of 0.5 s for
the tiny test model and left 333 nodes after onnxruntime's optimiser instead of 277.

Shape legend: B rows, T new tokens, S cache slots, H query heads, K key/value heads, R = H // K,
D head width, E model width, N = B * T tokens, V vocabulary.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from smallcode.export import ONNX_CONFIG_FILE as CONFIG_FILE
from smallcode.export import ONNX_FORMAT_VERSION as FORMAT_VERSION
from smallcode.export import ONNX_MODEL_FILE as MODEL_FILE
from smallcode.export import ExportError, check_destination
from smallcode.fileio import atomic_dir
from smallcode.model.checkpoint import Checkpoint, copy_hf_tokenizer_files
from smallcode.model.config import ModelConfig
from smallcode.model.transformer import SmallCodeLM
from smallcode.tokenizer.code_tokenizer import CONFIG_FILE as TOKENIZER_CONFIG_FILE
from smallcode.tokenizer.code_tokenizer import TOKENIZER_FILE

Quantize = Literal["int8", "int4"]
MoEOp = Literal["contrib", "standard"]
OPSET = 18
INT4_BLOCK = 32


def input_names(n_layers: int) -> list[str]:
    past = [f"past_key_values.{i}.{kv}" for i in range(n_layers) for kv in ("key", "value")]
    return ["input_ids", "position_ids", "slot_positions", "logits_to_keep", *past]


OUTPUT_NAMES = ["logits", "new_keys", "new_values"]


class _Linear(nn.Module):
    """``x @ w_t (+ b)`` with the weight stored (in, out): a plain MatMul on a constant in the graph,
    then an Add for a bias (an imported model's q/k/v or output projection)."""

    def __init__(self, weight_OI: torch.Tensor, bias_O: torch.Tensor | None = None) -> None:
        super().__init__()
        self.register_buffer("w_t", weight_OI.detach().t().contiguous())
        self.register_buffer("b", None if bias_O is None else bias_O.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x @ self.w_t
        return y if self.b is None else y + self.b


def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    # Written out: the exporter has no RMSNormalization before opset 23.
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


class _SwiGLU(nn.Module):
    def __init__(self, w_gate_up: torch.Tensor, w_down: torch.Tensor) -> None:
        super().__init__()
        d_ff = w_down.shape[1]
        self.gate, self.up = _Linear(w_gate_up[:d_ff]), _Linear(w_gate_up[d_ff:])
        self.down = _Linear(w_down)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(torch.nn.functional.silu(self.gate(x)) * self.up(x))


class _ContribMoE(torch.autograd.Function):
    """onnxruntime's ``com.microsoft::MoE`` in the graph; in torch (what the tracer runs) every
    expert on every token, weighted by the renormalised top-k probabilities (zero elsewhere)."""

    @staticmethod
    def forward(ctx: Any, x_NE: torch.Tensor, logits_NX: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor,
                w2: torch.Tensor, top_k: int) -> torch.Tensor:
        weights_NK, experts_NK = logits_NX.softmax(dim=-1).topk(top_k, dim=-1)
        dense_NX = torch.zeros_like(logits_NX).scatter(1, experts_NK, weights_NK / weights_NK.sum(-1, keepdim=True))
        h = torch.einsum("nd,xfd->xnf", x_NE, w1) + b1[:, None]
        y = torch.einsum("xnf,xdf->xnd", torch.nn.functional.silu(h[..., 0::2]) * h[..., 1::2], w2)
        return torch.einsum("nx,xnd->nd", dense_NX, y)

    @staticmethod
    def symbolic(g: Any, x_NE: Any, logits_NX: Any, w1: Any, b1: Any, w2: Any, top_k: int) -> Any:
        # SwiGLU with alpha 1, beta 0 and no limit is silu(gate) * up; normalize_routing_weights
        # renormalises the top-k softmax probabilities as our router does.
        return g.op("com.microsoft::MoE", x_NE, logits_NX, w1, b1, w2, k_i=top_k, normalize_routing_weights_i=1,
                    activation_type_s="swiglu", swiglu_fusion_i=1, activation_alpha_f=1.0, activation_beta_f=0.0)


class _ExportBlock(nn.Module):
    """One block of ``SmallCodeLM`` against an explicit cache: same weights, export-friendly ops."""

    def __init__(self, model: SmallCodeLM, layer: int, moe: MoEOp = "standard") -> None:
        super().__init__()
        cfg, block = model.config, model.blocks[layer]
        self.H, self.K, self.D, self.eps = cfg.n_heads, cfg.n_kv_heads, cfg.hd, cfg.norm_eps
        self.register_buffer("attn_norm", block.attn_norm.weight.detach().clone())
        self.register_buffer("ffn_norm", block.ffn_norm.weight.detach().clone())
        attn = block.attn
        self.wqkv, self.wo = _Linear(attn.wqkv.weight, attn.wqkv.bias), _Linear(attn.wo.weight, attn.wo.bias)
        experts = block.ffn.experts
        self.experts = nn.ModuleList(_SwiGLU(experts.w_gate_up[e], experts.w_down[e])
                                     for e in range(cfg.n_experts))
        self.router = _Linear(block.ffn.router.weight) if block.ffn.router is not None else None
        self.top_k = cfg.top_k
        self.moe = moe
        if moe == "contrib" and self.router is not None:
            # The CPU kernel reads gate and up rows interleaved (swiglu_fusion=1): gate 0, up 0, gate 1, ...
            w = experts.w_gate_up.detach()
            E, F2, D = w.shape
            self.register_buffer("w1", torch.stack([w[:, : F2 // 2], w[:, F2 // 2:]], dim=2).reshape(E, F2, D))
            self.register_buffer("b1", torch.zeros(E, F2))  # the op's bias input precedes fc2's; zeros are exact
            self.register_buffer("w2", experts.w_down.detach().clone())

    def attention(self, x_BTE: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor,
                  past_k: torch.Tensor, past_v: torch.Tensor) -> tuple[torch.Tensor, ...]:
        B, T = x_BTE.shape[0], x_BTE.shape[1]
        H, K, D = self.H, self.K, self.D
        qkv = self.wqkv(x_BTE).view(B, T, H + 2 * K, D)
        half = D // 2
        qk = qkv[:, :, : H + K]
        qk = qk * cos + torch.cat((-qk[..., half:], qk[..., :half]), dim=-1) * sin
        q, k, v = qk[:, :, :H], qk[:, :, H:], qkv[:, :, H + K:]
        # The R query heads of a key head are stacked along the query axis (as attention.cached_attention
        # does), so keys are never repeated per query head.
        q_BKQD = q.reshape(B, T, K, H // K, D).permute(0, 2, 3, 1, 4).reshape(B, K, -1, D)
        keys = torch.cat([past_k, k.transpose(1, 2)], dim=2)  # (B, K, S + T, D)
        values = torch.cat([past_v, v.transpose(1, 2)], dim=2)
        scores = q_BKQD @ keys.transpose(2, 3) * (1.0 / math.sqrt(D)) + mask
        o = scores.softmax(dim=-1) @ values  # (B, K, R * T, D)
        o = o.reshape(B, K, H // K, T, D).permute(0, 3, 1, 2, 4).reshape(B, T, H * D)
        return self.wo(o), k, v

    def ffn(self, x_BTE: torch.Tensor) -> torch.Tensor:
        if self.router is None:
            return self.experts[0](x_BTE)
        x_NE = x_BTE.reshape(-1, x_BTE.shape[-1])
        logits_NX = self.router(x_NE)
        if self.moe == "contrib":
            return _ContribMoE.apply(x_NE, logits_NX, self.w1, self.b1, self.w2, self.top_k).view_as(x_BTE)
        return self.standard_moe(x_NE, logits_NX).view_as(x_BTE)

    def standard_moe(self, x_NE: torch.Tensor, logits_NX: torch.Tensor) -> torch.Tensor:
        """Each expert on the tokens routed to it, in standard ops: (N, E).

        The weights of all experts for all tokens are scattered once into a dense (X, N) table (zero
        where not chosen); each expert then takes the rows where its weight is positive, and all
        outputs are added back with one scatter-add. A chosen weight that underflowed to zero is
        skipped, which adds the same zero.
        """
        weights_NK, experts_NK = logits_NX.softmax(dim=-1).topk(self.top_k, dim=-1)
        weights_NK = weights_NK / weights_NK.sum(dim=-1, keepdim=True)
        dense_XN = torch.zeros_like(logits_NX).scatter(1, experts_NK, weights_NK).t()
        rows, outs = [], []
        for e, expert in enumerate(self.experts):
            w_N = dense_XN[e]
            rows_e = torch.nonzero(w_N > 0).squeeze(1)
            outs.append(expert(x_NE.index_select(0, rows_e)) * w_N.index_select(0, rows_e)[:, None])
            rows.append(rows_e)
        y_AE = torch.cat(outs)
        # scatter_add exports as ScatterElements(reduction="add"), which sums a token's K rows;
        # index_put/index_add export as an overwriting scatter, which would keep only one of them.
        return torch.zeros_like(x_NE).scatter_add(0, torch.cat(rows)[:, None].expand_as(y_AE), y_AE)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor,
                past_k: torch.Tensor, past_v: torch.Tensor) -> tuple[torch.Tensor, ...]:
        a, k, v = self.attention(_rms_norm(x, self.attn_norm, self.eps), cos, sin, mask, past_k, past_v)
        x = x + a
        return x + self.ffn(_rms_norm(x, self.ffn_norm, self.eps)), k, v


class OnnxDecoder(nn.Module):
    """The graph's function in torch (see the module docstring for its inputs and outputs)."""

    def __init__(self, model: SmallCodeLM, moe: MoEOp = "standard") -> None:
        super().__init__()
        cfg = self.config = model.config
        self.register_buffer("embed", model.embed.weight.detach().clone())
        self.blocks = nn.ModuleList(_ExportBlock(model, i, moe) for i in range(cfg.n_layers))
        self.register_buffer("norm", model.norm.weight.detach().clone())
        self.lm_head = _Linear(model.lm_head.weight)
        self.register_buffer("inv_freq", model.rope.inv_freq.detach().clone())

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor, slot_positions: torch.Tensor,
                logits_to_keep: torch.Tensor, *past: torch.Tensor) -> tuple[torch.Tensor, ...]:
        cfg = self.config
        # RoPE from the positions, the arithmetic of RotaryEmbedding's table (float32 position x
        # frequency); the frequencies are the model's, so its rope scaling is baked in.
        freqs = position_ids.to(torch.float32)[..., None] * self.inv_freq
        emb = torch.cat((freqs, freqs), dim=-1)[:, :, None]  # (B, T, 1, D)
        cos, sin = emb.cos(), emb.sin()
        # KVCache.attention_mask's rule over [cached slots ; new tokens], as an additive mask.
        k_pos = torch.cat([slot_positions, position_ids], dim=1)[:, None, :]  # (B, 1, S + T)
        q_pos = position_ids[:, :, None]
        seen = (k_pos >= 0) & (k_pos <= q_pos) & ((q_pos - k_pos < cfg.window) | (k_pos < cfg.n_global))
        mask = torch.zeros_like(seen, dtype=torch.float32).masked_fill(~seen, float("-inf"))
        mask = mask.repeat(1, cfg.n_heads // cfg.n_kv_heads, 1)[:, None]  # (B, 1, R * T, S + T)
        x = self.embed[input_ids]
        keys: list[torch.Tensor] = []
        values: list[torch.Tensor] = []
        for i, block in enumerate(self.blocks):
            x, k, v = block(x, cos, sin, mask, past[2 * i], past[2 * i + 1])
            keys.append(k)
            values.append(v)
        T = input_ids.shape[1]
        keep = torch.arange(T - logits_to_keep, T)  # the positions that get logits (the last ones)
        h = _rms_norm(x.index_select(1, keep), self.norm, cfg.norm_eps)
        return self.lm_head(h), torch.stack(keys), torch.stack(values)


def example_inputs(config: ModelConfig, batch: int = 2, new: int = 3, slots: int = 5) -> tuple[torch.Tensor, ...]:
    """Inputs of the graph's shapes (values irrelevant): what tracing runs on."""
    ids = torch.zeros(batch, new, dtype=torch.long)
    pos = torch.arange(slots, slots + new).expand(batch, new).contiguous()
    slot_pos = torch.arange(slots).expand(batch, slots).contiguous()
    past = [torch.zeros(batch, config.n_kv_heads, slots, config.hd) for _ in range(2 * config.n_layers)]
    return (ids, pos, slot_pos, torch.tensor(new), *past)


def _dynamic_axes(n_layers: int) -> dict[str, dict[int, str]]:
    axes: dict[str, dict[int, str]] = {"input_ids": {0: "batch", 1: "new"}, "position_ids": {0: "batch", 1: "new"},
                                       "slot_positions": {0: "batch", 1: "slots"},
                                       "logits": {0: "batch", 1: "kept"}}
    for name in input_names(n_layers)[4:]:
        axes[name] = {0: "batch", 2: "slots"}
    for name in OUTPUT_NAMES[1:]:
        axes[name] = {1: "batch", 2: "new"}
    return axes


def write_graph(model: SmallCodeLM, path: Path, moe: MoEOp = "standard") -> None:
    """Trace ``model`` (float32) into an ONNX graph at ``path`` and check it."""
    import onnx

    decoder = OnnxDecoder(model.float().eval(), moe)
    n = model.config.n_layers
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on shapes read as Python ints
        torch.onnx.export(decoder, example_inputs(model.config), str(path), input_names=input_names(n),
                          output_names=OUTPUT_NAMES, dynamic_axes=_dynamic_axes(n), opset_version=OPSET,
                          dynamo=False, do_constant_folding=True,
                          custom_opsets={"com.microsoft": 1} if moe == "contrib" else None)
    onnx.checker.check_model(str(path))


PREPROCESSING_ADVICE = "Please consider to run pre-processing before quantization"
"""The start of the advice ``quantize_dynamic`` logs (on the root logger, as a warning) for every graph
without onnxruntime's pre-processing tag. Ours is exported with its constants folded, and
``quantize_dynamic`` infers its shapes itself; the int8 figures in docs/export.md are without that
pass, so the advice is only noise to a user of ``smallcode export onnx``."""


@contextmanager
def _without_preprocessing_advice() -> Iterator[None]:
    """Drop that one message from the root logger while the block runs; every other record passes."""
    def keep(record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(PREPROCESSING_ADVICE)

    root = logging.getLogger()
    root.addFilter(keep)
    try:
        yield
    finally:
        root.removeFilter(keep)


def quantize_graph(src: Path, dst: Path, kind: Quantize) -> None:
    """int8: onnxruntime's dynamic quantisation of every MatMul (weights per channel, activations
    per call). int4: weight-only, symmetric blocks of ``INT4_BLOCK`` along the input axis
    (``MatMulNBits``); activations stay float32."""
    import onnx

    if kind == "int8":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        with _without_preprocessing_advice():
            quantize_dynamic(src, dst, weight_type=QuantType.QInt8, per_channel=True, op_types_to_quantize=["MatMul"])
    else:
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

        # accuracy_level 4 lets the kernel quantise activations to int8 per block and use integer dot
        # products: faster on CPU, at an error the tests bound (held-out loss, greedy agreement).
        quantizer = MatMulNBitsQuantizer(onnx.load(str(src)), block_size=INT4_BLOCK, is_symmetric=True,
                                         accuracy_level=4)
        quantizer.process()
        onnx.save(quantizer.model.model, str(dst))
    onnx.checker.check_model(str(dst))


def onnx_config(config: ModelConfig, tokenizer_hash: str, quantize: Quantize | None, moe: MoEOp) -> dict[str, Any]:
    """``smallcode_onnx.json``: what the runtime needs to drive the graph and to check it belongs here."""
    n = config.n_layers
    return {"format_version": FORMAT_VERSION, "model": config.to_dict(), "quantize": quantize, "moe": moe,
            "opset": OPSET, "inputs": input_names(n), "outputs": OUTPUT_NAMES, "tokenizer_hash": tokenizer_hash}


def export_onnx(checkpoint: str | Path, out: str | Path, quantize: Quantize | None = None,
                force: bool = False, moe: MoEOp = "standard") -> Path:
    """Write the checkpoint in ``checkpoint`` as an ONNX export directory ``out``; returns ``out``.

    ``moe="contrib"`` writes the feed-forward as onnxruntime's ``com.microsoft::MoE`` (float32 only:
    the quantisers leave it alone); ``benchmarks/onnx_decode.py`` measures it against the default.

    ``out`` must not exist or be empty unless ``force``; it is built under a temporary name and
    renamed into place, so a failed export leaves nothing behind.
    """
    checkpoint, out = Path(checkpoint), Path(out)
    if quantize not in (None, "int8", "int4"):
        raise ExportError(f"quantize must be int8 or int4, not {quantize!r}")
    if moe not in ("standard", "contrib") or (moe == "contrib" and quantize):
        raise ExportError(f"moe must be standard, or contrib without quantize; got {moe!r} with {quantize!r}")
    check_destination(checkpoint, out, force)
    ckpt = Checkpoint.open(checkpoint)
    tokenizer = ckpt.load_tokenizer()
    model = ckpt.load_model()
    with atomic_dir(out) as tmp:
        if quantize is None:
            write_graph(model, tmp / MODEL_FILE, moe)
        else:
            write_graph(model, tmp / "float32.onnx")
            quantize_graph(tmp / "float32.onnx", tmp / MODEL_FILE, quantize)
            (tmp / "float32.onnx").unlink()
        shutil.copyfile(ckpt.tokenizer_file, tmp / TOKENIZER_FILE)  # type: ignore[arg-type]
        if tokenizer.native:
            (tmp / TOKENIZER_CONFIG_FILE).write_text(json.dumps(tokenizer.hf_config(), indent=2) + "\n")
        else:  # an imported model's, unchanged
            copy_hf_tokenizer_files(ckpt.directory, tmp)
        (tmp / CONFIG_FILE).write_text(json.dumps(onnx_config(model.config, tokenizer.hash, quantize, moe), indent=2)
                                       + "\n")
    return out
