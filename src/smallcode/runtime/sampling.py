"""Sampling parameters and the choice of the next token from logits.

Greedy when ``temperature == 0``; otherwise temperature, then top-k, then top-p (nucleus)
filtering, then a draw. Each row draws from its own ``torch.Generator``, so what a row samples does
not depend on which other rows share its batch. Rows may carry different parameters (a server's
batch mixes requests): ``choose`` groups the rows that share temperature, top-k and top-p and
filters each group at once, and can return the model's log-probabilities (before temperature and
filtering) for an API's ``logprobs``. Stop sequences are matched on text by the engine.
"""

from __future__ import annotations

from collections.abc import Sequence
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
    stop_loops: bool = False
    """End a completion that repeats itself (a block of 1-4 lines three times over, or a run inside a
    line), keeping one copy: what editor completions want of a small model's greedy loops."""

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


# ``smallcode generate``'s defaults (SamplingParams' own are greedy, what an API caller expects).
# Chosen by measurement on the nano recipe's final model (benchmarks/speedrun.py, docs/inference.md):
# greedy decoding of a small model loops; these are the least random settings whose completions of
# the fixed prompts do not (mean distinct-4-gram ratio >= 0.5).
GENERATE_DEFAULTS = SamplingParams(temperature=0.7, top_p=0.95)


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
        drop_sorted[..., 0] = False  # also when top_p is below float32's range and compares as 0
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits_BV = logits_BV.masked_fill(drop, float("-inf"))
    return logits_BV


_TINY = torch.finfo(torch.float32).tiny


def is_greedy(params: SamplingParams) -> bool:
    """Whether a row under ``params`` takes the best logit. Below float32's smallest normal number a
    temperature is greedy in all but name, and as a float32 divisor it would round to 0 (0/0 = NaN
    for the best logit)."""
    return params.temperature < _TINY


def _groups(params: Sequence[SamplingParams]) -> dict[tuple[float, int, float], list[int]]:
    """Rows that share temperature, top-k and top-p (greedy rows under ``(0.0, 0, 1.0)``)."""
    groups: dict[tuple[float, int, float], list[int]] = {}
    for b, p in enumerate(params):
        key = (0.0, 0, 1.0) if is_greedy(p) else (p.temperature, p.top_k, p.top_p)
        groups.setdefault(key, []).append(b)
    return groups


def _filtered_probs(x: torch.Tensor, temperature: float, top_k: int, top_p: float) -> torch.Tensor:
    x = x.float()
    # Shifted so the best logit is 0: a tiny temperature then sends the rest to -inf (greedy)
    # instead of every logit to +-inf (NaN probabilities); the distribution is the same.
    return filter_logits((x - x.amax(-1, keepdim=True)) / temperature, top_k, top_p).softmax(-1)


def choose(logits_BV: torch.Tensor, params: Sequence[SamplingParams], generators: Sequence[torch.Generator],
           logprobs: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One token id per row (B,), row ``b`` drawn under ``params[b]`` with ``generators[b]``; with
    ``logprobs``, also the model's (B, V) log-probabilities, before temperature and filtering: what
    an API reports as a token's logprob (OpenAI's and vLLM's default), the same for a row whatever
    it is sampled with."""
    B = logits_BV.shape[0]
    tokens = torch.empty(B, dtype=torch.long, device=logits_BV.device)
    for (temperature, top_k, top_p), rows in _groups(params).items():
        whole = len(rows) == B  # the common case (one request, or the engine's batch): no gather
        x = logits_BV if whole else logits_BV[torch.tensor(rows, device=logits_BV.device)]
        if temperature == 0:
            picked = x.argmax(dim=-1)
        else:
            probs = _filtered_probs(x, temperature, top_k, top_p)
            picked = torch.cat([torch.multinomial(probs[i], 1, generator=generators[b]) for i, b in enumerate(rows)])
        if whole:
            tokens = picked
        else:
            tokens[rows] = picked
    return tokens, (logits_BV.float().log_softmax(-1) if logprobs else None)


def probabilities(logits_BV: torch.Tensor, params: Sequence[SamplingParams]) -> torch.Tensor:
    """The (B, V) float32 distributions ``choose`` draws each row from: after temperature, top-k and
    top-p, and one-hot on the best logit for a greedy row (speculative decoding's accept rule needs
    the distribution itself, not a draw)."""
    out = torch.zeros(logits_BV.shape, dtype=torch.float32, device=logits_BV.device)
    for (temperature, top_k, top_p), rows in _groups(params).items():
        idx = torch.tensor(rows, device=logits_BV.device)
        x = logits_BV[idx]
        if temperature == 0:
            out[idx, x.argmax(dim=-1)] = 1.0
        else:
            out[idx] = _filtered_probs(x, temperature, top_k, top_p)
    return out


def sample(logits_BV: torch.Tensor, params: SamplingParams | Sequence[SamplingParams],
           generators: Sequence[torch.Generator]) -> torch.Tensor:
    """One token id per row (B,); ``params`` is shared by all rows or given per row."""
    rows = [params] * logits_BV.shape[0] if isinstance(params, SamplingParams) else params
    return choose(logits_BV, rows, generators)[0]
