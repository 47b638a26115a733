"""Exact and near-duplicate removal.

Exact duplicates: identical UTF-8 content (sha256). Near duplicates: MinHash signatures of
word shingles, indexed by ``datasketch``'s LSH; a candidate found by LSH is confirmed by its
estimated Jaccard similarity before the document is dropped. The first document in corpus
order is kept, so the result is deterministic. Signatures are computed by
:func:`minhash_signature` (run in worker processes); the index itself lives in one process.
"""

from __future__ import annotations

import hashlib
import re

import numpy as np

_WORD = re.compile(r"\w+")
# Pinned so signatures from worker processes and the index agree (datasketch >= 2 has several).
MINHASH_SCHEME = "affine32"


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def shingles(text: str, n: int) -> list[bytes]:
    """Overlapping ``n``-word shingles (the whole text as one shingle when it has fewer words)."""
    words = _WORD.findall(text)
    if len(words) <= n:
        return [" ".join(words).encode("utf-8")]
    return [" ".join(words[i : i + n]).encode("utf-8") for i in range(len(words) - n + 1)]


def minhash_signature(text: str, num_perm: int, n_words: int) -> np.ndarray:
    """The MinHash signature (uint64, length ``num_perm``) of a text's word shingles; seed fixed."""
    from datasketch import MinHash

    m = MinHash(num_perm=num_perm, seed=1, scheme=MINHASH_SCHEME)
    m.update_batch(shingles(text, n_words))
    return m.hashvalues.copy()


class NearDuplicateIndex:
    """Keeps the first of every group of near-duplicate documents, in the order they are offered."""

    def __init__(self, threshold: float, num_perm: int) -> None:
        from datasketch import MinHashLSH

        self.threshold = threshold
        self.num_perm = num_perm
        self._lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
        self._signatures: dict[str, np.ndarray] = {}

    def _minhash(self, signature: np.ndarray):  # -> datasketch.LeanMinHash
        from datasketch import LeanMinHash

        return LeanMinHash(seed=1, hashvalues=signature, scheme=MINHASH_SCHEME)

    def offer(self, key: str, signature: np.ndarray) -> str | None:
        """Add a document; return the key of the kept document it duplicates, or None if it is new."""
        mh = self._minhash(signature)
        for other in sorted(self._lsh.query(mh)):
            # LSH candidates are probable; confirm with the estimated Jaccard similarity.
            if float(np.mean(self._signatures[other] == signature)) >= self.threshold:
                return other
        self._lsh.insert(key, mh)
        self._signatures[key] = signature
        return None
