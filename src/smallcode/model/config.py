"""ModelConfig: every architectural choice of a smallcode model, its presets and its size.

The config counts its own parameters (``num_params``, ``num_active_params``, ``param_breakdown``)
from the shapes alone, so the 16B flagship is sized without allocating a byte of it; a test checks
the counts against built models. It does not build modules: ``model/transformer.py`` does.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from smallcode.config import Config, ConfigError


@dataclass
class ModelConfig(Config):
    vocab_size: int = 8192
    """Number of token ids (embedding rows and output logits)."""
    d_model: int = 256
    """Width of the residual stream."""
    n_layers: int = 4
    """Number of transformer blocks."""
    n_heads: int = 8
    """Query heads per attention layer."""
    n_kv_heads: int = 2
    """Key/value heads (grouped-query attention); must divide ``n_heads``."""
    head_dim: int | None = None
    """Width of one head; ``None`` means ``d_model // n_heads``."""
    d_ff: int = 512
    """Hidden width of one SwiGLU expert."""
    n_experts: int = 8
    """Experts per MoE layer; 1 makes the block a dense SwiGLU feed-forward (no router)."""
    top_k: int = 2
    """Experts each token is routed to."""
    window: int = 256
    """Causal sliding window: a query sees itself and the ``window - 1`` positions before it."""
    n_global: int = 4
    """The first ``n_global`` positions of a sequence are visible to every later query."""
    rope_base: float = 10000.0
    """RoPE base frequency."""
    rope_scaling: Literal["none", "linear", "llama3"] = "none"
    """How RoPE frequencies are rescaled for a longer context, as transformers' ``rope_type``:
    ``linear`` divides every frequency by ``rope_factor`` (position interpolation); ``llama3`` divides
    only the low frequencies, leaves the high ones and blends in between (Llama 3.1)."""
    rope_factor: float = 1.0
    """Context extension factor of ``linear`` and ``llama3`` scaling."""
    rope_low_freq_factor: float = 1.0
    """``llama3``: wavelengths above ``rope_original_max_len / rope_low_freq_factor`` are divided by the factor."""
    rope_high_freq_factor: float = 4.0
    """``llama3``: wavelengths below ``rope_original_max_len / rope_high_freq_factor`` are left as they are."""
    rope_original_max_len: int = 8192
    """``llama3``: the context length the model was pretrained at (``original_max_position_embeddings``)."""
    qkv_bias: bool = False
    """The query/key/value projection has a bias (Qwen2; Llama's ``attention_bias``)."""
    out_bias: bool = False
    """The attention output projection has a bias (Llama's ``attention_bias``)."""
    max_seq_len: int = 1024
    """Longest sequence the model is trained on (and the RoPE table's initial length)."""
    norm_eps: float = 1e-5
    """RMSNorm epsilon."""
    tie_embeddings: bool = False
    """Share the input embedding with the output projection."""
    balance_loss_coef: float = 0.01
    """Weight of the Switch/Mixtral load-balance loss in the training loss."""
    z_loss_coef: float = 0.001
    """Weight of the router z-loss (ST-MoE) in the training loss."""
    init_std: float = 0.02
    """Standard deviation of the normal initialisation."""

    def __post_init__(self) -> None:
        positive = ["vocab_size", "d_model", "n_layers", "n_heads", "n_kv_heads", "d_ff", "n_experts",
                    "top_k", "window", "max_seq_len"]
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"ModelConfig.{name} must be an integer >= 1, got {getattr(self, name)!r}")
        if self.head_dim is not None and self.head_dim < 1:
            raise ConfigError(f"ModelConfig.head_dim must be None or an integer >= 1, got {self.head_dim!r}")
        if self.n_global < 0:
            raise ConfigError(f"ModelConfig.n_global must be an integer >= 0, got {self.n_global!r}")
        if self.head_dim is None and self.d_model % self.n_heads:
            raise ConfigError(
                f"ModelConfig.d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads}) "
                "when head_dim is not given"
            )
        if self.n_heads % self.n_kv_heads:
            raise ConfigError(
                f"ModelConfig.n_heads ({self.n_heads}) must be divisible by n_kv_heads ({self.n_kv_heads}); "
                f"allowed n_kv_heads: {[d for d in range(1, self.n_heads + 1) if self.n_heads % d == 0]}"
            )
        if self.top_k > self.n_experts:
            raise ConfigError(
                f"ModelConfig.top_k ({self.top_k}) must be between 1 and n_experts ({self.n_experts})"
            )
        if self.hd % 2:
            raise ConfigError(f"ModelConfig head_dim ({self.hd}) must be even for RoPE")
        for name in ("rope_base", "norm_eps", "init_std", "rope_factor", "rope_low_freq_factor",
                     "rope_high_freq_factor"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"ModelConfig.{name} must be > 0, got {getattr(self, name)!r}")
        for name in ("balance_loss_coef", "z_loss_coef"):
            if getattr(self, name) < 0:
                raise ConfigError(f"ModelConfig.{name} must be >= 0, got {getattr(self, name)!r}")
        if self.rope_original_max_len < 1:
            raise ConfigError(f"ModelConfig.rope_original_max_len must be an integer >= 1, "
                              f"got {self.rope_original_max_len!r}")
        if self.rope_scaling == "llama3" and not self.rope_high_freq_factor > self.rope_low_freq_factor:
            # the blend between the two wavelength bounds divides by their difference
            raise ConfigError(
                f"ModelConfig.rope_high_freq_factor ({self.rope_high_freq_factor}) must be greater than "
                f"rope_low_freq_factor ({self.rope_low_freq_factor}) for llama3 rope scaling"
            )

    # ------------------------------------------------------------------ derived sizes
    @property
    def hd(self) -> int:
        """The effective head width."""
        return self.head_dim if self.head_dim is not None else self.d_model // self.n_heads

    @property
    def is_moe(self) -> bool:
        return self.n_experts > 1

    def param_breakdown(self) -> dict[str, int]:
        """Parameters by component, for the whole model (not per layer)."""
        d, L = self.d_model, self.n_layers
        qkv = (self.n_heads + 2 * self.n_kv_heads) * self.hd
        attn = d * qkv + self.n_heads * self.hd * d
        attn += (qkv if self.qkv_bias else 0) + (d if self.out_bias else 0)
        expert = 3 * d * self.d_ff
        return {
            "embedding": self.vocab_size * d,
            "attention": L * attn,
            "experts": L * self.n_experts * expert,
            "router": L * self.n_experts * d if self.is_moe else 0,
            "norms": (2 * L + 1) * d,
            "lm_head": 0 if self.tie_embeddings else self.vocab_size * d,
        }

    def num_params(self) -> int:
        """Total parameters of the built model."""
        return sum(self.param_breakdown().values())

    def num_active_params(self) -> int:
        """Parameters that touch one token: everything but the experts a token is not routed to."""
        b = self.param_breakdown()
        return self.num_params() - b["experts"] + b["experts"] * self.top_k // self.n_experts

    def flops_per_token(self, seq_len: int, training: bool = True) -> float:
        """Model FLOPs for one token: 2 per active weight (matmul), plus attention scores.

        Attention counts only the keys a query really sees (window plus globals, causal), so the
        figure is the same whichever kernel computes it. Training multiplies by 3 (forward + backward).
        """
        active = self.num_active_params() - self.param_breakdown()["embedding"]
        if self.tie_embeddings:
            active += self.vocab_size * self.d_model
        avg_keys = _mean_visible_keys(seq_len, self.window, self.n_global)
        attn = 2 * 2 * self.n_layers * self.n_heads * self.hd * avg_keys
        return (2 * active + attn) * (3 if training else 1)

    @classmethod
    def preset(cls, name: str, **overrides: object) -> ModelConfig:
        if name not in PRESETS:
            raise ConfigError(f"unknown preset {name!r}; allowed presets: {sorted(PRESETS)}")
        return PRESETS[name]().replace(**overrides) if overrides else PRESETS[name]()


def _mean_visible_keys(seq_len: int, window: int, n_global: int) -> float:
    # query i sees min(i + 1, window) local keys, plus the globals that fell out of its window
    total = sum(min(i + 1, window) + max(0, min(n_global, i + 1 - window)) for i in range(seq_len))
    return total / seq_len


def tiny() -> ModelConfig:
    """The shared test size: 2 layers, width 64, 4 experts top-2, vocabulary 256."""
    return ModelConfig(vocab_size=256, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=96,
                       n_experts=4, top_k=2, window=16, n_global=2, max_seq_len=128)


def nano() -> ModelConfig:
    """~17M total / ~8M active: trains on two CPU cores in minutes."""
    return ModelConfig(vocab_size=8192, d_model=256, n_layers=4, n_heads=8, n_kv_heads=2, d_ff=512,
                       n_experts=8, top_k=2, window=256, n_global=4, max_seq_len=2048)


def nano_dense() -> ModelConfig:
    """``nano`` with one expert: the dense parent that ``upcycle`` turns into ``nano``."""
    return dataclasses.replace(nano(), n_experts=1, top_k=1)


def small() -> ModelConfig:
    """~0.4B total / ~0.15B active: a single-GPU research size."""
    return ModelConfig(vocab_size=32768, d_model=768, n_layers=12, n_heads=12, n_kv_heads=4, d_ff=1408,
                       n_experts=8, top_k=2, window=1024, n_global=4, max_seq_len=4096)


def flagship() -> ModelConfig:
    """smallcode-16b-a4b: ~16B total, ~4B active, top-2 of 16 experts, 32K context."""
    return ModelConfig(vocab_size=49152, d_model=4096, n_layers=40, n_heads=32, n_kv_heads=8, d_ff=1792,
                       n_experts=16, top_k=2, window=4096, n_global=8, rope_base=500000.0,
                       max_seq_len=32768)


PRESETS: dict[str, Callable[[], ModelConfig]] = {
    "tiny": tiny,
    "nano": nano,
    "nano-dense": nano_dense,
    "small": small,
    "smallcode-16b-a4b": flagship,
}
