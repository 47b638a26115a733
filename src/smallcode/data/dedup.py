"""Exact and near-duplicate removal.

Exact duplicates: identical UTF-8 content (sha256). Near duplicates: MinHash signatures of
word shingles (hashed with numpy, all shingles of a document at once, rather than one by one in
Python), indexed by ``datasketch``'s LSH; a candidate found by LSH is confirmed by its
estimated Jaccard similarity before the document is dropped. The first document in corpus
order is kept, so the result is deterministic. Signatures are computed by
:func:`minhash_signature` (run in worker processes); the index itself lives in one process.
The hashing of runs of words (:func:`ngram_hashes`) is also what decontamination compares.
"""

from __future__ import annotations

import hashlib
import re
import zlib
from collections.abc import Sequence

import numpy as np

_WORD = re.compile(r"\w+")
# datasketch (>= 2) wants to know which scheme produced hash values; ours are 32-bit affine
# permutations of 32-bit shingle hashes, which is what its "affine32" label stands for.
MINHASH_SCHEME = "affine32"


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def shingles(text: str, n: int) -> list[bytes]:
    """Overlapping ``n``-word shingles (the whole text as one shingle when it has fewer words)."""
    words = _WORD.findall(text)
    if len(words) <= n:
        return [" ".join(words).encode("utf-8")]
    return [" ".join(words[i : i + n]).encode("utf-8") for i in range(len(words) - n + 1)]


_MASK32 = np.uint64((1 << 32) - 1)
_ROW_BLOCK = 4096  # shingles per block, bounding memory at _ROW_BLOCK x num_perm uint64


def _permutations(num_perm: int) -> tuple[np.ndarray, np.ndarray]:
    # Fixed seed: signatures from any process or run are comparable.
    rng = np.random.default_rng(1)
    a = rng.integers(0, np.iinfo(np.uint64).max, size=num_perm, dtype=np.uint64, endpoint=True) | np.uint64(1)
    b = rng.integers(0, np.iinfo(np.uint64).max, size=num_perm, dtype=np.uint64, endpoint=True)
    return a, b


def token_hashes(tokens: Sequence[str]) -> np.ndarray:
    """A 32-bit hash (uint64 array) of each token; crc32 is the same in every process (unlike hash())."""
    return np.fromiter((zlib.crc32(t.encode("utf-8")) for t in tokens), dtype=np.uint64, count=len(tokens))


def ngram_hashes(hashes: np.ndarray, n: int) -> np.ndarray:
    """A 64-bit hash of each run of ``n`` consecutive token hashes (none when there are fewer)."""
    m = hashes.size - n + 1
    if m < 1 or n < 1:
        return np.zeros(0, dtype=np.uint64)
    h = np.zeros(m, dtype=np.uint64)
    mult = np.uint64(0x9E3779B97F4A7C15)
    with np.errstate(over="ignore"):
        # Polynomial in the token hashes with wrap-around uint64 arithmetic, order-sensitive.
        for k in range(n):
            h = h * mult + hashes[k : k + m] + np.uint64(k + 1)
    return h


def shingle_hashes(text: str, n: int) -> np.ndarray:
    """32-bit hashes of the ``n``-word shingles of a text (the same shingles as :func:`shingles`)."""
    words = _WORD.findall(text)
    if not words:
        words = [""]
    h = ngram_hashes(token_hashes(words), min(n, len(words)))
    return (h ^ (h >> np.uint64(32))) & _MASK32


def minhash_signature(text: str, num_perm: int, n_words: int) -> np.ndarray:
    """The MinHash signature (uint64, length ``num_perm``, values < 2**32) of a text's word shingles.

    Vectorised with numpy: shingle hashes once, then one multiply-shift hash per permutation
    (``(a * h + b) mod 2**64``, top 32 bits; ``a`` odd), all permutations at once, in blocks.
    """
    a, b = _permutations(num_perm)
    hashes = shingle_hashes(text, n_words)
    sig = np.full(num_perm, _MASK32, dtype=np.uint64)
    for i in range(0, hashes.size, _ROW_BLOCK):
        block = hashes[i : i + _ROW_BLOCK, None]
        with np.errstate(over="ignore"):
            values = (block * a + b) >> np.uint64(32)
        np.minimum(sig, values.min(axis=0), out=sig)
    return sig


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
