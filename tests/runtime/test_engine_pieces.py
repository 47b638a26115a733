"""The step-level pieces the server's scheduler is built from: KVCache.truncate, PromptCache,
Prefill with reuse, and sampling.choose with per-row parameters."""

from __future__ import annotations

import pytest
import torch

from factories import make_model  # type: ignore[import-not-found]
from smallcode.model.kv_cache import KVCache
from smallcode.runtime import Engine, SamplingParams
from smallcode.runtime.engine import Prefill, PromptCache, Row
from smallcode.runtime.sampling import choose, sample

IDS = list(range(40, 80))


def cold_logits(engine: Engine, ids: list[int]) -> torch.Tensor:
    """Next-token logits after ``ids`` from one uncached forward pass."""
    with torch.no_grad():
        return engine.model(torch.tensor([ids])).logits[:, -1]


def fed(engine: Engine, ids: list[int]):
    cache = engine.model.new_cache(1, initial_slots=4)
    with torch.no_grad():
        engine.model(torch.tensor([ids]), cache)
    return cache


@pytest.mark.parametrize("n_global", [0, 2])
def test_truncate_then_feed_equals_a_cold_prefill(infer_tokenizer, n_global: int) -> None:
    engine = Engine(make_model(window=16, n_global=n_global), infer_tokenizer)
    cache = fed(engine, IDS[:14])  # the ring has not wrapped: any length can be gone back to
    for length in (1, 5, 13):
        assert cache.can_truncate(length)
        short = cache.truncate(length)
        other = [7, 8, 9]
        with torch.no_grad():
            got = engine.model(torch.tensor([other]), short).logits[:, -1]
        torch.testing.assert_close(got, cold_logits(engine, IDS[:length] + other), atol=1e-4, rtol=1e-4)
    assert int(cache.length[0]) == 14  # the original is untouched


def test_a_wrapped_ring_goes_back_only_as_far_as_it_holds(infer_tokenizer) -> None:
    engine = Engine(make_model(window=8, n_global=2), infer_tokenizer)
    cache = fed(engine, IDS[:30])
    # the query at 29 sees positions 22..28 (and the globals): all still in the ring
    assert cache.can_truncate(29)
    assert not cache.can_truncate(27)  # position 20 was overwritten by 28
    with pytest.raises(ValueError, match="cannot go back"):
        cache.truncate(27)
    with torch.no_grad():
        got = engine.model(torch.tensor([[5]]), cache.truncate(29)).logits[:, -1]
    torch.testing.assert_close(got, cold_logits(engine, IDS[:29] + [5]), atol=1e-4, rtol=1e-4)


def test_spare_slots_let_a_wrapped_ring_go_back_further(infer_tokenizer) -> None:
    engine = Engine(make_model(window=8, n_global=2), infer_tokenizer)
    p = engine.model.lm_head.weight
    cache = KVCache(engine.config, 1, dtype=p.dtype, initial_slots=4, spare=3)
    with torch.no_grad():
        engine.model(torch.tensor([IDS[:30]]), cache)
    assert cache.ring == 11  # the window and the spare slots
    assert cache.can_truncate(26) and not cache.can_truncate(25)  # back by spare + 1 at most
    with torch.no_grad():
        got = engine.model(torch.tensor([[5, 6]]), cache.truncate(26)).logits[:, -1]
    torch.testing.assert_close(got, cold_logits(engine, IDS[:26] + [5, 6]), atol=1e-4, rtol=1e-4)


def test_prompt_cache_lookup(engine: Engine) -> None:
    pc = PromptCache(10**9)
    assert pc.lookup(IDS[:10]) is None
    cache, logits = Prefill(engine, IDS[:10]).run()
    pc.put(IDS[:10], cache, logits)
    hit = pc.lookup(IDS[:10])  # the same prompt: nothing to feed, the stored logits come back
    assert hit is not None and hit[1] == 10 and hit[2] is not None
    torch.testing.assert_close(hit[2], logits)
    hit = pc.lookup(IDS[:14])  # an extension: the 10 cached positions, logits still to compute
    assert hit is not None and hit[1] == 10 and hit[2] is None
    hit = pc.lookup(IDS[:6] + [3, 4, 5])  # a shared start of 6: the cache goes back to it
    assert hit is not None and hit[1] == 6 and int(hit[0].length[0]) == 6
    assert pc.lookup([3] + IDS[1:10]) is None  # the first token differs
    hit = pc.lookup(IDS[:10])
    assert hit is not None
    hit[0].length += 1  # what comes back is a copy: the stored entry stays as it was
    assert int(pc.lookup(IDS[:10])[0].length[0]) == 10


def test_prompt_cache_drops_the_least_recently_used(engine: Engine) -> None:
    entries = {n: Prefill(engine, IDS[:n]).run() for n in (8, 9, 10)}
    size = max(c.nbytes() + lg.nelement() * 4 for c, lg in entries.values())
    pc = PromptCache(2 * size + 1)
    pc.put(IDS[:8], *entries[8])
    pc.put([1] + IDS[1:9], *entries[9])
    assert pc.lookup(IDS[:8]) is not None  # the first one is now the most recently used
    pc.put([2] + IDS[1:10], *entries[10])
    assert len(pc) == 2 and pc.nbytes <= pc.max_bytes
    assert pc.lookup([1] + IDS[1:9]) is None
    assert pc.lookup(IDS[:8]) is not None and pc.lookup([2] + IDS[1:10]) is not None
    tiny = PromptCache(16)  # an entry larger than the whole budget is not kept
    tiny.put(IDS[:8], *entries[8])
    assert len(tiny) == 0 and tiny.nbytes == 0


@pytest.mark.parametrize(("window", "n_global"), [(64, 0), (8, 0), (8, 2)])
def test_prefill_in_pieces_with_reuse_equals_cold(infer_tokenizer, window: int, n_global: int) -> None:
    engine = Engine(make_model(window=window, n_global=n_global), infer_tokenizer)
    pc = PromptCache(10**9)
    first = Prefill(engine, IDS[:30], chunk=8, prompt_cache=pc)
    _, logits = first.run()
    assert first.steps == 5 and first.cached_tokens == 0  # 8, 16, 22 (the tail), 24, 30
    torch.testing.assert_close(logits, cold_logits(engine, IDS[:30]), atol=1e-4, rtol=1e-4)
    # one more keystroke: the prompt grows; only the new tokens are fed
    grown = Prefill(engine, IDS[:33], chunk=8, prompt_cache=pc)
    assert grown.cached_tokens == 30
    torch.testing.assert_close(grown.run()[1], cold_logits(engine, IDS[:33]), atol=1e-4, rtol=1e-4)
    # the last tokens change (a word re-tokenized): the tail snapshot, or a truncation, is reused
    changed = IDS[:28] + [5, 6, 7]
    again = Prefill(engine, changed, chunk=8, prompt_cache=pc)
    assert again.cached_tokens >= 22
    torch.testing.assert_close(again.run()[1], cold_logits(engine, changed), atol=1e-4, rtol=1e-4)


def test_choose_with_mixed_params_equals_per_row_sample() -> None:
    torch.manual_seed(0)
    logits = torch.randn(7, 50) * 3
    params = [SamplingParams(), SamplingParams(temperature=0.7, top_k=5), SamplingParams(temperature=0.7, top_k=5),
              SamplingParams(temperature=1.3, top_p=0.8), SamplingParams(), SamplingParams(temperature=1.0),
              SamplingParams(temperature=0.7, top_k=5, top_p=0.5)]
    gens = [torch.Generator().manual_seed(b) for b in range(7)]
    tokens, logp = choose(logits, params, gens, logprobs=True)
    for b, p in enumerate(params):
        alone = sample(logits[b:b + 1], p, [torch.Generator().manual_seed(b)])
        assert int(tokens[b]) == int(alone[0])
    # logprobs are the model's own, whatever a row is sampled with
    assert logp is not None
    torch.testing.assert_close(logp, logits.log_softmax(-1))
    assert choose(logits, params, gens)[1] is None


@pytest.mark.parametrize(("temperature", "top_p"), [(1e-40, 1.0), (1e-30, 0.9), (1e-8, 0.5), (1.0, 5e-324),
                                                   (1.0, 1e-6), (1e-100, 1.0), (5e-324, 0.5)])
def test_extreme_temperature_or_top_p_is_greedy_not_an_error(temperature: float, top_p: float) -> None:
    torch.manual_seed(0)
    logits = torch.randn(4, 50) * 3
    params = [SamplingParams(temperature=temperature, top_p=top_p, top_k=k) for k in (0, 3, 0, 1)]
    tokens, _ = choose(logits, params, [torch.Generator().manual_seed(b) for b in range(4)])
    assert tokens.tolist() == logits.argmax(-1).tolist()


@pytest.mark.parametrize("end", ["eot_id", "end_of_turn_id"])
def test_a_row_ends_at_end_of_text_and_at_the_end_of_a_chat_turn(infer_tokenizer, end: str) -> None:
    """A fine-tuned model closes its chat turn with <|end|>: the completion ends there, without it."""
    tok = infer_tokenizer
    row = Row(3, SamplingParams(max_tokens=10))
    word = tok.encode("x")[0]
    row.push(word, tok)
    row.push(getattr(tok, end), tok)
    assert (row.finish, row.ids, row.text) == ("eos", [word], "x")
    ignoring = Row(3, SamplingParams(max_tokens=10, ignore_eos=True))
    ignoring.push(getattr(tok, end), tok)
    assert ignoring.finish is None and ignoring.ids == [getattr(tok, end)]
