"""The OpenAI API of the server through the official ``openai`` client, on the shared live server:
what comes back is what the engine generates alone for the same prompt tokens."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from smallcode.runtime.engine import Completion, Engine
from smallcode.runtime.sampling import SamplingParams


@pytest.fixture(scope="module")
def client(live: tuple[str, Any]) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{live[0]}/v1", api_key="unused", max_retries=0, timeout=60)


def alone(engine: Engine, ids: list[int], max_tokens: int, **sampling: Any) -> Completion:
    params = SamplingParams(max_tokens=max_tokens, temperature=sampling.pop("temperature", 0.0), **sampling)
    return engine.generate_ids([ids], params)[0]


def test_completion_of_a_string_is_the_engines_greedy_output(client: openai.OpenAI, reference: Engine,
                                                             prompt_format: Any) -> None:
    got = client.completions.create(model="tiny", prompt="def foo(", max_tokens=12, temperature=0)
    want = alone(reference, prompt_format.encode("def foo("), 12)
    assert got.object == "text_completion" and got.model == "tiny"
    assert [c.text for c in got.choices] == [want.text]
    assert got.choices[0].finish_reason == {"eos": "stop"}.get(want.finish_reason, want.finish_reason)
    assert got.usage.prompt_tokens == len(prompt_format.encode("def foo("))
    assert got.usage.completion_tokens == len(want.token_ids)
    assert got.usage.total_tokens == got.usage.prompt_tokens + got.usage.completion_tokens


def test_a_list_of_prompts_with_n_gives_prompt_major_choices(client: openai.OpenAI, reference: Engine,
                                                             prompt_format: Any) -> None:
    prompts = ["import json\n", "x = 1\n"]
    got = client.completions.create(model="tiny", prompt=prompts, n=2, max_tokens=6, temperature=0)
    assert [c.index for c in got.choices] == [0, 1, 2, 3]
    want = [alone(reference, prompt_format.encode(p), 6).text for p in prompts]
    assert [c.text for c in got.choices] == [want[0], want[0], want[1], want[1]]  # greedy: samples agree
    assert got.usage.prompt_tokens == sum(len(prompt_format.encode(p)) for p in prompts)
    assert got.usage.completion_tokens == 4 * 6


def test_suffix_makes_a_fill_in_the_middle_prompt(client: openai.OpenAI, reference: Engine,
                                                  prompt_format: Any) -> None:
    got = client.completions.create(model="tiny", prompt="def add(a, b):\n    ", suffix="\n\nprint(add(1, 2))\n",
                                    max_tokens=10, temperature=0)
    ids = prompt_format.fim("def add(a, b):\n    ", "\n\nprint(add(1, 2))\n")
    assert got.usage.prompt_tokens == len(ids)
    assert got.choices[0].text == alone(reference, ids, 10).text


def test_a_seed_reproduces_samples_and_each_sample_draws_its_own(client: openai.OpenAI) -> None:
    def ask() -> list[str]:
        got = client.completions.create(model="tiny", prompt="class A:\n", n=3, max_tokens=24, temperature=1.0,
                                        seed=1234)
        return [c.text for c in got.choices]

    first = ask()
    assert ask() == first
    assert len(set(first)) == 3
    other = client.completions.create(model="tiny", prompt="class A:\n", max_tokens=24, temperature=1.0, seed=99)
    assert other.choices[0].text not in first


def test_stop_ends_the_text_before_the_stop_string(client: openai.OpenAI, reference: Engine,
                                                   prompt_format: Any) -> None:
    full = alone(reference, prompt_format.encode("x = 1\n"), 40).text
    stop = full[10:13]
    got = client.completions.create(model="tiny", prompt="x = 1\n", max_tokens=40, temperature=0, stop=[stop])
    assert got.choices[0].text == full[:full.index(stop)]
    assert got.choices[0].finish_reason == "stop"


@pytest.mark.parametrize("sampling", [{"temperature": 1e-100}, {"temperature": 1e-40}, {"temperature": 1e-6},
                                      {"top_p": 5e-324}, {"top_p": 1e-6}, {"temperature": 5e-324, "top_p": 5e-324}])
def test_extreme_sampling_values_sample_the_greedy_choice(client: openai.OpenAI, sampling: dict[str, float]) -> None:
    # Found by the schema fuzz: dividing logits by a temperature this small overflows (or, below
    # float32's range, divides by 0), and a top_p below float32's range rounds to 0. The limit of
    # sampling, in each, is the argmax.
    kwargs: dict[str, Any] = {"model": "tiny", "prompt": "def foo(", "max_tokens": 6, "seed": 3}
    got = client.completions.create(**kwargs, **sampling)
    assert got.choices[0].text == client.completions.create(**kwargs, temperature=0).choices[0].text


def test_max_tokens_caps_the_completion(client: openai.OpenAI) -> None:
    got = client.completions.create(model="tiny", prompt="import json\n", max_tokens=5, temperature=0)
    assert got.usage.completion_tokens == 5
    assert got.choices[0].finish_reason == "length"


def test_logprobs_give_the_chosen_token_and_at_most_k_alternatives(client: openai.OpenAI) -> None:
    got = client.completions.create(model="tiny", prompt="def foo(", max_tokens=6, temperature=0, logprobs=3)
    lp = got.choices[0].logprobs
    assert lp is not None and len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == 6
    assert "".join(lp.tokens) == got.choices[0].text
    assert lp.text_offset == [sum(len(t) for t in lp.tokens[:i]) for i in range(6)]
    for token, logprob, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs, strict=True):
        assert 1 <= len(top) <= 3 and logprob <= 0
        assert max(top.values()) == pytest.approx(logprob, abs=1e-4)  # greedy: the chosen token is the best
        assert token in top
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model="tiny", prompt="def foo(", max_tokens=2, logprobs=6)
    assert e.value.param == "logprobs"


def test_chat_goes_through_the_chat_template(client: openai.OpenAI, reference: Engine, prompt_format: Any) -> None:
    messages = [{"role": "system", "content": "You write Python."}, {"role": "user", "content": "Sort a list."}]
    got = client.chat.completions.create(model="tiny", messages=messages, max_tokens=10, temperature=0,
                                         logprobs=True, top_logprobs=2)
    ids = prompt_format.chat(messages)
    assert got.object == "chat.completion"
    assert got.usage.prompt_tokens == len(ids)
    message = got.choices[0].message
    assert message.role == "assistant" and message.content == alone(reference, ids, 10).text
    content = got.choices[0].logprobs.content
    assert "".join(c.token for c in content) == message.content
    assert all(1 <= len(c.top_logprobs) <= 2 for c in content)
    # "developer" is OpenAI's newer name for the system role.
    developer = [{**messages[0], "role": "developer"}, messages[1]]
    again = client.chat.completions.create(model="tiny", messages=developer, max_tokens=10, temperature=0)
    assert again.choices[0].message.content == message.content


def test_streamed_completions_add_up_to_the_whole_answer(client: openai.OpenAI) -> None:
    kwargs: dict[str, Any] = {"model": "tiny", "prompt": ["def foo(", "x = 1\n"], "n": 2, "max_tokens": 16,
                              "temperature": 0.9, "seed": 5}
    whole = client.completions.create(**kwargs)
    texts, finishes, usage = ["", "", "", ""], [None] * 4, None
    for chunk in client.completions.create(**kwargs, stream=True, stream_options={"include_usage": True}):
        if chunk.usage is not None:
            assert chunk.choices == []
            usage = chunk.usage
            continue
        for c in chunk.choices:
            assert finishes[c.index] is None  # nothing after a choice's finishing chunk
            texts[c.index] += c.text
            finishes[c.index] = c.finish_reason
    assert texts == [c.text for c in whole.choices]
    assert finishes == [c.finish_reason for c in whole.choices]
    assert usage is not None and usage.model_dump() == whole.usage.model_dump()


def test_streamed_chat_adds_up_to_the_whole_answer(client: openai.OpenAI) -> None:
    kwargs: dict[str, Any] = {"model": "tiny", "messages": [{"role": "user", "content": "hello"}],
                              "max_tokens": 12, "temperature": 0}
    whole = client.chat.completions.create(**kwargs)
    chunks = list(client.chat.completions.create(**kwargs, stream=True))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == whole.choices[0].message.content
    assert chunks[-1].choices[0].finish_reason == whole.choices[0].finish_reason
    assert all(c.usage is None for c in chunks)  # no usage chunk unless asked for


@pytest.mark.parametrize(("fields", "param"), [
    ({"best_of": 2}, "best_of"),
    ({"echo": True, "suffix": "\n"}, "echo"),
    ({"logit_bias": {"1": 5.0}}, "logit_bias"),
])
def test_unsupported_fields_are_400s_naming_the_field(client: openai.OpenAI, fields: dict[str, Any],
                                                      param: str) -> None:
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model="tiny", prompt="x", max_tokens=2, **fields)
    assert e.value.status_code == 400
    assert e.value.param == param and e.value.code == "unsupported"
    assert param in e.value.message


def test_models_lists_the_served_model(client: openai.OpenAI) -> None:
    assert [m.id for m in client.models.list()] == ["tiny"]
