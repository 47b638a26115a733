"""Decontamination: find training documents that share a long word sequence with a benchmark.

A document is contaminated when it shares a run of ``n`` consecutive words (13 by default, the
length the GPT-3/Codex-era decontaminations used) with any reference text: a benchmark's prompt,
reference solution or tests. Words here are not the model's tokens but maximal runs of word
characters (``\\w+``: identifiers, keywords, numbers); punctuation and whitespace only separate
them, so the test depends on neither the tokenizer nor the layout: ``foo(x, y)`` and ``foo( x,y )``
are both the three words ``foo x y``. Punctuation is not counted because 13 tokens of words and
punctuation are only five or six words of code, which many unrelated files share with a benchmark's
tests (literals such as ``(1, 2, 3, 4, 5, 6)``). For the same reason a reference run made of
numbers only (``0 1 2 ... 12``) is not compared: a table of numbers is no evidence of copying.

The reference texts' runs are hashed once (64 bits) into a sorted array
(:class:`ContaminationIndex`); a document is then one vectorised scan of its own run hashes
against it, in the data pipeline's worker processes. A match names the reference it came from.
Which suites to compare against is :class:`~smallcode.data.config.PrepareConfig`'s; the texts
come from :mod:`smallcode.tasks` through :func:`default_references`. This module reads no
benchmark file, and it neither edits nor partly keeps a contaminated document: the pipeline drops
it whole.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from smallcode.data.dedup import ngram_hashes, token_hashes

_WORD = re.compile(r"\w+")


def words(text: str) -> list[str]:
    """The words of a text as decontamination counts them (runs of word characters)."""
    return _WORD.findall(text)


def _informative(toks: list[str], n: int) -> np.ndarray:
    """For each run of ``n`` words, whether it holds anything but numbers."""
    not_number = np.fromiter((not t.isdigit() for t in toks), dtype=np.int64, count=len(toks))
    counts = np.concatenate([[0], np.cumsum(not_number)])
    return (counts[n:] - counts[:-n]) > 0


@dataclass(frozen=True)
class Contamination:
    """Why a document was dropped: the reference it overlaps and the first shared run of words."""

    reference: str
    ngram: str


class ContaminationIndex:
    """The hashed ``n``-word runs of a set of labelled reference texts (runs of numbers left out)."""

    def __init__(self, references: Mapping[str, str], n: int) -> None:
        if n < 1:
            raise ValueError(f"n-gram length must be >= 1, got {n}")
        self.n = n
        self.labels = list(references)
        hashes, owners = [], []
        for i, text in enumerate(references.values()):
            toks = words(text)
            h = ngram_hashes(token_hashes(toks), n)
            if h.size:
                h = h[_informative(toks, n)]
            hashes.append(h)
            owners.append(np.full(h.size, i, dtype=np.int64))
        all_hashes = np.concatenate(hashes) if hashes else np.zeros(0, dtype=np.uint64)
        all_owners = np.concatenate(owners) if owners else np.zeros(0, dtype=np.int64)
        # Stable sort: among equal hashes the first reference (in the given order) is found first.
        order = np.argsort(all_hashes, kind="stable")
        self._hashes = all_hashes[order]
        self._owners = all_owners[order]

    def __len__(self) -> int:
        """The number of reference n-grams (with repeats)."""
        return int(self._hashes.size)

    def match(self, text: str) -> Contamination | None:
        """The first ``n``-word run of ``text`` found in a reference, or None when there is none."""
        if not self._hashes.size:
            return None
        toks = words(text)
        doc = ngram_hashes(token_hashes(toks), self.n)
        if not doc.size:
            return None
        pos = np.searchsorted(self._hashes, doc)
        pos[pos == self._hashes.size] = 0
        hits = np.flatnonzero(self._hashes[pos] == doc)
        if not hits.size:
            return None
        first = int(hits[0])
        owner = int(self._owners[pos[first]])
        return Contamination(self.labels[owner], " ".join(toks[first : first + self.n]))


def default_references(suites: Sequence[str]) -> dict[str, str]:
    """The benchmark texts (prompts, reference solutions, tests) of ``suites``, labelled by task id.

    The one place they are looked up; everything else takes them as a parameter.
    """
    from smallcode.tasks import reference_texts

    return reference_texts(suites)
