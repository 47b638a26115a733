"""Grouped-query attention over a causal sliding window plus a few global tokens.

Query ``i`` sees key ``j`` when ``j <= i`` and either ``i - j < window`` (its local window) or
``j < n_global`` (the first positions of the sequence, visible to everyone). With ``n_global = 0``
this is exactly Mistral/Mixtral's sliding-window attention.

Training and prefill never build a T x T score matrix once T exceeds the window: queries are cut
into blocks of ``block`` positions, each block attends to the ``block + window - 1`` keys that can
reach it plus the global keys, so memory and work grow linearly in T. On CUDA, FlexAttention with a
block mask does the same work (it needs ``torch.compile`` to be fast, which only pays on a GPU).
With a KV cache (``kv_cache.py`` stores it), new queries attend to the cached slots plus their own
chunk under a mask derived from the positions each slot holds; a single new token per row is
written into the cache first and attends to the cache alone.

Shape legend: B batch, T sequence, H query heads, K key/value heads, R = H // K queries per key
head, D head width, N blocks, C block length, S keys per block.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, Literal

import torch
import torch.nn.functional as F
from torch import nn

from smallcode.model.config import ModelConfig
from smallcode.model.layers import apply_rope

if TYPE_CHECKING:
    from smallcode.model.kv_cache import CacheStep

AttentionBackend = Literal["auto", "blocks", "flex"]




@lru_cache(maxsize=32)
def _block_mask(n_blocks: int, block: int, window: int, n_global: int, seq_len: int,
                device: torch.device) -> torch.Tensor:
    """Boolean mask (N, C, G + C + W - 1): True where a query may attend to a key of its block."""
    q_pos = (torch.arange(n_blocks, device=device)[:, None] * block
             + torch.arange(block, device=device)[None, :])  # (N, C)
    span = block + window - 1
    k_pos = q_pos[:, :1] - (window - 1) + torch.arange(span, device=device)[None, :]  # (N, S_local)
    local = (k_pos[:, None, :] <= q_pos[:, :, None]) & (q_pos[:, :, None] - k_pos[:, None, :] < window)
    # positions < n_global are served by the global part, so they are not counted twice
    local &= (k_pos[:, None, :] >= n_global) & (k_pos[:, None, :] < seq_len)
    g_pos = torch.arange(n_global, device=device)
    glob = g_pos[None, None, :] <= q_pos[:, :, None]  # (N, C, G)
    return torch.cat([glob, local], dim=-1)


def blocked_window_attention(q_BTHD: torch.Tensor, k_BTKD: torch.Tensor, v_BTKD: torch.Tensor,
                             window: int, n_global: int, block: int | None = None) -> torch.Tensor:
    """Window + global attention in blocks of queries; returns (B, T, H, D)."""
    B, T, H, D = q_BTHD.shape
    K = k_BTKD.shape[2]
    R = H // K
    G = min(n_global, T)
    if T <= window:
        # Every earlier key is inside the window: plain causal attention, the fastest kernel.
        o = F.scaled_dot_product_attention(q_BTHD.transpose(1, 2), k_BTKD.transpose(1, 2),
                                           v_BTKD.transpose(1, 2), is_causal=True, enable_gqa=R > 1)
        return o.transpose(1, 2)
    C = block or window
    N = -(-T // C)
    pad_end = N * C - T
    # Queries of the R heads that share a key head are stacked along the sequence axis, so each
    # key block is read once per key head rather than copied R times.
    q = F.pad(q_BTHD, (0, 0, 0, 0, 0, pad_end)).view(B, N, C, K, R, D)
    q_XNQD = q.permute(0, 3, 1, 4, 2, 5).reshape(B * K, N, R * C, D)

    def blocks(x_BTKD: torch.Tensor) -> torch.Tensor:
        x = x_BTKD.transpose(1, 2)  # (B, K, T, D)
        local = F.pad(x, (0, 0, window - 1, pad_end)).unfold(2, C + window - 1, C)  # (B, K, N, D, S)
        local = local.transpose(-1, -2)
        if G:
            glob = x[:, :, None, :G].expand(B, K, N, G, D)
            local = torch.cat([glob, local], dim=3)
        return local.reshape(B * K, N, -1, D)

    mask = _block_mask(N, C, window, G, T, q_BTHD.device)  # (N, C, S)
    # rows follow the (R, C) stacking of the queries; a 4-D mask lets CPU SDPA use its flash kernel
    mask = mask.repeat(1, R, 1)[None]
    o = F.scaled_dot_product_attention(q_XNQD, blocks(k_BTKD), blocks(v_BTKD), attn_mask=mask)
    o = o.view(B, K, N, R, C, D).permute(0, 2, 4, 1, 3, 5).reshape(B, N * C, H, D)
    return o[:, :T]


def flex_window_attention(q_BTHD: torch.Tensor, k_BTKD: torch.Tensor, v_BTKD: torch.Tensor,
                          window: int, n_global: int) -> torch.Tensor:
    """The same function through FlexAttention's block-sparse kernel (compiled on CUDA)."""
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    T = q_BTHD.shape[1]

    def visible(b: torch.Tensor, h: torch.Tensor, qi: torch.Tensor, kj: torch.Tensor) -> torch.Tensor:
        return (kj <= qi) & ((qi - kj < window) | (kj < n_global))

    block_mask = create_block_mask(visible, None, None, T, T, device=q_BTHD.device)
    fn = torch.compile(flex_attention) if q_BTHD.is_cuda else flex_attention
    o = fn(q_BTHD.transpose(1, 2), k_BTKD.transpose(1, 2), v_BTKD.transpose(1, 2),
           block_mask=block_mask, enable_gqa=q_BTHD.shape[2] != k_BTKD.shape[2])
    return o.transpose(1, 2)


def window_attention(q_BTHD: torch.Tensor, k_BTKD: torch.Tensor, v_BTKD: torch.Tensor, window: int,
                     n_global: int, backend: AttentionBackend = "auto") -> torch.Tensor:
    """Dispatch to the kernel for this device: FlexAttention on CUDA, query blocks elsewhere."""
    if backend == "flex" or (backend == "auto" and q_BTHD.is_cuda):
        return flex_window_attention(q_BTHD, k_BTKD, v_BTKD, window, n_global)
    return blocked_window_attention(q_BTHD, k_BTKD, v_BTKD, window, n_global)


def cached_attention(q_BTHD: torch.Tensor, k_BKSD: torch.Tensor, v_BKSD: torch.Tensor,
                     mask: torch.Tensor) -> torch.Tensor:
    """New queries against [cached slots ; new keys] under an explicit mask; returns (B, T, H, D).

    ``mask`` is (B, 1, R * T, S) from ``KVCache.attention_mask``: the R query heads that share a key
    head are stacked along the sequence axis, so no key is copied per query head.
    """
    B, T, H, D = q_BTHD.shape
    K = k_BKSD.shape[1]
    R = H // K
    q = q_BTHD.view(B, T, K, R, D).permute(0, 2, 3, 1, 4).reshape(B, K, R * T, D)
    o = F.scaled_dot_product_attention(q, k_BKSD, v_BKSD, attn_mask=mask)
    return o.view(B, K, R, T, D).permute(0, 3, 1, 2, 4).reshape(B, T, H, D)


class Attention(nn.Module):
    """Fused QKV projection, RoPE on queries and keys, window + global attention, output projection.

    The projections have biases only when the config asks (``qkv_bias``: Qwen2; ``out_bias`` too:
    Llama's ``attention_bias``), as imported models need; smallcode's own presets have none.
    """

    def __init__(self, config: ModelConfig, layer: int = 0) -> None:
        super().__init__()
        self.layer = layer
        self.n_heads, self.n_kv_heads, self.head_dim = config.n_heads, config.n_kv_heads, config.hd
        self.window, self.n_global = config.window, config.n_global
        self.backend: AttentionBackend = "auto"
        # the bias, when there is one, holds q | k | v rows like the weight
        self.wqkv = nn.Linear(config.d_model, (self.n_heads + 2 * self.n_kv_heads) * self.head_dim,
                              bias=config.qkv_bias)
        self.wo = nn.Linear(self.n_heads * self.head_dim, config.d_model, bias=config.out_bias)

    def forward(self, x_BTE: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                step: CacheStep | None = None) -> torch.Tensor:
        """``cos``/``sin`` broadcast against (B, T, heads, D); ``step`` is set when decoding with a cache."""
        B, T, _ = x_BTE.shape
        H, K = self.n_heads, self.n_kv_heads
        qkv = self.wqkv(x_BTE).view(B, T, H + 2 * K, self.head_dim)
        # one RoPE call for queries and keys together
        qk = apply_rope(qkv[:, :, : H + K], cos, sin)
        q, k = qk.split([H, K], dim=2)
        v = qkv[:, :, H + K:]
        if step is None:
            o = window_attention(q, k, v, self.window, self.n_global, self.backend)
        elif step.in_place:
            step.cache.write(self.layer, k, v, step)
            o = cached_attention(q, step.cache.k[self.layer], step.cache.v[self.layer], step.mask)
        else:
            cache = step.cache
            keys = torch.cat([cache.k[self.layer], k.transpose(1, 2)], dim=2)
            values = torch.cat([cache.v[self.layer], v.transpose(1, 2)], dim=2)
            o = cached_attention(q, keys, values, step.mask)
            cache.write(self.layer, k, v, step)
        return self.wo(o.reshape(B, T, H * self.head_dim))
