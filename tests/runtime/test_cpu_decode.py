"""The compiled few-row CPU kernels against float64 references, and their build and fallback."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from smallcode.runtime import cpu_decode

# CI installs a C compiler (`make setup`): there the kernel must build, not quietly fall back.
if not cpu_decode.available():
    if os.environ.get("CI"):
        pytest.fail("the few-row CPU kernel did not build: is a C compiler installed (make setup)?",
                    pytrace=False)
    pytest.skip("no C compiler: the few-row CPU kernel is not built here", allow_module_level=True)


@pytest.fixture
def rebuilt() -> Iterator[None]:
    """Forget the loaded library before and after a test that changes how it is built."""
    cpu_decode.forget_kernel()
    yield
    cpu_decode.forget_kernel()


@settings(max_examples=60, deadline=None)
@given(M=st.integers(0, cpu_decode.MAX_ROWS), K=st.integers(1, 300), N=st.integers(1, 300),
       threads=st.sampled_from([1, 2]), seed=st.integers(0, 2**16))
def test_linear_matches_a_float64_product(M: int, K: int, N: int, threads: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(M, K, generator=g)
    w = torch.randn(N, K, generator=g) / K**0.5
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            assert cpu_decode.usable(x, w)
            got = cpu_decode.linear(x, w)
    finally:
        torch.set_num_threads(before)
    torch.testing.assert_close(got, (x.double() @ w.double().T).float(), atol=1e-5, rtol=1e-5)


def test_linear_covers_a_weight_large_enough_to_split_across_threads() -> None:
    x, w = torch.randn(3, 512), torch.randn(1000, 512) / 512**0.5  # past MIN_PARALLEL_WEIGHTS
    with torch.inference_mode():
        got = cpu_decode.linear(x.view(3, 1, 512), w)
    assert got.shape == (3, 1, 1000)
    torch.testing.assert_close(got.view(3, 1000), (x.double() @ w.double().T).float(), atol=1e-5, rtol=1e-5)


def test_linear_leaves_what_it_does_not_cover_to_torch() -> None:
    w = torch.randn(16, 8, requires_grad=True)
    x = torch.randn(4, 8)
    y = cpu_decode.linear(x, w)  # gradients wanted: torch's product, which backpropagates
    y.sum().backward()
    assert w.grad is not None
    with torch.inference_mode():
        assert not cpu_decode.usable(torch.randn(cpu_decode.MAX_ROWS + 1, 8), w)  # too many rows
        assert not cpu_decode.usable(x, w.detach().t().contiguous().t())  # not row-major
        assert not cpu_decode.usable(x.double(), w.detach().double())
        torch.testing.assert_close(cpu_decode.linear(x.double(), w.detach().double()),
                                   F.linear(x.double(), w.detach().double()))


def naive_moe(x: torch.Tensor, router: torch.Tensor, top_k: int, w_gate_up: torch.Tensor,
              w_down: torch.Tensor) -> torch.Tensor:
    """The definition, token by token, in float64: softmax routing, top-k renormalised, SwiGLU experts."""
    F_ = w_down.shape[-1]
    out = torch.zeros(x.shape, dtype=torch.float64)
    for n in range(x.shape[0]):
        probs = (router.double() @ x[n].double()).softmax(-1)
        chosen, ids = probs.topk(top_k)
        for p, e in zip((chosen / chosen.sum()).tolist(), ids.tolist(), strict=True):
            h = w_gate_up[e].double() @ x[n].double()
            out[n] += p * (w_down[e].double() @ (F.silu(h[:F_]) * h[F_:]))
    return out.float()


@settings(max_examples=30, deadline=None)
@given(N=st.integers(1, 12), E=st.integers(1, 6), D=st.integers(1, 40), F_=st.integers(1, 40),
       top_k=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_moe_matches_the_token_by_token_definition(N: int, E: int, D: int, F_: int, top_k: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    top_k = min(top_k, E)
    x = torch.randn(N, D, generator=g)
    router = torch.randn(E, D, generator=g)
    w_gate_up = torch.randn(E, 2 * F_, D, generator=g) / D**0.5
    w_down = torch.randn(E, D, F_, generator=g) / F_**0.5
    with torch.inference_mode():
        assert cpu_decode.moe_usable(x, router, w_gate_up, w_down)
        got = cpu_decode.moe(x, router, top_k, w_gate_up, w_down)
    torch.testing.assert_close(got, naive_moe(x, router, top_k, w_gate_up, w_down), atol=1e-5, rtol=1e-5)


def test_moe_refuses_a_top_k_it_cannot_route_and_shapes_that_do_not_fit() -> None:
    x, router, w_gate_up, w_down = torch.randn(2, 8), torch.randn(3, 8), torch.randn(3, 8, 8), torch.randn(3, 8, 4)
    with torch.inference_mode():
        with pytest.raises(ValueError, match="top_k must be in 1..3"):
            cpu_decode.moe(x, router, 4, w_gate_up, w_down)
        with pytest.raises(ValueError, match="do not fit one MoE layer"):
            cpu_decode.moe(x, router[:2], 2, w_gate_up, w_down)


def test_a_build_is_cached_by_source_and_reused(tmp_path, monkeypatch, rebuilt) -> None:
    monkeypatch.setenv("SMALLCODE_CACHE_DIR", str(tmp_path))
    assert cpu_decode.available()
    built = list(tmp_path.glob("few_rows-*.so"))
    assert len(built) == 1 and not list(tmp_path.glob(".few_rows-*"))  # no temporary left behind
    mtime = built[0].stat().st_mtime_ns
    cpu_decode.forget_kernel()
    assert cpu_decode.available() and built[0].stat().st_mtime_ns == mtime  # loaded, not rebuilt


def test_a_source_that_does_not_compile_falls_back_to_torch(tmp_path, monkeypatch, caplog, rebuilt) -> None:
    broken = tmp_path / "few_rows.c"
    broken.write_text("this is not C\n")
    monkeypatch.setattr(cpu_decode, "SOURCE", broken)
    monkeypatch.setenv("SMALLCODE_CACHE_DIR", str(tmp_path / "cache"))
    with caplog.at_level(logging.WARNING, logger="smallcode.runtime.cpu_decode"):
        assert not cpu_decode.available()
    assert "could not build few_rows.c" in caplog.text
    assert not list((tmp_path / "cache").glob("*.so")) and not list((tmp_path / "cache").glob(".few_rows-*"))
    x, w = torch.randn(2, 8), torch.randn(4, 8)
    with torch.inference_mode():
        assert not cpu_decode.usable(x, w)
        torch.testing.assert_close(cpu_decode.linear(x, w), F.linear(x, w))


def test_the_switch_turns_the_kernels_off(monkeypatch, rebuilt) -> None:
    monkeypatch.setenv("SMALLCODE_CPU_KERNELS", "0")
    assert not cpu_decode.available()


def test_a_compiler_that_is_not_there_falls_back_with_a_warning(tmp_path, monkeypatch, caplog, rebuilt) -> None:
    monkeypatch.setenv("CC", "no-such-compiler --quiet")
    monkeypatch.setenv("SMALLCODE_CACHE_DIR", str(tmp_path))
    with caplog.at_level(logging.WARNING, logger="smallcode.runtime.cpu_decode"):
        assert not cpu_decode.available()
    assert "could not build few_rows.c" in caplog.text and "no-such-compiler" in caplog.text
