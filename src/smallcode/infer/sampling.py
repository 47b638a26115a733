"""Sampling parameters and the choice of the next token from logits.

Greedy when ``temperature == 0``; otherwise temperature, then top-k, then top-p (nucleus)
filtering, then a draw. Each row draws from its own ``torch.Generator``, so what a row samples does
not depend on which other rows share its batch. Stop sequences are matched on text by the engine.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from smallcode.config import Config, ConfigError


@dataclass
class SamplingParams(Config):
    max_tokens: int = 256
    """Most new tokens per completion (>= 1)."""
    temperature: float = 0.0
    """0 picks the most likely token (greedy); higher spreads the distribution."""
    top_k: int = 0
    """Keep only the k most likely tokens before drawing (0 = no limit)."""
    top_p: float = 1.0
    """Keep the smallest set of tokens whose probability reaches top_p, in (0, 1]."""
    seed: int | None = None
    """Seed of row 0's generator; row r uses seed + r. None draws a fresh seed."""
    stop: list[str] = field(default_factory=list)
    """Text sequences that end a completion (not included in it); matched across token boundaries."""
    ignore_eos: bool = False
    """Keep going past end-of-text (benchmarks that need exactly max_tokens tokens)."""

    def __post_init__(self) -> None:
        # Types (an int, not a bool or a string; a list of strings) are checked by Config; ranges here.
        if self.max_tokens < 1:
            raise ConfigError(f"max_tokens must be an integer >= 1, got {self.max_tokens!r}")
        if not self.temperature >= 0:
            raise ConfigError(f"temperature must be >= 0, got {self.temperature!r}")
        if self.top_k < 0:
            raise ConfigError(f"top_k must be an integer >= 0, got {self.top_k!r}")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"top_p must be in (0, 1], got {self.top_p!r}")
        if not all(self.stop):
            raise ConfigError(f"stop sequences must be non-empty strings, got {self.stop!r}")


def filter_logits(logits_BV: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Set to -inf every logit outside the top-k and outside the top-p nucleus."""
    if top_k and top_k < logits_BV.shape[-1]:
        kth = logits_BV.topk(top_k, dim=-1).values[..., -1:]
        logits_BV = logits_BV.masked_fill(logits_BV < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = logits_BV.sort(dim=-1, descending=True)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        # drop a token when the tokens before it already reach top_p (the first always stays)
        drop_sorted = (cum - sorted_logits.softmax(-1)) >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits_BV = logits_BV.masked_fill(drop, float("-inf"))
    return logits_BV


def sample(logits_BV: torch.Tensor, params: SamplingParams, generators: list[torch.Generator]) -> torch.Tensor:
    """One token id per row (B,)."""
    if params.temperature == 0:
        return logits_BV.argmax(dim=-1)
    probs = filter_logits(logits_BV.float() / params.temperature, params.top_k, params.top_p).softmax(-1)
    return torch.cat([torch.multinomial(p, 1, generator=g) for p, g in zip(probs, generators, strict=True)])
