"""Small building blocks: RMSNorm and rotary position embeddings (RoPE).

RoPE uses the "rotate half" layout (the first and second halves of a head are the two rotation
coordinates), the layout Hugging Face's Llama/Mistral/Mixtral use, so weights copy across without
permutation. The frequencies follow the config's ``rope_scaling`` (``rope_inv_freq``) with
transformers' float32 arithmetic, so an imported Llama 3 or linearly scaled model rotates by the
same angles. The SwiGLU feed-forward lives in ``moe.py``: a dense model is the one-expert case.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from smallcode.model.config import ModelConfig


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The fused kernel upcasts internally, matching the float32 reduction of reference models.
        return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)


def _plain_inv_freq(head_dim: int, base: float) -> torch.Tensor:
    return 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))


def rope_inv_freq(config: ModelConfig) -> torch.Tensor:
    """The (head_dim / 2,) float32 inverse frequencies of ``config``'s RoPE, scaling included.

    ``linear`` is position interpolation (Chen et al. 2023): every frequency divided by the factor.
    ``llama3`` (Llama 3.1) divides only the frequencies whose wavelength exceeds
    ``original / low_freq_factor``, keeps those shorter than ``original / high_freq_factor``, and
    between the two blends the scaled and unscaled frequency linearly in ``original / wavelength``.
    The operations run in the order transformers' ``modeling_rope_utils`` runs them, so the float32
    values are the same bits.
    """
    inv_freq = _plain_inv_freq(config.hd, config.rope_base)
    factor = config.rope_factor
    if config.rope_scaling == "linear":
        return inv_freq / factor
    if config.rope_scaling == "llama3":
        original, low, high = config.rope_original_max_len, config.rope_low_freq_factor, config.rope_high_freq_factor
        wavelength = 2 * math.pi / inv_freq
        long_waves = wavelength > original / low
        short_waves = wavelength < original / high
        scaled = torch.where(long_waves, inv_freq / factor, inv_freq)
        blend = (original / wavelength - low) / (high - low)
        blended = (1 - blend) * scaled / factor + blend * scaled
        return torch.where(~short_waves & ~long_waves, blended, scaled)
    return inv_freq


class RotaryEmbedding(nn.Module):
    """cos/sin for positions: a table up to ``max_seq_len``, computed on the fly past it.

    Positions past the table are not added to it, so decoding far beyond the training length
    keeps memory constant instead of growing a table with the context. Build it with
    ``for_config`` so the config's frequency scaling is applied.
    """

    def __init__(self, head_dim: int, base: float, max_seq_len: int, inv_freq: torch.Tensor | None = None) -> None:
        super().__init__()
        self.head_dim = head_dim
        self.base = base
        if inv_freq is None:
            inv_freq = _plain_inv_freq(head_dim, base)
        self.register_buffer("inv_freq", inv_freq.to(torch.float32), persistent=False)
        self._build(max_seq_len)

    @classmethod
    def for_config(cls, config: ModelConfig, device: torch.device | str | None = None) -> RotaryEmbedding:
        """The model's RoPE: ``config``'s head width, base, table length and frequency scaling."""
        rope = cls(config.hd, config.rope_base, config.max_seq_len, rope_inv_freq(config))
        return rope if device is None else rope.to(device)

    def _build(self, length: int) -> None:
        pos = torch.arange(length, dtype=torch.float32, device=self.inv_freq.device)
        freqs = torch.outer(pos, self.inv_freq)
        emb = torch.cat((freqs, freqs), dim=-1)  # (length, head_dim)
        self.register_buffer("cos", emb.cos(), persistent=False)
        self.register_buffer("sin", emb.sin(), persistent=False)

    def forward(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin for integer ``positions`` of any shape: each (*positions.shape, head_dim)."""
        if positions.numel() == 0 or int(positions.max()) < self.cos.shape[0]:
            return self.cos[positions], self.sin[positions]
        # Same arithmetic as the table (float32 position times inverse frequency), so the values
        # are identical to what a longer table would hold.
        freqs = positions.to(torch.float32)[..., None] * self.inv_freq
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos(), emb.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x`` (..., T, H, D) by per-position angles; cos/sin are (T, D) or broadcastable."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    rotated = torch.cat((-x2, x1), dim=-1)
    return x * cos + rotated * sin
