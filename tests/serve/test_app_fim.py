"""Mistral's ``/v1/fim/completions`` as Continue's autocomplete calls it, bodies sent the way curl
sends them, and FIM asked of a model that has no FIM tokens."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from smallcode.runtime.engine import Engine
from smallcode.runtime.sampling import SamplingParams

PREFIX = "import json\n\n\ndef load(path):\n    with open(path) as f:\n        "
SUFFIX = "\n\n\ndef save(path, obj):\n    pass\n"
# What Continue's FIM-capable providers post (its fields for a default configuration).
CONTINUE_BODY = {"model": "tiny", "prompt": PREFIX, "suffix": SUFFIX, "max_tokens": 12, "temperature": 0,
                 "stop": ["\n\n\n"], "stream": True}


@pytest.fixture(scope="module")
def http(live: tuple[str, Any]) -> Any:
    with httpx.Client(base_url=live[0], timeout=60) as client:
        yield client


def greedy_fim(engine: Engine, prompt_format: Any, max_tokens: int, stop: list[str] | None = None) -> str:
    ids = prompt_format.fim(PREFIX, SUFFIX)
    return engine.generate_ids([ids], SamplingParams(max_tokens=max_tokens, temperature=0, stop=stop or []))[0].text


def sse(response: httpx.Response) -> list[Any]:
    lines = [line.removeprefix("data: ") for line in response.text.splitlines() if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    return [json.loads(line) for line in lines[:-1]]


def test_continue_style_streaming_fim(http: httpx.Client, reference: Engine, prompt_format: Any) -> None:
    response = http.post("/v1/fim/completions", json=CONTINUE_BODY)
    assert response.status_code == 200, response.text
    chunks = sse(response)
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == greedy_fim(reference, prompt_format, 12, ["\n\n\n"])
    assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")


def test_fim_without_streaming_is_a_chat_completion(http: httpx.Client, reference: Engine,
                                                     prompt_format: Any) -> None:
    body = {**CONTINUE_BODY, "stream": False, "stop": [], "random_seed": 3}
    response = http.post("/v1/fim/completions", json=body)
    assert response.status_code == 200, response.text
    data = response.json()
    assert data["object"] == "chat.completion"
    message = data["choices"][0]["message"]
    assert message["role"] == "assistant" and message["content"] == greedy_fim(reference, prompt_format, 12)
    assert data["usage"]["prompt_tokens"] == len(prompt_format.fim(PREFIX, SUFFIX))
    # the same request through OpenAI's completions with suffix: the same text
    same = http.post("/v1/completions", json={"prompt": PREFIX, "suffix": SUFFIX, "max_tokens": 12, "temperature": 0})
    assert same.json()["choices"][0]["text"] == message["content"]


@pytest.mark.parametrize(("field", "value"), [("min_tokens", 4), ("frequency_penalty", 0.5), ("logit_bias", {"1": 2})])
def test_fim_fields_it_does_not_implement_are_named(http: httpx.Client, field: str, value: Any) -> None:
    response = http.post("/v1/fim/completions", json={**CONTINUE_BODY, "stream": False, field: value})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == field


def test_a_body_sent_as_curl_sends_it_is_read_as_json(http: httpx.Client) -> None:
    body = {"prompt": "def foo(", "max_tokens": 3, "temperature": 0}
    as_json = http.post("/v1/completions", json=body).json()
    as_form = http.post("/v1/completions", content=json.dumps(body),
                        headers={"content-type": "application/x-www-form-urlencoded"})
    assert as_form.status_code == 200, as_form.text
    assert as_form.json()["choices"][0]["text"] == as_json["choices"][0]["text"]
    bad = http.post("/v1/completions", content=b"prompt=x",
                    headers={"content-type": "application/x-www-form-urlencoded"})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "json_invalid"


def test_fim_on_a_model_without_fim_tokens_is_a_400(tmp_path) -> None:
    from app_helpers import serve  # type: ignore[import-not-found]
    from transformers import LlamaConfig, LlamaForCausalLM

    from hf_tokenizers import family_tokenizer  # type: ignore[import-not-found]
    from smallcode.runtime.hf import open_hf
    from smallcode.serve.app import create_app

    tok = family_tokenizer("plain")
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                         eos_token_id=tok.eos_token_id, bos_token_id=None, pad_token_id=None)
    LlamaForCausalLM(config).save_pretrained(tmp_path / "hf")
    tok.save_pretrained(tmp_path / "hf")
    scheduler, fmt = open_hf(tmp_path / "hf")
    try:
        with serve(create_app(scheduler, fmt, model_name="plain")) as url:
            for route, body in (("/v1/completions", {"prompt": "a", "suffix": "b", "max_tokens": 2}),
                                ("/v1/fim/completions", {"prompt": "a", "suffix": "b", "max_tokens": 2}),
                                ("/infill", {"input_prefix": "a", "input_suffix": "b", "n_predict": 2})):
                response = httpx.post(url + route, json=body, timeout=60)
                assert response.status_code == 400, (route, response.text)
                assert response.json()["error"]["code"] == "fim_unsupported"
            plain = httpx.post(url + "/v1/completions", json={"prompt": "a", "max_tokens": 2}, timeout=60)
            assert plain.status_code == 200, plain.text
    finally:
        scheduler.close()
