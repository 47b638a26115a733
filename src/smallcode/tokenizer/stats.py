"""Compression statistics of a tokenizer over a set of texts: bytes per token, tokens per line.

Works with any callable ``encode(str) -> list[int]`` batch function, so baselines from other
libraries can be measured the same way. It does not read files: callers pass texts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class CompressionStats:
    """Totals over a set of texts; ratios derived from them."""

    documents: int
    bytes: int
    lines: int
    tokens: int

    @property
    def bytes_per_token(self) -> float:
        return self.bytes / self.tokens if self.tokens else 0.0

    @property
    def tokens_per_line(self) -> float:
        return self.tokens / self.lines if self.lines else 0.0

    def to_dict(self) -> dict[str, float | int]:
        d: dict[str, float | int] = dict(asdict(self))
        d["bytes_per_token"] = round(self.bytes_per_token, 4)
        d["tokens_per_line"] = round(self.tokens_per_line, 4)
        return d


def compression_stats(
    texts: Sequence[str], encode_batch: Callable[[list[str]], list[list[int]]], chunk: int = 256
) -> CompressionStats:
    """Encode ``texts`` in chunks and total their bytes, lines and tokens."""
    n_tokens = 0
    for i in range(0, len(texts), chunk):
        n_tokens += sum(len(ids) for ids in encode_batch(list(texts[i : i + chunk])))
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    # A last line without a trailing newline still counts as a line.
    n_lines = sum(t.count("\n") + (0 if t.endswith("\n") or not t else 1) for t in texts)
    return CompressionStats(documents=len(texts), bytes=n_bytes, lines=n_lines, tokens=n_tokens)
