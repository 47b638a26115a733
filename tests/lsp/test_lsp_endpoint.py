"""``smallcode lsp --endpoint``: the language server in front of the real completion server
(``smallcode serve``'s app and scheduler on loopback); a model or endpoint that is down."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from app_helpers import make_engine, metric, running_server  # type: ignore[import-not-found]
from lsp_helpers import inline, lsp_session, open_doc, server_stats, type_rapidly  # type: ignore[import-not-found]
from lsprotocol import types
from pygls.exceptions import JsonRpcException

from smallcode.lsp.context import OtherFile, build_context
from smallcode.lsp.postprocess import shape
from smallcode.runtime.formats import prompt_format
from smallcode.runtime.sampling import SamplingParams
from smallcode.tokenizer import CodeTokenizer

pytestmark = pytest.mark.asyncio

TEXT = "import json\n\n\ndef load(path):\n    with open(path) as f:\n        return js\n"
OTHER = "def save(obj, path):\n    with open(path, 'w') as f:\n        json.dump(obj, f)\n"


@pytest.fixture(scope="module")
def served(lsp_tokenizer: CodeTokenizer) -> Iterator[tuple[str, Any, Any]]:
    engine = make_engine(lsp_tokenizer)
    with running_server(engine) as (url, scheduler):
        yield url, scheduler, engine


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_endpoint_completion_is_the_served_models(served: Any, tmp_path: Path) -> None:
    """Through /infill (with the other open file as input_extra) the first item is the greedy
    completion the engine writes for the same context."""
    url, scheduler, engine = served
    async with lsp_session(["--endpoint", url], tmp_path, {"maxTokens": 16, "debounceMinMs": 1000,
                                                           "debounceMaxMs": 1000}, root=Path("/proj")) as (client, _):
        open_doc(client, "file:///proj/store.py", OTHER)
        open_doc(client, "file:///proj/load.py", TEXT)
        result = await inline(client, "file:///proj/load.py", 5, 17)
        offset = TEXT.index("return js") + len("return js")
        ctx = build_context(TEXT, offset, path="load.py", language_id="python", others=[OtherFile("store.py", OTHER)])
        assert ctx.extra == [("store.py", OTHER)]
        ids = prompt_format(engine.tokenizer).fim(ctx.prefix, ctx.suffix, ctx.extra)
        raw = engine.generate_ids([ids], SamplingParams(max_tokens=16, temperature=0))[0].text
        expected = shape(raw, ctx).text
        assert [i.insert_text[len("js"):] for i in result.items][:1] == ([expected] if expected else [])

        # Ten rapid edits: one HTTP request, for the last one, reaches the server's model.
        uri = "file:///proj/fast.py"
        open_doc(client, uri, "x = \n")
        before = _finished_requests(scheduler)
        stats_before = await server_stats(client)
        await type_rapidly(client, uri, 0, 4, "abcdefghij")
        stats_after = await server_stats(client)
        assert stats_after["model_calls"] - stats_before["model_calls"] == 1
        assert _finished_requests(scheduler) - before == 1


def _finished_requests(scheduler: Any) -> float:
    """Requests the server's scheduler finished, whatever the outcome (its own Prometheus counter)."""
    return sum(metric(scheduler, "smallcode_requests_total", outcome=o) for o in ("eos", "length", "stop", "cancelled"))


@pytest.mark.parametrize("down", ["endpoint", "model"])
async def test_a_model_that_is_down_is_an_error_not_a_hang(down: str, tmp_path: Path) -> None:
    if down == "endpoint":
        args = ["--endpoint", f"http://127.0.0.1:{_closed_port()}"]
    else:
        (tmp_path / "not-a-model").mkdir()
        args = ["--model", str(tmp_path / "not-a-model")]
    async with lsp_session(args, tmp_path) as (client, _):
        open_doc(client, "file:///p/a.py", "def f():\n    \n")
        for _ in range(2):  # and again: the server is still there
            with pytest.raises(JsonRpcException) as error:
                await asyncio.wait_for(inline(client, "file:///p/a.py", 1, 4), 30)
            assert error.value.code == -32803  # RequestFailed
        message = await asyncio.wait_for(client.wait_for_notification(types.WINDOW_SHOW_MESSAGE), 10) \
            if not client.messages else client.messages[0]
        assert message.type == types.MessageType.Error
        assert ("cannot reach" in message.message) if down == "endpoint" else ("could not be loaded" in message.message)


async def test_a_server_without_infill_is_asked_through_v1_completions(lsp_tokenizer: CodeTokenizer,
                                                                        tmp_path: Path) -> None:
    """The real app with its /infill route taken away: the server falls back to /v1/completions with
    ``suffix`` and gets the same greedy text."""
    from app_helpers import serve  # type: ignore[import-not-found]

    from smallcode.runtime.scheduler import Scheduler
    from smallcode.serve.app import create_app

    engine = make_engine(lsp_tokenizer)
    scheduler = Scheduler(engine)
    try:
        app = create_app(scheduler, prompt_format(engine.tokenizer), model_name="tiny", families=("openai", "mistral"))
        with serve(app) as url:
            async with lsp_session(["--endpoint", url + "/v1"], tmp_path, {"maxTokens": 12}) as (client, _):
                open_doc(client, "file:///q/a.py", TEXT)
                result = await inline(client, "file:///q/a.py", 5, 17)
        ctx = build_context(TEXT, TEXT.index("return js") + 9, path="/q/a.py", language_id="python")
        ids = prompt_format(engine.tokenizer).fim(ctx.prefix, ctx.suffix)
        raw = engine.generate_ids([ids], SamplingParams(max_tokens=12, temperature=0))[0].text
        expected = shape(raw, ctx).text
        assert [i.insert_text[len("js"):] for i in result.items][:1] == ([expected] if expected else [])
        assert metric(scheduler, "smallcode_prompt_tokens_total") > 0
    finally:
        scheduler.close()
