"""Quality filters: decide whether one raw document is kept, and if not, why.

Each rejected document gets exactly one reason (the first that applies, in the order of
``DropReason``), so the summary's counts add up. Filters look at one document at a time; dedup
across documents is :mod:`smallcode.data.dedup`.
"""

from __future__ import annotations

from typing import Literal, get_args

from smallcode.data.config import PrepareConfig

DropReason = Literal["binary", "oversized", "non_utf8", "empty", "generated", "long_lines"]
DROP_REASONS: tuple[str, ...] = get_args(DropReason)


def classify(data: bytes, cfg: PrepareConfig) -> tuple[str | None, DropReason | None]:
    """Return ``(text, None)`` for a kept document, or ``(None, reason)`` for a dropped one."""
    # A NUL byte never occurs in source text; checking the head is what git does too.
    if b"\x00" in data[:8192]:
        return None, "binary"
    if len(data) > cfg.max_bytes:
        return None, "oversized"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None, "non_utf8"
    if len(data) < cfg.min_bytes or not text.strip():
        return None, "empty"
    head = text[: cfg.generated_head_bytes].lower()
    if any(marker in head for marker in cfg.generated_markers):
        return None, "generated"
    if max(map(len, text.splitlines()), default=0) > cfg.max_line_length:
        return None, "long_lines"
    return text, None
