"""Cached decoding against the full forward pass (float32, 1e-5)."""

from __future__ import annotations

import pytest
import torch

from smallcode.model import ModelConfig, SmallCodeLM
from smallcode.model.kv_cache import KVCache


def decode_all(model: SmallCodeLM, ids: torch.Tensor, prefill: int, initial_slots: int = 4) -> torch.Tensor:
    cache = model.new_cache(ids.shape[0], initial_slots=initial_slots)
    outs = [model(ids[:, :prefill], cache).logits]
    for t in range(prefill, ids.shape[1]):
        outs.append(model(ids[:, t : t + 1], cache).logits)
    return torch.cat(outs, dim=1)


@pytest.mark.parametrize(("n_global", "window", "T", "prefill"), [
    (0, 16, 12, 5),     # shorter than the window: an ordinary cache
    (2, 16, 12, 1),
    (0, 16, 90, 7),     # far longer than the window: the ring wraps several times
    (2, 16, 90, 40),    # a prefill longer than the window goes in chunks
    (4, 8, 70, 8),
    (3, 1, 20, 2),      # window of one
])
def test_cached_decoding_equals_full_forward(n_global: int, window: int, T: int, prefill: int) -> None:
    model = SmallCodeLM(ModelConfig.preset("tiny", n_global=n_global, window=window)).eval()
    ids = torch.randint(0, 256, (2, T))
    with torch.no_grad():
        torch.testing.assert_close(decode_all(model, ids, prefill), model(ids).logits, atol=1e-5, rtol=1e-5)


def test_memory_is_constant_once_the_window_is_full() -> None:
    model = SmallCodeLM(ModelConfig.preset("tiny", window=8, n_global=2)).eval()
    cache = model.new_cache(1, initial_slots=2)
    sizes = []
    with torch.no_grad():
        for _ in range(60):
            model(torch.randint(0, 256, (1, 1)), cache)
            sizes.append(cache.nbytes())
    assert sizes[-1] == sizes[20] and cache.ring == 8  # grew to window, then stayed
    assert int(cache.length) == 60 and int(cache.slot_pos.max()) == 59


def test_rows_of_different_lengths_batch_together() -> None:
    model = SmallCodeLM(ModelConfig.preset("tiny", window=8, n_global=2)).eval()
    a, b = torch.randint(0, 256, (1, 30)), torch.randint(0, 256, (1, 5))
    with torch.no_grad():
        ca, cb = model.new_cache(1), model.new_cache(1)
        model(a, ca)
        model(b, cb)
        both = KVCache.stack([ca, cb])
        nxt = torch.randint(0, 256, (2, 1))
        got = model(nxt, both).logits[:, -1]
        ref_a = model(torch.cat([a, nxt[:1]], 1)).logits[:, -1]
        ref_b = model(torch.cat([b, nxt[1:]], 1)).logits[:, -1]
    torch.testing.assert_close(got, torch.cat([ref_a, ref_b]), atol=1e-5, rtol=1e-5)


def test_select_fans_out_and_drops_rows() -> None:
    model = SmallCodeLM(ModelConfig.preset("tiny")).eval()
    with torch.no_grad():
        cache = model.new_cache(1)
        model(torch.randint(0, 256, (1, 20)), cache)
        fan = cache.select([0, 0, 0])
        out = model(torch.tensor([[1], [2], [3]]), fan).logits[:, -1]
        one = cache.select([0])
        torch.testing.assert_close(model(torch.tensor([[2]]), one).logits[:, -1], out[1:2], atol=1e-6, rtol=1e-6)



@pytest.mark.parametrize(("n_global", "window", "lengths"), [(2, 8, (20, 5)), (0, 8, (3, 30)), (3, 1, (9, 2))])
def test_decode_step_mask_equals_the_concatenating_mask(n_global: int, window: int, lengths: tuple[int, int]) -> None:
    """One token per row is written into its slot before attending; what it sees must not change."""
    model = SmallCodeLM(ModelConfig.preset("tiny", window=window, n_global=n_global)).eval()
    caches = []
    with torch.inference_mode():
        for n in lengths:
            c = model.new_cache(1, initial_slots=2)
            model(torch.randint(0, 256, (1, n)), c)
            caches.append(c)
        cache = KVCache.stack(caches)
        k_ptr = cache.k.data_ptr()
        pos = cache.positions(1)
        old = cache.attention_mask(pos, group=1)[:, 0, 0]  # (B, S + 1): [slots ; the new token]
        step = cache.step(1, group=2)
    assert step.in_place and step.mask.shape == (2, 1, 1, cache.k.shape[3])
    expected = old[:, :-1].clone()
    rows = torch.arange(2)
    expected[rows, step.slots[:, 0]] = old[:, -1]  # the new token replaces its slot's old occupant
    assert torch.equal(step.mask[:, 0, 0] == 0, expected)
    assert cache.length.tolist() == [n + 1 for n in lengths] and cache.k.data_ptr() == k_ptr
