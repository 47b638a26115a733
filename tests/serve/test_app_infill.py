"""llama.cpp's ``/infill`` through httpx on the shared live server, as llama.vscode and llama.vim call it."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from smallcode.runtime.engine import Engine
from smallcode.runtime.sampling import SamplingParams

PREFIX = "import json\n\n\ndef load(path):\n    with open(path) as f:\n        "
SUFFIX = "\n\n\ndef save(path, obj):\n    pass\n"


@pytest.fixture(scope="module")
def http(live: tuple[str, Any]) -> Any:
    with httpx.Client(base_url=live[0], timeout=60) as client:
        yield client


def greedy(engine: Engine, ids: list[int], max_tokens: int) -> str:
    return engine.generate_ids([ids], SamplingParams(max_tokens=max_tokens, temperature=0))[0].text


def infill(http: httpx.Client, **body: Any) -> dict[str, Any]:
    response = http.post("/infill", json={"temperature": 0, **body})
    assert response.status_code == 200, response.text
    return response.json()


def test_prefix_and_suffix_make_the_fim_prompt(http: httpx.Client, reference: Engine, prompt_format: Any) -> None:
    got = infill(http, input_prefix=PREFIX, input_suffix=SUFFIX, n_predict=12)
    ids = prompt_format.fim(PREFIX, SUFFIX)
    assert got["tokens_evaluated"] == len(ids)
    assert got["content"] == greedy(reference, ids, 12)
    assert got["tokens_predicted"] == len(got["tokens"]) == 12 and got["stop_type"] == "limit"
    assert got["stop"] is True and got["model"] == "tiny"


def test_input_extra_lays_out_other_files_before_the_fim_prompt(http: httpx.Client, reference: Engine,
                                                                prompt_format: Any) -> None:
    extra = [{"filename": "util.py", "text": "def helper():\n    return 1\n"},
             {"filename": "other.py", "text": "X = 2\n"}]
    got = infill(http, input_prefix=PREFIX, input_suffix=SUFFIX, input_extra=extra, n_predict=8)
    ids = prompt_format.fim(PREFIX, SUFFIX, [(c["filename"], c["text"]) for c in extra])
    assert got["tokens_evaluated"] == len(ids) > len(prompt_format.fim(PREFIX, SUFFIX))
    assert got["content"] == greedy(reference, ids, 8)


def test_prompt_is_text_typed_at_the_cursor(http: httpx.Client, prompt_format: Any) -> None:
    got = infill(http, input_prefix=PREFIX, prompt="data = ", input_suffix=SUFFIX, n_predict=4)
    assert got["tokens_evaluated"] == len(prompt_format.fim(PREFIX + "data = ", SUFFIX))


def test_n_predict_minus_one_is_the_servers_cap(http: httpx.Client) -> None:
    got = infill(http, input_prefix="x = 1\n", n_predict=-1, t_max_predict_ms=0)
    assert got["tokens_predicted"] <= 256  # the shared server's max_tokens
    assert got["stop_type"] in ("eos", "limit")


def test_n_indent_stops_at_a_line_indented_less(http: httpx.Client, reference: Engine, prompt_format: Any) -> None:
    full = greedy(reference, prompt_format.fim("def f():\n", "\n"), 200)
    lines = full.split("\n")
    # With n_indent 100 every later line that is not blank is indented less: the answer ends at the
    # newline before the first of them.
    later = [i for i, line in enumerate(lines) if i > 0 and line.strip()]
    assert later, "the test needs a greedy continuation of several lines"
    got = infill(http, input_prefix="def f():\n", input_suffix="\n", n_predict=200, n_indent=100)
    assert got["content"] == "\n".join(lines[:later[0]])
    assert got["stop_type"] == "word"
    assert infill(http, input_prefix="def f():\n", input_suffix="\n", n_predict=200)["content"] == full


def test_stop_strings_end_the_content(http: httpx.Client, reference: Engine, prompt_format: Any) -> None:
    full = greedy(reference, prompt_format.fim(PREFIX, SUFFIX), 30)
    stop = full[8:11]
    got = infill(http, input_prefix=PREFIX, input_suffix=SUFFIX, n_predict=30, stop=[stop])
    assert got["content"] == full[:full.index(stop)]
    assert got["stop_type"] == "word"


def test_t_max_predict_ms_stops_a_long_generation(http: httpx.Client) -> None:
    got = infill(http, input_prefix="x = 1\n", n_predict=256, t_max_predict_ms=1)
    assert got["tokens_predicted"] < 256
    assert got["stop_type"] == "limit"


def test_a_stream_adds_up_to_the_answer(http: httpx.Client) -> None:
    body = {"input_prefix": PREFIX, "input_suffix": SUFFIX, "n_predict": 20, "temperature": 0}
    whole = infill(http, **body)
    events = []
    with http.stream("POST", "/infill", json={**body, "stream": True}) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[len("data: "):]))
    assert all(e["stop"] is False for e in events[:-1]) and events[-1]["stop"] is True
    assert "".join(e["content"] for e in events) == whole["content"]
    assert events[-1]["tokens_predicted"] == whole["tokens_predicted"]


def test_the_next_keystroke_reuses_the_cached_prompt(http: httpx.Client) -> None:
    # Typing at the cursor only changes the end of the prompt, so the second request's prompt extends
    # the first one's and only the new tokens are prefilled.
    first = infill(http, input_prefix=PREFIX, input_suffix=SUFFIX, n_predict=4, cache_prompt=True)
    second = infill(http, input_prefix=PREFIX + "da", input_suffix=SUFFIX, n_predict=4, cache_prompt=True)
    assert second["tokens_cached"] > 0
    assert second["timings"]["cache_n"] == second["tokens_cached"]
    assert second["timings"]["prompt_n"] == second["tokens_evaluated"] - second["tokens_cached"]
    assert second["tokens_cached"] >= first["tokens_evaluated"] - 8  # all but the last few tokens


def test_bad_fields_are_400s(http: httpx.Client) -> None:
    for body, param in (({"n_predict": 0}, "n_predict"), ({"input_extra": [{"filename": 3}]}, "input_extra"),
                        ({"n_indent": -1}, "n_indent"), ({"input_prefix": "\ud800"}, "input_prefix")):
        # json.dumps escapes a lone surrogate as \\ud800, which is valid JSON but not text.
        response = http.post("/infill", content=json.dumps({"input_prefix": "x", **body}),
                             headers={"content-type": "application/json"})
        assert response.status_code == 400, body
        assert response.json()["error"]["param"] == param
