"""A smallcode model for transformers: ``AutoModelForCausalLM.from_pretrained(DIR, trust_remote_code=True)``.

smallcode exports a model with global tokens with this file beside its weights (a model without them
loads as Mixtral or Mistral instead). It computes the same function as ``smallcode.model``:

* attention: grouped-query, RoPE ("rotate half", frequencies optionally rescaled linearly or as
  Llama 3.1 does), optional biases on the q/k/v and output projections, and each query sees the
  keys in its causal sliding window of ``window`` positions plus the first ``n_global`` positions of
  its sequence (the global tokens);
* feed-forward: SwiGLU experts; a softmax router picks ``top_k`` of them per token and their weights
  are renormalised to sum to one; with ``n_experts == 1`` a plain SwiGLU block;
* pre-norm blocks with RMSNorm, then a final norm and the output projection.

Parameter names are smallcode's, so the weights file is the checkpoint's. ``generate`` works with
``SmallCodeCache``, which keeps per layer the keys of the global positions and of the latest
``window - 1`` positions only: its memory stops growing once a sequence passes the window. Batches
of prompts of different lengths must be left-padded (as ``generate`` does with a pad token).

This is a readable reference, not a fast kernel: attention is one masked ``scaled_dot_product_attention``
over [cached keys ; new keys] and the experts run one after another. It depends on torch and
transformers only (written against transformers 5, whose ``generate`` passes the cache as ``cache``).

Shape legend: B batch, T new positions, S cached + new keys, H query heads, K key/value heads,
D head width, N tokens, E experts.
"""

import math

import torch
import torch.nn.functional as F
import transformers
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.cache_utils import Cache, CacheLayerMixin
from transformers.modeling_outputs import CausalLMOutputWithPast

from .configuration_smallcode import SmallCodeConfig

if int(transformers.__version__.split(".")[0]) < 5:
    # transformers 4 passes the cache as past_key_values and expects it back there: refuse rather than misdecode
    raise ImportError(f"modeling_smallcode needs transformers >= 5, found {transformers.__version__}")


def visible(q_pos: torch.Tensor, k_pos: torch.Tensor, window: int, n_global: int) -> torch.Tensor:
    """(B, 1, T, S) mask: query position ``q_pos`` (B, T) may attend to key position ``k_pos`` (B, S).

    Padding has negative positions: it is seen by no query, and a padding query sees itself only
    (so its softmax is defined; its output is never used).
    """
    q, k = q_pos[:, :, None], k_pos[:, None, :]
    seen = (k >= 0) & (k <= q) & ((q - k < window) | (k < n_global))
    return (seen | ((q < 0) & (k == q)))[:, None]


def rope_inv_freq(config: SmallCodeConfig) -> torch.Tensor:
    """The (head_dim / 2,) float32 inverse frequencies, after the config's scaling.

    ``linear``: all divided by ``rope_factor``. ``llama3``: frequencies whose wavelength exceeds
    ``rope_original_max_len / rope_low_freq_factor`` are divided by the factor, those below
    ``rope_original_max_len / rope_high_freq_factor`` kept, and those between blended linearly in
    ``rope_original_max_len / wavelength``; in float32 and in transformers' order of operations.
    """
    dim = config.head_dim
    inv_freq = 1.0 / (config.rope_base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
    factor = config.rope_factor
    if config.rope_scaling_type == "linear":
        return inv_freq / factor
    if config.rope_scaling_type == "llama3":
        original = config.rope_original_max_len
        low, high = config.rope_low_freq_factor, config.rope_high_freq_factor
        wavelength = 2 * math.pi / inv_freq
        long_waves, short_waves = wavelength > original / low, wavelength < original / high
        scaled = torch.where(long_waves, inv_freq / factor, inv_freq)
        blend = (original / wavelength - low) / (high - low)
        blended = (1 - blend) * scaled / factor + blend * scaled
        return torch.where(~short_waves & ~long_waves, blended, scaled)
    if config.rope_scaling_type != "none":
        raise ValueError(f"unknown rope_scaling_type {config.rope_scaling_type!r} (none, linear or llama3)")
    return inv_freq


def rope(pos: torch.Tensor, inv_freq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin (B, T, 1, D) for positions (B, T): float32 position times inverse frequency, as smallcode."""
    freqs = pos.to(torch.float32)[..., None] * inv_freq.to(pos.device)
    emb = torch.cat((freqs, freqs), dim=-1)[:, :, None]
    return emb.cos(), emb.sin()


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return x * cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin


class SmallCodeCacheLayer(CacheLayerMixin):
    """One layer's cached keys and values, (B, K, S, D); which positions they hold is the cache's business."""

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.keys, self.values = key_states[:, :, :0], value_states[:, :, :0]
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Append the new keys and values; return all of them (what the new queries attend to)."""
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        self.keys = torch.cat([self.keys, key_states], dim=-2)
        self.values = torch.cat([self.values, value_states], dim=-2)
        return self.keys, self.values

    def keep(self, columns: torch.Tensor) -> None:
        self.keys, self.values = self.keys[:, :, columns], self.values[:, :, columns]

    def get_seq_length(self) -> int:
        return 0 if self.keys is None else self.keys.shape[-2]

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.get_seq_length() + query_length, 0

    def get_max_length(self) -> int:
        return -1


class SmallCodeCache(Cache):
    """Keys of the global positions and of the latest ``window - 1`` positions of every row.

    ``positions`` (B, S) says which position each cached key holds (negative for padding). After a
    forward, ``commit`` drops the keys no later query can see: a key at position p stays while p <
    ``n_global`` or p is among the row's latest ``window - 1``. Rows of a left-padded batch keep
    the union of what each needs, so the size stays bounded by the window, the globals and the
    padding, however long the generation runs.
    """

    def __init__(self, config: SmallCodeConfig) -> None:
        super().__init__(layers=[SmallCodeCacheLayer() for _ in range(config.n_layers)])
        self.window, self.n_global = config.window, config.n_global
        self.positions: torch.Tensor | None = None
        self.seen = 0  # columns (tokens, padding included) fed so far; the same for every row

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.seen

    def key_positions(self, pos: torch.Tensor) -> torch.Tensor:
        """Positions of [cached keys ; new keys] for new positions ``pos`` (B, T)."""
        return pos if self.positions is None else torch.cat([self.positions, pos], dim=1)

    def commit(self, pos: torch.Tensor) -> None:
        """Every layer has appended the keys of ``pos`` (B, T): drop what no later query sees."""
        k_pos = self.key_positions(pos)
        next_q = k_pos.max(dim=1, keepdim=True).values + 1  # each row's next query position
        needed = (k_pos >= 0) & ((k_pos < self.n_global) | (next_q - k_pos < self.window))
        columns = needed.any(dim=0).nonzero().squeeze(1)
        for layer in self.layers:
            layer.keep(columns)
        self.positions = k_pos[:, columns]
        self.seen += pos.shape[1]

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        super().reorder_cache(beam_idx)
        if self.positions is not None:
            self.positions = self.positions[beam_idx.to(self.positions.device)]


class Attention(nn.Module):
    def __init__(self, config: SmallCodeConfig, layer: int) -> None:
        super().__init__()
        self.layer = layer
        self.n_heads, self.n_kv_heads, self.head_dim = config.n_heads, config.n_kv_heads, config.head_dim
        # smallcode's fused projection: the rows of the H query heads, then K key heads, then K value heads
        self.wqkv = nn.Linear(config.d_model, (self.n_heads + 2 * self.n_kv_heads) * self.head_dim,
                              bias=config.qkv_bias)
        self.wo = nn.Linear(self.n_heads * self.head_dim, config.d_model, bias=config.out_bias)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor,
                cache: SmallCodeCache | None) -> torch.Tensor:
        B, T, _ = x.shape
        H, K = self.n_heads, self.n_kv_heads
        q, k, v = self.wqkv(x).view(B, T, H + 2 * K, self.head_dim).split([H, K, K], dim=2)
        q, k, v = rotate(q, cos, sin).transpose(1, 2), rotate(k, cos, sin).transpose(1, 2), v.transpose(1, 2)
        if cache is not None:
            k, v = cache.update(k, v, self.layer)
        # query head h reads key head h // (H // K)
        k, v = k.repeat_interleave(H // K, dim=1), v.repeat_interleave(H // K, dim=1)
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, H, T, D)
        return self.wo(o.transpose(1, 2).reshape(B, T, H * self.head_dim))


class Router(nn.Module):
    def __init__(self, config: SmallCodeConfig) -> None:
        super().__init__()
        self.top_k = config.num_experts_per_tok
        self.weight = nn.Parameter(torch.empty(config.n_experts, config.d_model))

    def forward(self, x_ND: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each token's top-k experts (N, k) and their weights, renormalised to sum to one (N, k)."""
        probs_NE = F.linear(x_ND, self.weight).float().softmax(dim=-1)
        weights, experts = probs_NE.topk(self.top_k, dim=-1)
        return experts, weights / weights.sum(dim=-1, keepdim=True)


class Experts(nn.Module):
    """E SwiGLU experts as stacked weights: ``w_gate_up`` (E, 2F, D) holds the gate rows then the up rows."""

    def __init__(self, config: SmallCodeConfig) -> None:
        super().__init__()
        self.d_ff = config.d_ff
        self.w_gate_up = nn.Parameter(torch.empty(config.n_experts, 2 * config.d_ff, config.d_model))
        self.w_down = nn.Parameter(torch.empty(config.n_experts, config.d_model, config.d_ff))

    def forward(self, x: torch.Tensor, e: int) -> torch.Tensor:
        gate, up = F.linear(x, self.w_gate_up[e]).split(self.d_ff, dim=-1)
        return F.linear(F.silu(gate) * up, self.w_down[e])


class FeedForward(nn.Module):
    def __init__(self, config: SmallCodeConfig) -> None:
        super().__init__()
        self.router = Router(config) if config.n_experts > 1 else None
        self.experts = Experts(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_ND = x.reshape(-1, x.shape[-1])
        if self.router is None:
            return self.experts(x_ND, 0).view_as(x)
        experts_NK, weights_NK = self.router(x_ND)
        out_ND = torch.zeros_like(x_ND)
        for e in experts_NK.unique().tolist():
            token, slot = (experts_NK == e).nonzero(as_tuple=True)
            y = self.experts(x_ND[token], e) * weights_NK[token, slot, None].to(x.dtype)
            out_ND.index_add_(0, token, y)
        return out_ND.view_as(x)


class Block(nn.Module):
    def __init__(self, config: SmallCodeConfig, layer: int) -> None:
        super().__init__()
        self.attn_norm = nn.RMSNorm(config.d_model, eps=config.norm_eps)
        self.attn = Attention(config, layer)
        self.ffn_norm = nn.RMSNorm(config.d_model, eps=config.norm_eps)
        self.ffn = FeedForward(config)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor,
                cache: SmallCodeCache | None) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x), cos, sin, mask, cache)
        return x + self.ffn(self.ffn_norm(x))


class SmallCodeForCausalLM(PreTrainedModel, GenerationMixin):
    config_class = SmallCodeConfig
    base_model_prefix = "smallcode"  # no base-model submodule: parameter names are the checkpoint's
    _no_split_modules = ["Block"]
    _tied_weights_keys = {"lm_head.weight": "embed.weight"}  # applied when config.tie_word_embeddings

    def __init__(self, config: SmallCodeConfig) -> None:
        super().__init__(config)
        self.embed = nn.Embedding(config.vocab_size, config.d_model)
        self.blocks = nn.ModuleList(Block(config, i) for i in range(config.n_layers))
        self.norm = nn.RMSNorm(config.d_model, eps=config.norm_eps)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embed = value

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        # generate must not hand us a DynamicCache (it would keep every position): forward makes a SmallCodeCache
        return False

    def _init_weights(self, module: nn.Module) -> None:
        # Weights come from the export; this only gives fresh models (from_config) finite values.
        for p in module.parameters(recurse=False):
            if p.dim() > 1:
                nn.init.normal_(p, std=0.02)
            elif isinstance(module, nn.Linear):
                nn.init.zeros_(p)  # a projection's bias

    def forward(self, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None = None,
                cache: SmallCodeCache | None = None, use_cache: bool | None = None,
                logits_to_keep: int = 0, labels: torch.LongTensor | None = None, **kwargs) -> CausalLMOutputWithPast:
        """Logits for ``input_ids`` (B, T), continuing ``cache`` when given; ``attention_mask`` marks left padding."""
        cfg = self.config
        use_cache = cfg.use_cache if use_cache is None else use_cache
        if cache is None and use_cache:
            cache = SmallCodeCache(cfg)
        if cache is not None and not isinstance(cache, SmallCodeCache):
            raise TypeError(f"a smallcode model needs a SmallCodeCache, got {type(cache).__name__}")
        B, T = input_ids.shape
        seen = 0 if cache is None else cache.seen
        # A row's position counts its real tokens: left padding shifts it and gets negative positions.
        pad = torch.zeros(B, 1, dtype=torch.long, device=input_ids.device)
        if attention_mask is not None:
            if attention_mask.shape[1] != seen + T:
                raise ValueError(f"attention_mask covers {attention_mask.shape[1]} positions, expected {seen + T}")
            if (attention_mask.diff(dim=1) < 0).any():
                raise ValueError("attention_mask: only left padding is supported")
            pad = (attention_mask == 0).sum(dim=1, keepdim=True)
        pos = seen + torch.arange(T, device=input_ids.device)[None] - pad  # (B, T)
        k_pos = pos if cache is None else cache.key_positions(pos)
        mask = visible(pos, k_pos, cfg.window, cfg.n_global)
        cos, sin = rope(pos, rope_inv_freq(cfg))
        x = self.embed(input_ids)
        for block in self.blocks:
            x = block(x, cos, sin, mask, cache)
        if cache is not None:
            cache.commit(pos)
        h = self.norm(x)
        logits = self.lm_head(h[:, -logits_to_keep:] if logits_to_keep else h)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=-100)
        return CausalLMOutputWithPast(loss=loss, logits=logits, cache=cache if use_cache else None)
