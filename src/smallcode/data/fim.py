"""Fill-in-the-middle at batch time: rewrite documents of a token window into PSM/SPM form.

Given a window of token ids (documents separated by end-of-text), each document piece is, with
probability ``rate``, decoded to text, cut at two character positions drawn uniformly, and
re-encoded as prefix-suffix-middle or (with probability ``spm_rate``) suffix-prefix-middle by
:meth:`CodeTokenizer.fim_ids`. The result is cut or padded (with the pad id) back to the
window's length. All draws come from the generator passed in, so the caller decides what the
output is a pure function of. Pieces whose decoded text contains U+FFFD (a window edge cut a
multi-byte character) are left unchanged rather than corrupted. Nothing is precomputed: the
rate can change between runs without re-preparing data.
"""

from __future__ import annotations

import numpy as np

from smallcode.tokenizer import CodeTokenizer


def fim_document(text: str, tok: CodeTokenizer, rng: np.random.Generator, spm_rate: float) -> list[int]:
    """One document in FIM form, split at two uniformly drawn character positions."""
    lo, hi = sorted(int(x) for x in rng.integers(0, len(text) + 1, size=2))
    mode = "spm" if rng.random() < spm_rate else "psm"
    return tok.fim_ids(text[:lo], text[lo:hi], text[hi:], mode=mode)


def apply_fim(
    window: np.ndarray, tok: CodeTokenizer, rng: np.random.Generator, rate: float, spm_rate: float = 0.5
) -> np.ndarray:
    """Return a window of the same length with a ``rate`` share of its document pieces in FIM form."""
    if rate <= 0.0:
        return window
    ends = np.flatnonzero(window == tok.eot_id)
    starts = np.concatenate([[0], ends + 1])
    stops = np.concatenate([ends, [window.size]])
    out: list[int] = []
    changed = False
    for i, (a, b) in enumerate(zip(starts, stops, strict=True)):
        piece = window[a:b]
        # Draw for every piece, even empty ones, so later pieces do not depend on earlier text.
        take = rng.random() < rate
        if take and piece.size:
            text = tok.decode(piece.tolist())
            if "\ufffd" not in text:
                out.extend(fim_document(text, tok, rng, spm_rate))
                changed = True
            else:
                out.extend(piece.tolist())
        else:
            out.extend(piece.tolist())
        if i < ends.size:
            out.append(tok.eot_id)
    if not changed:
        return window
    result = np.full(window.size, tok.pad_id, dtype=np.int64)
    n = min(len(out), window.size)
    result[:n] = out[:n]
    return result
