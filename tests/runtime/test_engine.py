"""The generation engine: batching, determinism, seeds, stop sequences, streaming, FIM, bad input."""

from __future__ import annotations

import json

import pytest
import torch

from factories import make_model  # type: ignore[import-not-found]
from smallcode.config import ConfigError
from smallcode.model.checkpoint import CheckpointError, save_checkpoint
from smallcode.runtime import Engine, SamplingParams
from smallcode.runtime.engine import GenerationError
from smallcode.runtime.formats import prompt_format
from smallcode.runtime.step import StepLimits

PROMPTS = ["def add(a, b):\n    return", "import json\n", "class Decoder:\n    def __init__(self"]


def naive_greedy(engine: Engine, prompt: str, max_tokens: int) -> list[int]:
    """Greedy decoding by re-running the full forward pass each step (no cache)."""
    ids = engine.tokenizer.encode(prompt)
    out: list[int] = []
    with torch.no_grad():
        for _ in range(max_tokens):
            nxt = int(engine.model(torch.tensor([ids + out])).logits[0, -1].argmax())
            if nxt == engine.tokenizer.eot_id:
                break
            out.append(nxt)
    return out


def test_greedy_equals_uncached_reference(engine: Engine) -> None:
    for prompt in PROMPTS:
        got = engine.generate(prompt, SamplingParams(max_tokens=24))[0]
        assert got.token_ids == naive_greedy(engine, prompt, 24)
        assert got.text == engine.tokenizer.decode(got.token_ids)


def test_greedy_equals_uncached_reference_past_the_window(infer_tokenizer) -> None:
    engine = Engine(make_model(window=8, n_global=2), infer_tokenizer)
    got = engine.generate(PROMPTS[2], SamplingParams(max_tokens=30))[0]
    assert got.token_ids == naive_greedy(engine, PROMPTS[2], 30)


def test_batched_equals_one_by_one(engine: Engine) -> None:
    for params in (SamplingParams(max_tokens=16), SamplingParams(max_tokens=16, temperature=0.9, top_k=50, seed=7)):
        batched = engine.generate(PROMPTS, params)
        for r, prompt in enumerate(PROMPTS):
            seed = None if params.seed is None else params.seed + r  # row r draws from seed + r
            alone = engine.generate(prompt, params.replace(seed=seed))[0]
            assert batched[r].token_ids == alone.token_ids


def test_greedy_is_deterministic_and_seed_fixes_sampling(engine: Engine) -> None:
    greedy = SamplingParams(max_tokens=12)
    assert engine.generate(PROMPTS, greedy) == engine.generate(PROMPTS, greedy)
    hot = SamplingParams(max_tokens=12, temperature=1.5, seed=3)
    a, b = engine.generate(PROMPTS[0], hot, n=4), engine.generate(PROMPTS[0], hot, n=4)
    assert [c.token_ids for c in a] == [c.token_ids for c in b]
    assert len({tuple(c.token_ids) for c in a}) > 1  # the n samples differ from each other
    other = engine.generate(PROMPTS[0], hot.replace(seed=4), n=4)
    assert [c.token_ids for c in other] != [c.token_ids for c in a]


def test_top_p_and_top_k_restrict_the_draw(engine: Engine) -> None:
    prompt = PROMPTS[0]
    greedy = engine.generate(prompt, SamplingParams(max_tokens=1))[0].token_ids
    # a nucleus this small or a single candidate always keeps only the most likely token
    for params in (SamplingParams(max_tokens=1, temperature=5.0, top_p=1e-6, seed=1),
                   SamplingParams(max_tokens=1, temperature=5.0, top_k=1, seed=1)):
        assert all(c.token_ids == greedy for c in engine.generate(prompt, params, n=5))


def test_stop_sequence_across_token_boundaries(engine: Engine) -> None:
    full = engine.generate(PROMPTS[1], SamplingParams(max_tokens=24))[0]
    pieces = [engine.tokenizer.decode([t]) for t in full.token_ids]
    # a stop string made of the end of token 3 and the start of token 4
    k = next(i for i in range(3, len(pieces) - 1) if len(pieces[i]) >= 1 and len(pieces[i + 1]) >= 1
             and "\ufffd" not in pieces[i] + pieces[i + 1])
    stop = pieces[k][-1] + pieces[k + 1][0]
    cut = full.text.find(stop)
    got = engine.generate(PROMPTS[1], SamplingParams(max_tokens=24, stop=[stop]))[0]
    assert got.finish_reason == "stop" and got.text == full.text[:cut]
    streamed = "".join(engine.stream(PROMPTS[1], SamplingParams(max_tokens=24, stop=[stop])))
    assert streamed == got.text


def test_stream_concatenates_to_generate(engine: Engine) -> None:
    params = SamplingParams(max_tokens=20, temperature=0.8, seed=11)
    deltas = list(engine.stream(PROMPTS[0], params))
    assert len(deltas) > 1 and "".join(deltas) == engine.generate(PROMPTS[0], params)[0].text


def test_fill_in_the_middle_uses_the_servers_fim_layout(engine: Engine, monkeypatch) -> None:
    tok = engine.tokenizer
    prefix, suffix = "def area(r):\n    return ", "\n\nprint(area(2))\n"
    got = engine.complete(prefix, suffix, SamplingParams(max_tokens=10))[0]
    prompt = prompt_format(tok).fim(prefix, suffix)  # what the server and the LSP send
    assert prompt[:2] == [tok.fim_prefix_id, tok.fim_suffix_id] and tok.fim_middle_id in prompt  # suffix first
    assert got.token_ids == engine.generate_ids([prompt], SamplingParams(max_tokens=10))[0].token_ids
    assert got.prompt_tokens == len(prompt)
    seen: list[list[list[int]]] = []
    generate_ids = engine.generate_ids

    def spy(ids: list[list[int]], *args: object, **kwargs: object) -> list:
        seen.append(ids)
        return generate_ids(ids, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(engine, "generate_ids", spy)
    engine.complete(prefix, suffix, SamplingParams(max_tokens=2))
    assert seen == [[prompt]]


class OneRow:
    """The engine's model as a step that declares it takes one row at a time (as ``HFStep`` does)."""

    limits = StepLimits(max_rows=1)

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model

    def __call__(self, input_ids: torch.Tensor, cache: object = None, last_only: bool = False) -> object:
        assert input_ids.shape[0] == 1, "more rows than the step declared"
        return self.model(input_ids, cache, last_only=last_only)

    def __getattr__(self, name: str) -> object:
        return getattr(self.model, name)


def test_a_one_row_step_decodes_the_rows_in_turn_with_the_same_samples(engine: Engine) -> None:
    one = OneRow(engine.model)
    single = Engine(one, engine.tokenizer)  # type: ignore[arg-type]
    params = SamplingParams(max_tokens=12, temperature=0.8, seed=5)
    want = engine.generate(PROMPTS[:2], params, n=2)
    assert single.generate(PROMPTS[:2], params, n=2) == want
    assert "".join(single.stream(PROMPTS[0], params)) == want[0].text


def test_eos_ends_a_row(engine: Engine, monkeypatch) -> None:
    model = engine.model
    calls = {"n": 0}
    original = model.forward

    def eot_after_three(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        calls["n"] += 1
        out = original(*args, **kwargs)
        if calls["n"] > 3:  # prefill + two decode steps, then end-of-text wins everywhere
            out.logits[..., engine.tokenizer.eot_id] += 1e4
        return out

    monkeypatch.setattr(model, "forward", eot_after_three)
    out = engine.generate(PROMPTS[:1], SamplingParams(max_tokens=10), n=3)
    assert [c.finish_reason for c in out] == ["eos"] * 3
    assert all(len(c.token_ids) == 3 and engine.tokenizer.eot_id not in c.token_ids for c in out)
    calls["n"] = 0
    out = engine.generate(PROMPTS[:1], SamplingParams(max_tokens=10, ignore_eos=True))
    assert out[0].finish_reason == "length" and len(out[0].token_ids) == 10


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"max_tokens": 0}, "max_tokens"), ({"max_tokens": -3}, "max_tokens"), ({"top_p": 0.0}, "top_p"),
    ({"top_p": 1.5}, "top_p"), ({"temperature": -1.0}, "temperature"), ({"stop": [""]}, "stop"),
])
def test_bad_sampling_params(kwargs: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        SamplingParams(**kwargs)


def test_bad_prompts(engine: Engine) -> None:
    with pytest.raises(GenerationError, match="empty prompt"):
        engine.generate("")
    with pytest.raises(GenerationError, match="empty prompt"):
        engine.complete("", "")
    small = Engine(engine.model, engine.tokenizer, max_context=50)
    with pytest.raises(GenerationError, match="allows 50"):
        small.generate("x = 1\n" * 40, SamplingParams(max_tokens=5))


def test_checkpoint_round_trip_and_mismatched_tokenizer(tmp_path, infer_tokenizer) -> None:
    tok_file = infer_tokenizer.save(tmp_path / "tok")
    model = make_model()
    save_checkpoint(model, tmp_path / "ck", tokenizer_file=tok_file, extra={"tokenizer_hash": infer_tokenizer.hash})
    engine = Engine.from_checkpoint(tmp_path / "ck")
    assert engine.generate(PROMPTS[0], SamplingParams(max_tokens=8)) == \
        Engine(model, infer_tokenizer).generate(PROMPTS[0], SamplingParams(max_tokens=8))
    # a model whose vocabulary is smaller than its tokenizer's
    save_checkpoint(make_model(vocab_size=300), tmp_path / "small", tokenizer_file=tok_file)
    with pytest.raises(GenerationError, match="do not belong together"):
        Engine.from_checkpoint(tmp_path / "small")
    # a tokenizer swapped after training
    meta = json.loads((tmp_path / "ck" / "config.json").read_text())
    (tmp_path / "ck" / "config.json").write_text(json.dumps({**meta, "tokenizer_hash": "0" * 64}))
    with pytest.raises(CheckpointError, match="differs"):
        Engine.from_checkpoint(tmp_path / "ck")
    (tmp_path / "ck" / "tokenizer.json").unlink()
    with pytest.raises(CheckpointError, match="tokenizer"):
        Engine.from_checkpoint(tmp_path / "ck")
