"""Fill-in-the-middle at batch time: rewrite documents of a token window into PSM/SPM form.

Given a window of token ids (documents separated by end-of-text), each document piece is, with
probability ``rate``, decoded to text, cut at two character positions drawn uniformly, and
re-encoded as prefix-suffix-middle or (with probability ``spm_rate``) suffix-prefix-middle by
:meth:`CodeTokenizer.fim_ids`. The result is cut or padded (with the pad id) back to the
window's length. All draws come from the generator passed in, so the caller decides what the
output is a pure function of. Pieces whose decoded text contains U+FFFD (a window edge cut a
multi-byte character) are left unchanged rather than corrupted. Nothing is precomputed: the
rate can change between runs without re-preparing data.

Files as context: a ``context_rate`` share of the FIM'd pieces take up to ``max_context_files``
plain pieces just before them in the window as other files of the same example, laid out by
:meth:`CodeTokenizer.context_ids` (``<|file_sep|>name\\ntext`` each, then the FIM document, then
end-of-text), which is the layout the server gives a request's ``input_extra``. Those pieces are
moved, not copied, so no text is seen twice in a window. A window holds no file paths, so the
names are placeholders (``file_1``, ``file_2``, ...): the model learns the layout, not paths.
"""

from __future__ import annotations

import numpy as np

from smallcode.tokenizer import CodeTokenizer


def fim_document(text: str, tok: CodeTokenizer, rng: np.random.Generator, spm_rate: float,
                 files: list[tuple[str, str]] | None = None) -> list[int]:
    """One document in FIM form, split at two uniformly drawn character positions, after ``files``."""
    lo, hi = sorted(int(x) for x in rng.integers(0, len(text) + 1, size=2))
    mode = "spm" if rng.random() < spm_rate else "psm"
    return tok.fim_ids(text[:lo], text[lo:hi], text[hi:], mode=mode, files=files or ())


def apply_fim(
    window: np.ndarray, tok: CodeTokenizer, rng: np.random.Generator, rate: float, spm_rate: float = 0.5,
    context_rate: float = 0.25, max_context_files: int = 3,
) -> np.ndarray:
    """Return a window of the same length with a ``rate`` share of its document pieces in FIM form,
    a ``context_rate`` share of those after earlier pieces of the window as context files."""
    if rate <= 0.0:
        return window
    ends = np.flatnonzero(window == tok.eot_id)
    starts = np.concatenate([[0], ends + 1])
    stops = np.concatenate([ends, [window.size]])
    # Each piece becomes one segment: its tokens, then end-of-text unless it is the window's tail.
    # A piece taken as context empties its segment and joins the FIM segment after it.
    segments: list[list[int]] = []
    plain: list[int] = []  # indices of plain, non-empty, whole segments not yet used (context candidates)
    changed = False
    for i, (a, b) in enumerate(zip(starts, stops, strict=True)):
        piece = window[a:b]
        tail = [tok.eot_id] if i < ends.size else []
        # Draw for every piece, even empty ones, so later pieces do not depend on earlier text.
        take = rng.random() < rate
        with_context = take and context_rate > 0.0 and rng.random() < context_rate
        text = tok.decode(piece.tolist()) if take and piece.size else ""
        if text and "\ufffd" not in text:
            files: list[tuple[str, str]] = []
            if with_context:
                used = plain[-max_context_files:]
                del plain[-max_context_files:]
                for j in used:
                    other = tok.decode(segments[j][:-1])
                    if "\ufffd" not in other:
                        files.append((f"file_{len(files) + 1}", other))
                        segments[j] = []
            segments.append(fim_document(text, tok, rng, spm_rate, files) + tail)
            changed = True
        else:
            if piece.size and tail:
                plain.append(len(segments))
            segments.append(piece.tolist() + tail)
    if not changed:
        return window
    out = [t for seg in segments for t in seg]
    result = np.full(window.size, tok.pad_id, dtype=np.int64)
    n = min(len(out), window.size)
    result[:n] = out[:n]
    return result
