"""Speculative decoding (``runtime.speculative``): the rolled-back cache is the cache that never saw the
rejected tokens; greedy output is plain decoding's token for token, hundreds of tokens past the
window, with prompt lookup and with draft models that agree often, sometimes or always; sampled output
keeps the model's distribution (the exact distribution computed by enumeration, compared by a
chi-square test); each row's ``k`` adapts and a row whose guesses fail pauses; the scheduler serves
speculating rows next to others with the same text, logprobs and cancellation; bad settings are refused
in one line."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from scipy.stats import chisquare

from factories import make_model  # type: ignore[import-not-found]
from smallcode.config import ConfigError
from smallcode.model import SmallCodeLM
from smallcode.runtime import Engine, SamplingParams
from smallcode.runtime.scheduler import Scheduler
from smallcode.runtime.speculative import (
    FIRST_PAUSE,
    PromptLookup,
    SpecRow,
    Speculation,
    SpeculationError,
)
from smallcode.tokenizer import CodeTokenizer

PROMPTS = [
    "def add(a, b):\n    return a + b\n\n\ndef add(a, b):\n",
    "import json\nimport os\n",
    "class Decoder:\n    def __init__(self",
]


@pytest.fixture(scope="module")
def tokenizer(tiny_tokenizer: CodeTokenizer) -> CodeTokenizer:
    return tiny_tokenizer


def engine(tokenizer: CodeTokenizer, speculate: Speculation | None = None, draft_scale: float | None = None,
           **overrides: object) -> Engine:
    """The test model, speculating with ``speculate``; a draft model is the test model at ``draft_scale``
    (at 4.0, the model itself; ``None``: a model whose vocabulary is shuffled, which never agrees)."""
    e = Engine(make_model(**overrides), tokenizer)
    if speculate is not None:
        draft = None
        if speculate.method == "draft":
            model = make_model(scale=draft_scale or 4.0, **overrides)
            if draft_scale is None:
                with torch.no_grad():
                    shuffled = torch.randperm(512, generator=torch.Generator().manual_seed(1))
                    model.lm_head.weight.copy_(model.lm_head.weight[shuffled])
            draft = Engine(model, tokenizer)
        e.speculate(speculate, draft)
    return e


def draft(k: int = 6) -> Speculation:
    return Speculation(method="draft", draft="the draft", k=k)


# ---------------------------------------------------------------------------------- the cache
def test_rewind_is_the_cache_that_never_saw_the_rejected_tokens() -> None:
    """Rows of different lengths go back by different amounts, after the ring has wrapped (window 16)
    and inside the global slots (a one-token prompt): the next token's logits are those of a cache fed
    only the kept tokens."""
    torch.manual_seed(0)
    model = make_model()
    model.eval()
    long_ids, short_ids = torch.randint(0, 512, (1, 40)), torch.randint(0, 512, (1, 1))
    extra = torch.randint(0, 512, (2, 6))
    with torch.no_grad():
        for drop in ([6, 2], [0, 5], [3, 6]):
            caches = []
            for ids in (long_ids, short_ids):
                c = model.new_cache(1, initial_slots=ids.shape[1], spare=7)
                model(ids, c)
                caches.append(c)
            cache = caches[0].stack(caches)
            model(extra, cache)
            cache.rewind(drop)
            nxt = torch.tensor([[7], [9]])
            got = model(nxt, cache).logits[:, -1]
            for b, ids in enumerate((long_ids, short_ids)):
                kept = torch.cat([ids, extra[b:b + 1, :6 - drop[b]], nxt[b:b + 1]], dim=1)
                want = model(kept).logits[0, -1]
                torch.testing.assert_close(got[b], want, atol=1e-4, rtol=1e-4)


def test_rewind_refuses_more_than_a_row_holds() -> None:
    model = make_model()
    cache = model.new_cache(1)
    with torch.no_grad():
        model(torch.tensor([[1, 2, 3]]), cache)
    with pytest.raises(ValueError, match="cannot drop"):
        cache.rewind([4])


# ---------------------------------------------------------------------------------- greedy: exact
@pytest.mark.parametrize("setup", ["ngram", "draft-often", "draft-always"])
def test_greedy_output_is_plain_decoding_token_for_token(tokenizer: CodeTokenizer, setup: str) -> None:
    """600 tokens per row, the window 16: hundreds of rewinds past the ring's wrap; three prompts of
    different lengths in one batch, and two samples of one prompt."""
    params = SamplingParams(max_tokens=600, ignore_eos=True)
    plain = engine(tokenizer)
    spec = {"ngram": lambda: engine(tokenizer, Speculation(k=8)),
            "draft-often": lambda: engine(tokenizer, draft(), draft_scale=3.0),
            "draft-always": lambda: engine(tokenizer, draft(), draft_scale=4.0)}[setup]()
    want = plain.generate(PROMPTS, params)
    got = spec.generate(PROMPTS, params)
    for w, g in zip(want, got, strict=True):
        assert g.token_ids == w.token_ids
    stats = spec.spec_stats
    if setup == "draft-always":  # the draft is the model: every guess is right
        assert stats.accepted == stats.proposed > 1000
    else:  # many guesses kept and many rolled back
        assert stats.accepted >= 20 and stats.proposed - stats.accepted >= 20
    pair = spec.generate(PROMPTS[0], SamplingParams(max_tokens=80, ignore_eos=True), n=2)
    assert [c.token_ids for c in pair] == [want[0].token_ids[:80]] * 2


# ---------------------------------------------------------------------------------- sampled: the model's distribution
def chi_square_p(observed: list[int], probs: list[float]) -> float:
    """The chi-square test's p-value of ``observed`` counts against probabilities ``probs`` (a last cell
    of probability ~0 is dropped)."""
    if probs[-1] < 1e-9:
        observed, probs = observed[:-1], probs[:-1]
    total, mass = sum(observed), sum(probs)
    return float(chisquare(observed, [p / mass * total for p in probs]).pvalue)


def exact_distribution(model: SmallCodeLM, prompt: list[int], length: int, params: SamplingParams
                       ) -> dict[tuple[int, ...], float]:
    """P(first ``length`` tokens) under plain sampling with ``params`` (top-k keeps it enumerable)."""
    from smallcode.runtime.sampling import probabilities

    out: dict[tuple[int, ...], float] = {(): 1.0}
    for _ in range(length):
        nxt: dict[tuple[int, ...], float] = {}
        with torch.no_grad():
            for seq, p in out.items():
                logits = model(torch.tensor([prompt + list(seq)])).logits[:, -1]
                probs = probabilities(logits, [params])[0]
                for t in probs.nonzero().flatten().tolist():
                    nxt[(*seq, t)] = p * float(probs[t])
        out = nxt
    return out


@pytest.mark.parametrize("setup", ["draft", "ngram"])
def test_sampled_output_keeps_the_model_distribution(tokenizer: CodeTokenizer, setup: str) -> None:
    """3000 samples of the first three tokens (top-k 4 at temperature 1.2: 64 sequences) against the
    exact distribution, by a chi-square test; guesses were both accepted and rejected."""
    params = SamplingParams(max_tokens=3, temperature=1.2, top_k=4, ignore_eos=True, seed=1234)
    if setup == "draft":
        spec = engine(tokenizer, draft(k=4), draft_scale=1.0)  # a draft that disagrees often
        prompt = tokenizer.encode("def add(a, b):\n    return")
    else:  # every id occurs in the prompt: prompt lookup has a guess whatever the first token
        spec = engine(tokenizer, Speculation(k=4, ngram_min=1))
        every = torch.randperm(512, generator=torch.Generator().manual_seed(2)).tolist()
        prompt = every + tokenizer.encode("x = 1\ny")
    n = 3000
    got = Counter(tuple(c.token_ids) for c in spec.generate_ids([prompt], params, n=n))
    want = exact_distribution(make_model(), prompt, 3, params)
    assert set(got) <= set(want)
    cells = sorted(want, key=want.__getitem__, reverse=True)
    big = [c for c in cells if want[c] * n >= 5]
    observed = [got[c] for c in big] + [n - sum(got[c] for c in big)]
    expected = [want[c] for c in big] + [max(0.0, 1 - sum(want[c] for c in big))]
    assert chi_square_p(observed, expected) > 1e-3
    stats = spec.spec_stats
    if setup == "draft":
        assert 0 < stats.accepted < stats.proposed
    else:  # the guesses (whatever followed the first token in a shuffled prompt) are rejected and resampled
        assert stats.proposed == n


@pytest.mark.parametrize("proposer", ["draft", "lookup"])
def test_the_accept_rule_is_exact(proposer: str) -> None:
    """The rule alone, over many draws, on a 5-token support: a draft's guesses drawn from q far from
    p, or prompt lookup's one fixed guess (q one-hot) that p gives 0.2."""
    from smallcode.runtime.speculative import Guesses, Speculator

    params = SamplingParams(temperature=1.0)
    p_logits = torch.full((2, 8), float("-inf"))
    p_logits[:, :5] = torch.log(torch.tensor([0.5, 0.2, 0.15, 0.1, 0.05]))
    q = torch.zeros(1, 8)
    q[0, :5] = torch.tensor([0.05, 0.1, 0.15, 0.2, 0.5])
    spec = Speculator(Speculation(), make_model(), None, only_decodable=lambda logits: logits)
    gen = torch.Generator().manual_seed(0)
    firsts: Counter[int] = Counter()
    n = 3000
    dist_q = torch.distributions.Categorical(probs=q[0])
    torch.manual_seed(0)
    for _ in range(n):
        if proposer == "draft":
            a = spec.accept(p_logits, Guesses([[int(dist_q.sample())]], [q]), 0, params, gen, logprobs=False)
        else:
            a = spec.accept(p_logits, Guesses([[1]]), 0, params, gen, logprobs=False)
        firsts[a.tokens[0]] += 1
    assert chi_square_p([firsts[t] for t in range(5)], [0.5, 0.2, 0.15, 0.1, 0.05]) > 1e-3


# ---------------------------------------------------------------------------------- adaptivity
def test_k_grows_while_guesses_hold_and_a_failing_row_pauses() -> None:
    row = SpecRow(Speculation(k=8), [1, 2, 3], max_tokens=1000)
    assert row.wanted() == 4
    row.record(4, 4)
    assert row.k == 6
    row.record(6, 6)
    row.record(8, 8)
    assert row.k == 8  # at most the setting
    row.record(8, 2)
    assert row.k == 7 and row.wanted() == 7
    rounds = 0
    while row.pause == 0:
        row.record(row.k, 0)
        rounds += 1
    assert rounds <= 3 and row.pause == FIRST_PAUSE and row.wanted() == 0
    row.extend([5] * FIRST_PAUSE)
    assert row.wanted() == 1  # back, small
    while row.pause == 0:
        row.record(1, 0)
    assert row.pause == 2 * FIRST_PAUSE  # the next pause is longer
    short = SpecRow(Speculation(k=8), [1], max_tokens=3)
    short.extend([2, 3])
    assert short.wanted() == 0  # one token left: nothing to guess past it


def test_prompt_lookup_proposes_what_followed_the_latest_longest_match() -> None:
    lookup = PromptLookup(1, 3)
    tokens = [1, 2, 3, 4, 9, 2, 3, 5, 6, 7, 2, 3]
    assert lookup.propose(tokens, 3) == [5, 6, 7]  # [2, 3] last occurred before 5
    assert lookup.propose([*tokens, 5, 6, 1, 2, 3], 2) == [4, 9]  # the longest match wins over later shorter ones
    assert PromptLookup(1, 3).propose([8, 8, 7], 2) == []  # no earlier 7
    assert PromptLookup(2, 3).propose([1, 2, 3, 2], 4) == []  # one token is below ngram_min


def test_a_random_model_free_generation_mostly_stops_guessing(tokenizer: CodeTokenizer) -> None:
    """A draft that never agrees: its rows pause, so the model runs far fewer verification calls
    than decode steps."""
    spec = engine(tokenizer, draft(k=8), draft_scale=None)
    params = SamplingParams(max_tokens=400, ignore_eos=True)
    out = spec.generate(PROMPTS[1], params)[0]
    assert out.token_ids == engine(tokenizer).generate(PROMPTS[1], params)[0].token_ids
    assert spec.spec_stats.steps < 400 / 4


# ---------------------------------------------------------------------------------- the scheduler
def test_the_scheduler_serves_speculating_rows_with_plain_text_and_logprobs(tokenizer: CodeTokenizer) -> None:
    plain = engine(tokenizer)
    spec = engine(tokenizer, Speculation(k=6))
    params = [SamplingParams(max_tokens=m, ignore_eos=True) for m in (200, 120, 60)]
    want = [plain.generate(p, q)[0] for p, q in zip(PROMPTS, params, strict=True)]
    scheduler = Scheduler(spec)
    try:
        handles = [scheduler.submit(tokenizer.encode(p), q, logprobs=2) for p, q in zip(PROMPTS, params, strict=True)]
        results = []
        for h in handles:
            ids, lps = [], []
            for ev in h:
                ids += ev.token_ids
                lps += ev.logprobs or []
            results.append((ids, lps, h.finish_reason))
        m = scheduler.metrics
        proposed = m.value("smallcode_speculative_proposed_tokens_total")
        accepted = m.value("smallcode_speculative_accepted_tokens_total")
    finally:
        scheduler.close()
    for w, (ids, lps, finish) in zip(want, results, strict=True):
        assert ids == w.token_ids and finish == "length"
        assert len(lps) == len(ids) and all(lp.token == tokenizer.decode([t]) for lp, t in zip(lps, ids, strict=True))
    # logprobs are the model's: compare the first request's with a full forward
    ids, lps, _ = results[0]
    prompt = tokenizer.encode(PROMPTS[0])
    with torch.no_grad():
        ref = plain.model(torch.tensor([prompt + ids])).logits[0, len(prompt) - 1:-1].log_softmax(-1)
    assert max(abs(lp.logprob - float(ref[i, t])) for i, (lp, t) in enumerate(zip(lps, ids, strict=True))) < 1e-3
    assert 0 < accepted <= proposed and accepted == spec.spec_stats.accepted


def test_cancelling_a_speculating_request_ends_it(tokenizer: CodeTokenizer) -> None:
    scheduler = Scheduler(engine(tokenizer, Speculation()))
    try:
        handle = scheduler.submit(tokenizer.encode(PROMPTS[0]), SamplingParams(max_tokens=2000, ignore_eos=True))
        seen = 0
        for ev in handle:
            seen += len(ev.token_ids)
            if seen >= 20:
                handle.cancel()
        assert handle.finish_reason == "cancelled" and seen < 2000
        again = scheduler.submit(tokenizer.encode(PROMPTS[1]), SamplingParams(max_tokens=30, ignore_eos=True))
        assert sum(len(ev.token_ids) for ev in again) == 30
    finally:
        scheduler.close()


# ---------------------------------------------------------------------------------- refused
@pytest.mark.parametrize("fields,match", [({"k": 0}, "k must be"), ({"k": 17}, "k must be"),
                                         ({"ngram_min": 3, "ngram_max": 2}, "ngram_min"),
                                         ({"method": "draft"}, "draft model directory")])
def test_bad_settings_are_refused(fields: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        Speculation(**fields)


def test_parse_takes_what_the_option_takes() -> None:
    assert Speculation.parse("ngram", k=3) == Speculation(k=3)
    assert Speculation.parse("draft:/models/d") == Speculation(method="draft", draft="/models/d")
    for bad in ("draft:", "eagle", ""):
        with pytest.raises(ConfigError, match="ngram' or 'draft:DIR"):
            Speculation.parse(bad)


def test_a_draft_with_another_tokenizer_is_refused(tokenizer: CodeTokenizer, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Same size, other merges (trained on other files): refused by name, before any work."""
    from factories import STDLIB, TOKENIZER_VOCAB  # type: ignore[import-not-found]
    from smallcode.tokenizer import load_tokenizer
    from smallcode.tokenizer.train import train_tokenizer

    train_tokenizer([STDLIB / "email"], TOKENIZER_VOCAB, tmp_path, show_progress=False)
    other = load_tokenizer(tmp_path)
    assert other.vocab_size == tokenizer.vocab_size
    target = Engine(make_model(), tokenizer)
    with pytest.raises(SpeculationError, match="the draft has another tokenizer"):
        target.speculate(draft(), Engine(make_model(), other))


def test_a_model_that_cannot_rewind_is_refused(tokenizer: CodeTokenizer) -> None:
    from smallcode.runtime.step import StepLimits

    target = Engine(make_model(), tokenizer)
    target.limits = StepLimits(max_rows=1, speculation=False)
    with pytest.raises(SpeculationError, match="cannot go back"):
        target.speculate(Speculation())


def test_a_draft_with_a_shorter_context_is_refused(tokenizer: CodeTokenizer) -> None:
    target = Engine(make_model(), tokenizer, max_context=1000)
    with pytest.raises(SpeculationError, match="the draft covers 500 positions, the model 1000"):
        target.speculate(draft(), Engine(make_model(), tokenizer, max_context=500))
