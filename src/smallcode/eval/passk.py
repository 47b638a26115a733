"""The unbiased pass@k estimator (Chen et al., 2021) and its average over tasks.

pass@k = 1 - C(n - c, k) / C(n, k) for n samples of which c pass, written as a product so it
never forms huge binomials. Deliberately nothing else: counting passes is the runner's job.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping


def pass_at_k(n: int, c: int, k: int) -> float:
    """Probability that at least one of k samples drawn without replacement from n passes."""
    if not 0 <= c <= n:
        raise ValueError(f"need 0 <= c <= n, got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"need 1 <= k <= n, got n={n}, k={k}")
    if n - c < k:
        return 1.0
    prod = 1.0
    for i in range(n - c + 1, n + 1):
        prod *= 1.0 - k / i
    return 1.0 - prod


def mean_pass_at_k(counts: Mapping[str, tuple[int, int]] | Iterable[tuple[int, int]], k: int) -> float | None:
    """Mean of pass@k over tasks given ``(n, c)`` per task; None when some task has fewer than k samples."""
    pairs = list(counts.values()) if isinstance(counts, Mapping) else list(counts)
    if not pairs or any(n < k for n, _ in pairs):
        return None
    return sum(pass_at_k(n, c, k) for n, c in pairs) / len(pairs)
