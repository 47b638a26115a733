"""llama.cpp's native routes beside ``/infill`` (``/completion``, ``/tokenize``, ``/detokenize``,
``/props``, ``/slots``, ``/health``) through httpx on the shared live server, with the bodies that
llama.cpp clients send, checked against the tokenizer, the reference engine and the OpenAI route."""

from __future__ import annotations

import json
import threading
from typing import Any

import httpx
import pytest
import torch
from app_helpers import CONTEXT  # type: ignore[import-not-found]

from smallcode.runtime.engine import Engine, Prefill
from smallcode.runtime.sampling import SamplingParams
from smallcode.serve.protocol import MAX_SEED

PROMPT = "import json\n\n\ndef load(path):\n    with open(path) as f:\n        return "

# What Continue's llama.cpp provider posts (continuedev/continue, core/llm/llms/LlamaCpp.ts,
# _streamComplete and _convertArgs): the model, the prompt, stream: true and its completion options
# under llama.cpp's names; options the user left unset are undefined, which JSON.stringify drops.
# It reads `content` of every event.
CONTINUE_BODY = {"model": "tiny", "prompt": PROMPT, "stream": True, "n_predict": 24, "stop": ["\n\n\n"],
                 "top_k": 40, "top_p": 0.95, "temperature": 0}

# What Tabby's llama.cpp binding posts for code completion (TabbyML/tabby,
# crates/http-api-bindings/src/completion/llama.rs, CompletionRequest): the seed is a millisecond clock
# (crates/tabby-inference/src/lib.rs, default_seed), temperature 0.1 and presence_penalty 0.0 are its
# code-completion defaults (crates/tabby-inference/src/code.rs and completion.rs), and penalty_last_n,
# a name llama.cpp does not read, is sent as 0. It parses every event as {content, stop} and stops at
# stop: true.
TABBY_BODY = {"seed": 1765153200123, "prompt": PROMPT, "n_predict": 16, "temperature": 0.1, "stream": True,
              "penalty_last_n": 0, "presence_penalty": 0.0}

# The fields of a final /completion answer (llama.cpp tools/server/server-task.cpp,
# server_task_result_cmpl_final::to_json_non_oaicompat).
FINAL_FIELDS = {"index", "content", "tokens", "id_slot", "stop", "model", "tokens_predicted", "tokens_evaluated",
                "generation_settings", "prompt", "has_new_line", "truncated", "stop_type", "stopping_word",
                "tokens_cached", "timings"}
TIMINGS = {"cache_n", "prompt_n", "prompt_ms", "prompt_per_token_ms", "prompt_per_second", "predicted_n",
           "predicted_ms", "predicted_per_token_ms", "predicted_per_second"}


@pytest.fixture(scope="module")
def http(live: tuple[str, Any]) -> Any:
    with httpx.Client(base_url=live[0], timeout=120) as client:
        yield client


def greedy(engine: Engine, ids: list[int], max_tokens: int, stop: list[str] | None = None) -> str:
    params = SamplingParams(max_tokens=max_tokens, temperature=0, stop=stop or [])
    return engine.generate_ids([ids], params)[0].text


def complete(http: httpx.Client, path: str = "/completion", **body: Any) -> Any:
    response = http.post(path, json={"temperature": 0, **body})
    assert response.status_code == 200, response.text
    return response.json()


def events(http: httpx.Client, body: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    with http.stream("POST", "/completion", json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            assert line != "data: [DONE]"  # llama.cpp's streams have none
            if line.startswith("data: "):
                out.append(json.loads(line[len("data: "):]))
    return out


def assert_error(response: httpx.Response, status: int, param: str | None = None) -> str:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    if param is not None:
        assert error["param"] == param
    return error["message"]


# ---------------------------------------------------------------------- /completion
def test_continues_streaming_body_gets_llamacpps_events(http: httpx.Client, reference: Engine,
                                                          prompt_format: Any) -> None:
    got = events(http, CONTINUE_BODY)
    assert got and all(e["stop"] is False for e in got[:-1]) and got[-1]["stop"] is True
    for e in got[:-1]:
        assert isinstance(e["content"], str) and e["content"] and e["index"] == 0
        assert {"tokens", "tokens_predicted", "tokens_evaluated"} <= set(e)
    assert FINAL_FIELDS <= set(got[-1])
    expected = greedy(reference, prompt_format.encode(PROMPT), 24, ["\n\n\n"])
    assert "".join(e["content"] for e in got) == expected
    tokens = [t for e in got for t in e["tokens"]]
    assert len(tokens) == got[-1]["tokens_predicted"]


def test_tabbys_streaming_body_samples_as_the_engine_does(http: httpx.Client, reference: Engine,
                                                           prompt_format: Any) -> None:
    got = events(http, TABBY_BODY)
    for e in got:  # Tabby's CompletionResponseChunk: a string content and a boolean stop
        assert isinstance(e["content"], str) and isinstance(e["stop"], bool)
    assert got[-1]["stop"] is True and not any(e["stop"] for e in got[:-1])
    # llama.cpp's sampling defaults (top_k 40, top_p 0.95) with Tabby's temperature and seed.
    params = SamplingParams(max_tokens=16, temperature=0.1, top_k=40, top_p=0.95, seed=TABBY_BODY["seed"] % MAX_SEED)
    expected = reference.generate_ids([prompt_format.encode(PROMPT)], params)[0].text
    assert "".join(e["content"] for e in got) == expected


def test_the_answer_is_the_openai_routes_and_has_llamacpps_fields(http: httpx.Client, prompt_format: Any) -> None:
    got = complete(http, prompt=PROMPT, n_predict=12)
    assert FINAL_FIELDS <= set(got) and TIMINGS <= set(got["timings"])
    openai = http.post("/v1/completions", json={"prompt": PROMPT, "max_tokens": 12, "temperature": 0}).json()
    assert got["content"] == openai["choices"][0]["text"]
    ids = prompt_format.encode(PROMPT)
    assert got["tokens_evaluated"] == len(ids) == openai["usage"]["prompt_tokens"]
    assert got["tokens_predicted"] == len(got["tokens"]) == openai["usage"]["completion_tokens"]
    assert prompt_format.decode(got["tokens"]) == got["content"]
    assert got["stop"] is True and got["model"] == "tiny" and got["index"] == 0
    assert got["stop_type"] in ("limit", "eos") and got["stopping_word"] == ""
    assert got["prompt"] == prompt_format.decode(ids) and got["has_new_line"] == ("\n" in got["content"])
    settings = got["generation_settings"]
    assert settings["n_ctx"] == CONTEXT and settings["n_predict"] == 12 and settings["temperature"] == 0
    assert got["timings"]["predicted_n"] == got["tokens_predicted"]
    assert got["timings"]["prompt_n"] + got["timings"]["cache_n"] == got["tokens_evaluated"]
    assert complete(http, "/completions", prompt=PROMPT, n_predict=12)["content"] == got["content"]  # the alias


def test_token_ids_and_mixed_prompts_read_as_text_does(http: httpx.Client, reference: Engine,
                                                       prompt_format: Any) -> None:
    ids = prompt_format.encode(PROMPT)
    by_text = complete(http, prompt=PROMPT, n_predict=10)
    by_ids = complete(http, prompt=ids, n_predict=10)
    assert by_ids["content"] == by_text["content"] and by_ids["tokens_evaluated"] == len(ids)
    # A mixed prompt: ids, then text encoded on its own (no sequence start: it does not open the prompt).
    head, tail = ids[:5], "x = load('a.json')\n"
    mixed = complete(http, prompt=[*head, tail], n_predict=8)
    expected_ids = head + prompt_format.encode(tail)
    assert mixed["tokens_evaluated"] == len(expected_ids)
    assert mixed["content"] == greedy(reference, expected_ids, 8)
    # Several prompts: one answer each, in order, with their index.
    many = complete(http, prompt=[PROMPT, ids[:7]], n_predict=6)
    assert isinstance(many, list) and [a["index"] for a in many] == [0, 1]
    assert many[0]["content"] == greedy(reference, ids, 6) and many[1]["content"] == greedy(reference, ids[:7], 6)


def test_a_stream_of_several_prompts_tags_each_event_with_its_index(http: httpx.Client, reference: Engine,
                                                                    prompt_format: Any) -> None:
    ids = prompt_format.encode(PROMPT)
    got = events(http, {"prompt": [PROMPT, ids[:9]], "n_predict": 8, "n_cmpl": 2, "temperature": 0, "stream": True})
    assert sorted(e["index"] for e in got if e["stop"]) == [0, 1, 2, 3]  # prompt-major, n_cmpl each
    texts = ["".join(e["content"] for e in got if e["index"] == i) for i in range(4)]
    assert texts[0] == texts[1] == greedy(reference, ids, 8)
    assert texts[2] == texts[3] == greedy(reference, ids[:9], 8)


def test_a_stop_string_is_the_stopping_word(http: httpx.Client, reference: Engine, prompt_format: Any) -> None:
    full = greedy(reference, prompt_format.encode(PROMPT), 30)
    stop = full[6:9]
    assert stop and full.index(stop) == 6, "the test needs a continuation whose 7th-9th characters come first there"
    got = complete(http, prompt=PROMPT, n_predict=30, stop=[stop, "never there"])
    assert got["content"] == full[:6]
    assert got["stop_type"] == "word" and got["stopping_word"] == stop


def test_n_probs_are_the_models_distribution(http: httpx.Client, reference: Engine, prompt_format: Any,
                                             tokenizer: Any) -> None:
    ids = prompt_format.encode(PROMPT)
    got = complete(http, prompt=ids, n_predict=4, n_probs=5)
    probs = got["completion_probabilities"]
    assert len(probs) == len(got["tokens"]) == 4
    for entry, token in zip(probs, got["tokens"], strict=True):
        assert entry["id"] == token and bytes(entry["bytes"]).decode("utf-8", "replace").startswith(entry["token"])
        top = entry["top_logprobs"]
        assert 1 <= len(top) <= 5 and [t["logprob"] for t in top] == sorted((t["logprob"] for t in top), reverse=True)
        assert sum(torch.tensor([t["logprob"] for t in top]).exp().tolist()) <= 1 + 1e-5
        assert top[0]["id"] == token and top[0]["logprob"] == pytest.approx(entry["logprob"])  # greedy
    # The first token's: a softmax of the model's logits after the prompt, by hand.
    _, logits = Prefill(reference, ids).run()
    logp = torch.log_softmax(logits[0].float(), dim=-1)
    values, best = logp.topk(5)
    first = probs[0]["top_logprobs"]
    known = [t for t in first if t["id"] >= 0]  # -1: a text that several tokens share
    assert [t["id"] for t in known] == [i for i in best.tolist() if i in {t["id"] for t in known}]
    for t in known:
        assert t["logprob"] == pytest.approx(float(logp[t["id"]]), abs=1e-4)
    assert probs[0]["logprob"] == pytest.approx(float(values[0]), abs=1e-4)
    # A stream carries each event's tokens' probabilities.
    streamed = events(http, {"prompt": ids, "n_predict": 4, "n_probs": 5, "temperature": 0, "stream": True})
    flat = [p for e in streamed for p in e.get("completion_probabilities", [])]
    assert [p["id"] for p in flat] == got["tokens"]


def test_n_predict(http: httpx.Client, prompt_format: Any) -> None:
    until_end = complete(http, prompt=PROMPT, n_predict=-1)
    assert until_end["tokens_predicted"] <= 256  # the shared server's max_tokens
    above = complete(http, prompt=PROMPT, n_predict=10_000)  # clamped to the cap, as llama.cpp clamps to -n
    assert above["content"] == until_end["content"]
    only_prompt = complete(http, prompt=PROMPT, n_predict=0)
    assert only_prompt["content"] == "" and only_prompt["tokens"] == [] and only_prompt["tokens_predicted"] == 0
    assert only_prompt["tokens_evaluated"] == len(prompt_format.encode(PROMPT))
    again = complete(http, prompt=PROMPT, n_predict=1)
    assert again["tokens_cached"] > 0  # n_predict 0 put the prompt in the cache
    assert not again["truncated"]
    # A prompt that leaves 5 positions of the context: the generation is cut there, as llama.cpp's.
    long = prompt_format.encode("x = 1\n" * CONTEXT)[:CONTEXT - 5]
    cut = complete(http, prompt=long, n_predict=50, ignore_eos=True)
    assert cut["tokens_predicted"] == 5 and cut["truncated"] is True and cut["stop_type"] == "limit"


def test_samplers_it_lacks_are_refused_only_where_they_would_change_the_output(http: httpx.Client) -> None:
    base = {"prompt": PROMPT, "n_predict": 2}
    for field, value in (("min_p", 0.05), ("typical_p", 0.9), ("mirostat", 2), ("repeat_penalty", 1.1),
                         ("presence_penalty", 0.5), ("frequency_penalty", 0.1), ("logit_bias", [[5, -1.0]]),
                         ("grammar", "root ::= \"a\""), ("post_sampling_probs", True), ("dry_multiplier", 0.8)):
        response = http.post("/completion", json={**base, "temperature": 0.8, field: value})
        assert "not supported" in assert_error(response, 400, field)
    greedy_filters = {"temperature": 0, "min_p": 0.05, "typical_p": 0.9, "mirostat": 2}
    assert http.post("/completion", json={**base, **greedy_filters}).status_code == 200
    penalties_off = {"repeat_last_n": 0, "repeat_penalty": 1.1, "presence_penalty": 0.5, "temperature": 0.8}
    assert http.post("/completion", json={**base, **penalties_off}).status_code == 200
    neutral = {"min_p": 0.0, "repeat_penalty": 1.0, "presence_penalty": 0.0, "samplers": ["top_k", "top_p"],
               "cache_prompt": False, "id_slot": -1, "n_keep": 0, "temperature": 0.8}
    assert http.post("/completion", json={**base, **neutral}).status_code == 200


def test_bad_prompts_and_n_predict_are_400s(http: httpx.Client) -> None:
    assert_error(http.post("/completion", json={"prompt": []}), 400, "prompt")
    message = assert_error(http.post("/completion", json={"prompt": [1, 2, 10**9, -3]}), 400, "prompt")
    assert "1000000000" in message and "-3" in message
    assert_error(http.post("/completion", json={"prompt": [1, [2, 3]]}), 400, "prompt")
    assert_error(http.post("/completion", json={"prompt": [[1, [2]]]}), 400, "prompt")
    assert_error(http.post("/completion", json={"prompt": {"text": "x"}}), 400, "prompt")
    assert_error(http.post("/completion", json={"prompt": "x", "n_predict": -2}), 400, "n_predict")
    assert_error(http.post("/completion", json={"prompt": "x", "n_predict": "8"}), 400, "n_predict")
    assert_error(http.post("/completion", json={"prompt": "x" * (CONTEXT * 8)}), 400, "prompt")


def test_response_fields_keep_the_named_ones(http: httpx.Client) -> None:
    got = complete(http, prompt=PROMPT, n_predict=3, response_fields=["content", "generation_settings/n_predict",
                                                                        "nothing"])
    assert set(got) == {"content", "generation_settings/n_predict"} and got["generation_settings/n_predict"] == 3


# ---------------------------------------------------------------------- /tokenize and /detokenize
def test_tokenize_is_the_tokenizer(http: httpx.Client, tokenizer: Any) -> None:
    text = "def naïve(x):\n    return x → 1  # ünïcode 😀\n"
    got = http.post("/tokenize", json={"content": text}).json()
    assert got == {"tokens": tokenizer.encode(text)}
    assert http.post("/tokenize", json={"content": text, "add_special": True}).json() == got  # ours has no BOS
    pieces = http.post("/tokenize", json={"content": text, "with_pieces": True}).json()["tokens"]
    assert [p["id"] for p in pieces] == got["tokens"]
    raw = b"".join(p["piece"].encode("utf-8") if isinstance(p["piece"], str) else bytes(p["piece"]) for p in pieces)
    assert raw == text.encode("utf-8")  # the pieces spell the text, byte for byte
    for p in pieces:
        if isinstance(p["piece"], list):  # llama.cpp gives bytes only where they are not valid UTF-8
            with pytest.raises(UnicodeDecodeError):
                bytes(p["piece"]).decode("utf-8")
        else:
            assert tokenizer.decode([p["id"]]) == p["piece"]
    assert any(isinstance(p["piece"], list) for p in pieces), "the test needs a token that splits a character"


def test_detokenize_is_the_tokenizer_and_names_ids_out_of_range(http: httpx.Client, tokenizer: Any) -> None:
    ids = tokenizer.encode("for i in range(10):\n    print(i)\n")
    assert http.post("/detokenize", json={"tokens": ids}).json() == {"content": tokenizer.decode(ids)}
    assert http.post("/detokenize", json={"tokens": []}).json() == {"content": ""}
    vocab = tokenizer.vocab_size
    message = assert_error(http.post("/detokenize", json={"tokens": [1, vocab, -1]}), 400, "tokens")
    assert str(vocab) in message and "-1" in message
    assert_error(http.post("/detokenize", json={"tokens": ["a"]}), 400)


# ---------------------------------------------------------------------- /props, /slots, /health
def test_props(http: httpx.Client, live: tuple[str, Any]) -> None:
    got = http.get("/props").json()
    scheduler = live[1]
    assert got["total_slots"] == scheduler.max_batch
    settings = got["default_generation_settings"]
    assert settings["n_ctx"] == CONTEXT and settings["is_processing"] is False
    assert settings["params"]["temperature"] == pytest.approx(0.8) and settings["params"]["top_k"] == 40
    assert got["model_alias"] == got["model_path"] == "tiny"
    assert "{%" in got["chat_template"] and got["build_info"].startswith("smallcode ")
    assert_error(http.post("/props", json={}), 501)


def test_slots_show_a_running_request(http: httpx.Client, live: tuple[str, Any], prompt_format: Any) -> None:
    scheduler = live[1]
    idle = http.get("/slots").json()
    assert len(idle) == scheduler.max_batch and not any(s["is_processing"] for s in idle)
    assert [s["id"] for s in idle] == list(range(scheduler.max_batch)) and idle[0]["n_ctx"] == CONTEXT
    seen: list[list[dict[str, Any]]] = []
    started = threading.Event()

    def watch() -> None:
        started.wait(60)
        with httpx.Client(base_url=live[0], timeout=60) as client:
            for _ in range(200):
                slots = client.get("/slots").json()
                if any(s["is_processing"] for s in slots):
                    seen.append(slots)
                    return

    watcher = threading.Thread(target=watch)
    watcher.start()
    ids = prompt_format.encode(PROMPT)
    body = {"prompt": ids, "n_predict": 200, "temperature": 0, "ignore_eos": True, "stream": True}
    with http.stream("POST", "/completion", json=body) as response:
        for line in response.iter_lines():
            if line.startswith("data: "):
                started.set()
    watcher.join(60)
    assert seen, "no /slots answer showed the request while it ran"
    busy = [s for s in seen[0] if s["is_processing"]]
    assert len(busy) == 1 and busy[0]["n_prompt_tokens"] == len(ids) and busy[0]["state"] in ("prefilling", "decoding")
    assert 0 <= busy[0]["next_token"]["n_decoded"] <= 200
    assert busy[0]["next_token"]["n_remain"] == 200 - busy[0]["next_token"]["n_decoded"]
    assert scheduler.slots() == []  # the request is over
    assert_error(http.post("/slots/0?action=save", json={"filename": "a.bin"}), 501, "action")
    assert_error(http.post("/slots/0?action=explode"), 400, "action")


def test_scheduler_slots_show_each_running_request_once(live: tuple[str, Any], prompt_format: Any) -> None:
    scheduler = live[1]
    ids = prompt_format.encode(PROMPT * 4)
    params = SamplingParams(max_tokens=150, temperature=0, ignore_eos=True)
    handles = [scheduler.submit(ids, params), scheduler.submit(ids[:20], params)]
    seen = []
    while any(h.finish_reason is None for h in handles):
        views = scheduler.slots()
        assert len(views) <= 2
        seen += views
    assert seen, "no view showed the running requests"
    for view in seen:
        assert view.state in ("prefilling", "decoding") and view.prompt_tokens in (len(ids), 20)
        assert view.params.max_tokens == 150 and 0 <= view.completion_tokens <= 150
        if view.state == "prefilling":
            assert view.completion_tokens == 0
    assert scheduler.slots() == []


def test_health_is_llamacpps(http: httpx.Client) -> None:
    """llama.cpp answers 503 while loading (tools/server/README.md, GET /health); Tabby's supervisor
    waits for a 2xx (crates/llama-cpp-server/src/supervisor.rs) and llama.vscode reads ``status``
    (src/llama-server.ts, checkHealth), so the 503's body says ``status`` too."""
    from app_helpers import serve  # type: ignore[import-not-found]

    from smallcode.serve.app import create_app

    for path in ("/health", "/v1/health"):
        response = http.get(path)
        assert response.status_code == 200 and response.json() == {"status": "ok"}
    with serve(create_app(None, None, api_key="k")) as url:
        for path in ("/health", "/v1/health"):  # open without the key, as llama.cpp's
            loading = httpx.get(url + path)
            assert loading.status_code == 503 and loading.headers["Retry-After"] == "1"
            assert loading.json()["status"] == "loading" and loading.json()["error"]["type"] == "unavailable_error"
        assert httpx.get(url + "/props", headers={"Authorization": "Bearer k"}).status_code == 503
        assert httpx.post(url + "/tokenize", json={"content": "x"}).status_code == 401


# ---------------------------------------------------------------------- a transformers tokenizer with a BOS
@pytest.fixture(scope="module")
def hf_served(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A tiny transformers Llama with DeepSeek-Coder's special tokens (a BOS opens every prompt) behind the app."""
    from app_helpers import serve  # type: ignore[import-not-found]

    from hf_tokenizers import family_tokenizer, tiny_llama_dir  # type: ignore[import-not-found]
    from smallcode.runtime.hf import open_hf
    from smallcode.serve.app import create_app

    tok = family_tokenizer("deepseek-coder")
    scheduler, fmt = open_hf(tiny_llama_dir(tmp_path_factory.mktemp("hf"), tok))
    try:
        with serve(create_app(scheduler, fmt, model_name="ds")) as url, httpx.Client(base_url=url, timeout=120) as c:
            yield c, tok
    finally:
        scheduler.close()


def test_a_bos_opens_text_prompts_only(hf_served: Any) -> None:
    http, tok = hf_served
    text = "def add(a, b):\n    return a + b  # é\n"
    plain = http.post("/tokenize", json={"content": text}).json()["tokens"]
    assert plain == tok.encode(text, add_special_tokens=False)
    special = http.post("/tokenize", json={"content": text, "add_special": True}).json()["tokens"]
    assert special == tok.encode(text) == [tok.bos_token_id, *plain]
    pieces = http.post("/tokenize", json={"content": text, "with_pieces": True}).json()["tokens"]
    raw = b"".join(p["piece"].encode("utf-8") if isinstance(p["piece"], str) else bytes(p["piece"]) for p in pieces)
    assert raw == text.encode("utf-8") and any(isinstance(p["piece"], list) for p in pieces)
    by_text = complete(http, prompt=text, n_predict=5)
    assert by_text["tokens_evaluated"] == len(special)
    assert complete(http, prompt=special, n_predict=5)["content"] == by_text["content"]
    # Text that does not open a mixed prompt gets no BOS; text that does, gets one.
    assert complete(http, prompt=[*special[:3], text[2:]], n_predict=2)["tokens_evaluated"] == 3 + len(
        tok.encode(text[2:], add_special_tokens=False))
    assert complete(http, prompt=[text[:2], *plain[2:]], n_predict=2)["tokens_evaluated"] == len(special)
    assert http.post("/detokenize", json={"tokens": plain}).json() == {"content": text}
    assert_error(http.post("/detokenize", json={"tokens": [len(tok)]}), 400, "tokens")
    props = http.get("/props").json()
    assert props["chat_template"] == tok.chat_template and props["total_slots"] == 1
