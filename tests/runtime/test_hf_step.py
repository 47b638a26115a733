"""A tiny random Llama with a Qwen2.5-Coder-like tokenizer as a model step (``HFStep``), under the
plain Scheduler, the Engine, ``open_engine`` and the app."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from transformers import GenerationConfig, LlamaForCausalLM

from hf_tokenizers import codellama_like, family_tokenizer, tiny_llama_dir  # type: ignore[import-not-found]
from smallcode.runtime.engine import Engine, GenerationError
from smallcode.runtime.formats import HFFormat, HFTokenizer, hf_prompt_format
from smallcode.runtime.hf import HFStep, open_hf
from smallcode.runtime.load import open_engine
from smallcode.runtime.sampling import SamplingParams
from smallcode.runtime.scheduler import Event, RequestHandle, Scheduler

PROMPT = "def add(a, b):\n"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_llama_dir(tmp_path_factory.mktemp("hf-llama"), family_tokenizer("qwen2.5-coder"))


@pytest.fixture(scope="module")
def served(model_dir: Path) -> Iterator[tuple[Scheduler, HFFormat]]:
    scheduler, fmt = open_hf(model_dir, device="cpu", max_batch=4, max_queue=4)
    yield scheduler, fmt
    scheduler.close()


def run(handle: RequestHandle) -> tuple[list[Event], list[int], str]:
    events = list(handle)
    return events, [t for e in events for t in e.token_ids], "".join(e.text for e in events)


def reference(model_dir: Path, ids: list[int], n: int, eos: list[int] | None) -> list[int]:
    model = LlamaForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    config = GenerationConfig(max_new_tokens=n, do_sample=False, eos_token_id=eos, pad_token_id=0)
    out = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                         generation_config=config)
    return out[0, len(ids):].tolist()


def test_greedy_tokens_equal_generate(served: tuple[Scheduler, HFFormat], model_dir: Path) -> None:
    scheduler, fmt = served
    ids = fmt.encode(PROMPT)
    events, tokens, _ = run(scheduler.submit(ids, SamplingParams(max_tokens=24)))
    assert tokens == reference(model_dir, ids, 24, None)
    assert events[-1].finish_reason == "length"  # this random model happens to emit no stop id


def test_any_stop_id_ends_the_completion(served: tuple[Scheduler, HFFormat], model_dir: Path) -> None:
    scheduler, fmt = served
    ids = fmt.encode(PROMPT)
    _, tokens, _ = run(scheduler.submit(ids, SamplingParams(max_tokens=24)))
    # A format where the 4th greedy token is one more stop id (as a generation config's eos list adds).
    stop = tokens[3]
    assert stop not in tokens[:3]
    step = scheduler.engine.model
    assert isinstance(step, HFStep)
    other = Scheduler(Engine(step, HFTokenizer(hf_prompt_format(fmt.tokenizer, extra_stop_ids=[stop]))))
    try:
        events, stopped, text = run(other.submit(ids, SamplingParams(max_tokens=24)))
        ignoring, _, _ = run(other.submit(ids, SamplingParams(max_tokens=24, ignore_eos=True)))
    finally:
        other.close()
    assert events[-1].finish_reason == "eos" and stopped == tokens[:3]
    assert reference(model_dir, ids, 24, [stop]) == [*tokens[:3], stop]  # generate stops there too
    assert text == other.engine.tokenizer.decode(tokens[:3])
    assert [t for e in ignoring for t in e.token_ids] == tokens


def test_stop_string_cuts_the_text(served: tuple[Scheduler, HFFormat]) -> None:
    scheduler, fmt = served
    ids = fmt.encode(PROMPT)
    _, _, full = run(scheduler.submit(ids, SamplingParams(max_tokens=24, ignore_eos=True)))
    stop = next(c for c in full[2:] if c.isascii() and c.isprintable())
    events, _, text = run(scheduler.submit(ids, SamplingParams(max_tokens=24, ignore_eos=True, stop=[stop])))
    assert events[-1].finish_reason == "stop"
    assert text == full[: full.index(stop)]


def test_logprobs_cancel_and_time_limit(served: tuple[Scheduler, HFFormat]) -> None:
    scheduler, fmt = served
    ids = fmt.encode(PROMPT)
    events, tokens, _ = run(scheduler.submit(ids, SamplingParams(max_tokens=5, ignore_eos=True), logprobs=3))
    lps = [lp for e in events for lp in (e.logprobs or [])]
    assert len(lps) == len(tokens) == 5
    assert all(len(lp.top) == 3 and lp.logprob == pytest.approx(lp.top[0][1]) for lp in lps)  # greedy: the best

    handle = scheduler.submit(ids, SamplingParams(max_tokens=200, ignore_eos=True))
    it = iter(handle)
    next(it)
    handle.cancel()
    rest = list(it)
    assert rest[-1].finish_reason == "cancelled" and handle.completion_tokens < 200

    handle = scheduler.submit(ids, SamplingParams(max_tokens=200, ignore_eos=True), time_limit_s=0.02)
    events, _, _ = run(handle)
    assert events[-1].finish_reason == "timeout" and handle.completion_tokens < 200
    assert scheduler.metrics.value("smallcode_requests_total", outcome="cancelled") >= 1


def test_bad_requests_are_refused_before_any_work(served: tuple[Scheduler, HFFormat]) -> None:
    scheduler, fmt = served
    with pytest.raises(GenerationError, match="outside the vocabulary"):
        scheduler.submit([10**6], SamplingParams(max_tokens=2))
    with pytest.raises(GenerationError, match="allows 256"):
        scheduler.submit(fmt.encode(PROMPT), SamplingParams(max_tokens=250))


def test_app_infill_and_suffix_use_the_family_fim_layout(served: tuple[Scheduler, HFFormat],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from fastapi.testclient import TestClient

    from smallcode.serve.app import create_app

    scheduler, fmt = served
    seen: list[list[int]] = []
    submit = scheduler.submit

    def spy(ids: list[int], *args: object, **kwargs: object) -> RequestHandle:
        seen.append(list(ids))
        return submit(ids, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(scheduler, "submit", spy)
    client = TestClient(create_app(scheduler, fmt, model_name="tiny"))
    r = client.post("/infill", json={"input_prefix": "def f(", "input_suffix": "):\n", "n_predict": 3,
                                     "input_extra": [{"filename": "a.py", "text": "X = 1\n"}]})
    assert r.status_code == 200, r.text
    assert fmt.tokenizer.decode(seen[-1]) == \
        "<|file_sep|>a.py\nX = 1\n<|file_sep|><|fim_prefix|>def f(<|fim_suffix|>):\n<|fim_middle|>"
    r = client.post("/v1/completions", json={"model": "tiny", "prompt": "x = ", "suffix": "\n", "max_tokens": 3})
    assert r.status_code == 200, r.text
    assert seen[-1] == fmt.fim("x = ", "\n")
    assert fmt.tokenizer.decode(seen[-1]) == "<|fim_prefix|>x = <|fim_suffix|>\n<|fim_middle|>"
    assert r.json()["usage"]["prompt_tokens"] == len(seen[-1])


def test_continuation_text_keeps_its_leading_space() -> None:
    tok = codellama_like()
    ids = tok.encode(" x = 1", add_special_tokens=False)
    assert tok.decode(ids) == "x = 1"  # decoded alone, a SentencePiece text loses its first space
    assert HFTokenizer(hf_prompt_format(tok)).decode(ids) == " x = 1"


def test_open_hf_names_a_directory_it_cannot_load(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=str(tmp_path)):
        open_hf(tmp_path)


def test_open_engine_takes_an_hf_directory_and_its_engine_decodes_row_by_row(served: tuple[Scheduler, HFFormat],
                                                                             model_dir: Path) -> None:
    scheduler, fmt = served
    assert scheduler.max_batch == 1  # open_hf asked for 4; the step holds one row
    # transformers forced: a Llama directory is of a family smallcode imports onto its own engine
    # (tests/runtime/test_imported_tokenizer.py), which this test is not about
    engine = open_engine(model_dir, runtime="hf")
    assert isinstance(engine.model, HFStep) and isinstance(engine.tokenizer, HFTokenizer)
    prompts = [fmt.encode(PROMPT), fmt.encode("import os\n")]
    got = engine.generate_ids(prompts, SamplingParams(max_tokens=8, ignore_eos=True), n=2)
    want = [reference(model_dir, ids, 8, None) for ids in prompts]
    assert [c.token_ids for c in got] == [want[0], want[0], want[1], want[1]]
    fim = engine.complete("x = ", "\n", SamplingParams(max_tokens=2))[0]
    assert fim.prompt_tokens == len(fmt.fim("x = ", "\n"))  # the family's layout, as the server's


def test_the_scheduler_keeps_no_prompt_cache_for_the_step(served: tuple[Scheduler, HFFormat]) -> None:
    scheduler, fmt = served
    for _ in range(2):
        handle = scheduler.submit(fmt.encode(PROMPT), SamplingParams(max_tokens=2))
        run(handle)
        assert handle.cached_tokens == 0
    assert len(scheduler.prompt_cache) == 0
