"""Window + global attention against a naive full-mask reference, values and gradients."""

from __future__ import annotations

import math

import pytest
import torch

from smallcode.model.attention import blocked_window_attention, flex_window_attention


def naive(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int, n_global: int) -> torch.Tensor:
    """Textbook attention with an explicit T x T mask, written independently of the blocked kernel."""
    B, T, H, D = q.shape
    rep = H // k.shape[2]
    k = k.repeat_interleave(rep, dim=2)
    v = v.repeat_interleave(rep, dim=2)
    scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(D)
    allowed = torch.zeros(T, T, dtype=torch.bool)
    for i in range(T):
        for j in range(i + 1):
            allowed[i, j] = (i - j < window) or (j < n_global)
    scores = scores.masked_fill(~allowed, float("-inf"))
    return torch.einsum("bhqk,bkhd->bqhd", scores.softmax(-1), v)


CASES = [  # (T, window, n_global, block)
    (5, 8, 0, None),     # T < window
    (8, 8, 2, None),     # T == window
    (9, 8, 0, None),     # just past the window
    (40, 8, 0, None),    # T >> window, no globals
    (40, 8, 3, None),    # T >> window with globals
    (37, 8, 3, 5),       # ragged last block, block != window
    (50, 4, 6, 3),       # more globals than the window
    (33, 1, 1, None),    # window of one: each query sees itself and the global token
    (64, 16, 4, 16),
]


@pytest.mark.parametrize(("T", "window", "n_global", "block"), CASES)
@pytest.mark.parametrize(("H", "K"), [(4, 4), (4, 2), (6, 1)])
def test_blocked_matches_naive(T: int, window: int, n_global: int, block: int | None, H: int, K: int) -> None:
    g = torch.Generator().manual_seed(T * 100 + window)
    q = torch.randn(2, T, H, 8, generator=g, requires_grad=True)
    k = torch.randn(2, T, K, 8, generator=g, requires_grad=True)
    v = torch.randn(2, T, K, 8, generator=g, requires_grad=True)
    out = blocked_window_attention(q, k, v, window, n_global, block=block)
    ref = naive(q, k, v, window, n_global)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    go = torch.randn_like(out)
    grads = torch.autograd.grad(out, (q, k, v), go)
    grads_ref = torch.autograd.grad(ref, (q, k, v), go)
    for a, b in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
@pytest.mark.parametrize(("T", "window", "n_global"), [(24, 8, 0), (24, 8, 3), (6, 8, 2)])
def test_flex_matches_naive(T: int, window: int, n_global: int) -> None:
    q, k, v = torch.randn(1, T, 4, 16), torch.randn(1, T, 2, 16), torch.randn(1, T, 2, 16)
    out = flex_window_attention(q, k, v, window, n_global)
    torch.testing.assert_close(out, naive(q, k, v, window, n_global), atol=1e-5, rtol=1e-5)


def test_memory_grows_linearly_in_T() -> None:
    """The largest tensor the blocked path allocates is O(T * (block + window)), never T x T."""
    window, H = 64, 2
    peaks = {}
    for T in (1024, 4096):
        q, k, v = torch.randn(1, T, H, 16), torch.randn(1, T, H, 16), torch.randn(1, T, H, 16)
        largest = 0

        class Track(torch.utils._python_dispatch.TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
                nonlocal largest
                out = func(*args, **(kwargs or {}))
                for t in (out if isinstance(out, tuple | list) else (out,)):
                    if isinstance(t, torch.Tensor):
                        largest = max(largest, t.numel())
                return out

        with Track():
            blocked_window_attention(q, k, v, window, 4)
        peaks[T] = largest
    assert peaks[4096] <= 4.5 * peaks[1024]  # linear (x4), not quadratic (x16)
    assert peaks[4096] < 4096 * 4096 // 4
