"""``smallcode lsp --model``: the real server process over stdio, pygls's client, the tiny model in process."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from click.testing import CliRunner
from lsp_helpers import (  # type: ignore[import-not-found]
    inline,
    lsp_session,
    open_doc,
    server_stats,
    type_rapidly,
    type_with_round_trips,
)
from lsprotocol import types
from pygls.exceptions import JsonRpcException

from smallcode.cli.stats import stats as stats_command
from smallcode.lsp.context import build_context
from smallcode.lsp.postprocess import shape
from smallcode.runtime.formats import prompt_format
from smallcode.runtime.load import open_engine
from smallcode.runtime.sampling import SamplingParams

pytestmark = pytest.mark.asyncio(loop_scope="module")

URI = "file:///home/dev/pkg/stats.py"
TEXT = ("import math\n\n\ndef mean(xs):\n    total = sum(xs)\n    return tot\n\n\n"
        "def spread(xs):\n    m = mean(xs)\n    \n    return math.sqrt(v)\n")
# (line, character) cursors: end of a line mid-word, inside a line, an indented empty line, column 0.
CURSORS = [(5, 14), (4, 8), (10, 4), (6, 0)]
# A long automatic debounce so that the rapid-edit test cannot race the clock on a loaded machine.
OPTIONS = {"debounceMinMs": 1000, "debounceMaxMs": 1000, "maxTokens": 24}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def session(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Any]:
    data = tmp_path_factory.mktemp("lsp-data")
    async with lsp_session(["--model", str(checkpoint)], data, OPTIONS) as (client, result):
        open_doc(client, URI, TEXT)
        yield client, result, data


async def test_handshake_and_capabilities(session: Any) -> None:
    _, result, _ = session
    caps = result.capabilities
    assert caps.inline_completion_provider is not None
    assert caps.completion_provider is not None
    assert caps.text_document_sync.change == types.TextDocumentSyncKind.Incremental
    assert result.server_info.name == "smallcode"


async def test_items_at_several_cursors(session: Any) -> None:
    client, _, _ = session
    lines = TEXT.split("\n")
    for line, character in CURSORS:
        result = await inline(client, URI, line, character, invoked=True)
        assert len(result.items) <= 3
        before, after = lines[line][:character], lines[line][character:]
        for item in result.items:
            assert item.range.start.line == item.range.end.line == line
            assert item.range.end.character == character
            typed = before[item.range.start.character:]
            assert typed == before[len(before.rstrip("abcdefghijklmnopqrstuvwxyz_")):]  # the word at the cursor
            assert item.insert_text.startswith(typed) and item.insert_text.strip()
            text = item.insert_text[len(typed):]
            if after.strip():  # inside a line: one line, never ending with what follows the cursor
                assert "\n" not in text and not text.rstrip().endswith(after.strip())
            following = [x.rstrip() for x in lines[line + 1:] if x.strip()]
            if following:
                assert following[0] not in [x.rstrip() for x in text.split("\n")[1:]]


async def test_greedy_item_is_what_the_engine_writes(session: Any, checkpoint: Path) -> None:
    """The first item at a cursor is the greedy completion of the prompt the context builds, shaped:
    the same tokens through the scheduler as from the engine alone."""
    client, _, _ = session
    line, character = 5, 14
    result = await inline(client, URI, line, character, invoked=True)
    engine = open_engine(checkpoint)
    offset = sum(len(x) + 1 for x in TEXT.split("\n")[:line]) + character
    ctx = build_context(TEXT, offset, path="/home/dev/pkg/stats.py", language_id="python")
    ids = prompt_format(engine.tokenizer).fim(ctx.prefix, ctx.suffix, ctx.extra)
    raw = engine.generate_ids([ids], SamplingParams(max_tokens=OPTIONS["maxTokens"], temperature=0))[0].text
    expected = shape(raw, ctx).text
    got = [i.insert_text[len("tot"):] for i in result.items]
    assert (got[0] if got else "") == expected


async def test_ten_rapid_edits_make_one_model_call(session: Any) -> None:
    client, _, _ = session
    uri = "file:///home/dev/pkg/typing.py"
    open_doc(client, uri, "def f(x):\n    return \n")
    before = await server_stats(client)
    results = await type_rapidly(client, uri, 1, 11, "x + 1 - y2")
    after = await server_stats(client)
    assert after["model_calls"] - before["model_calls"] == 1
    assert after["superseded_before_model"] - before["superseded_before_model"] == 9
    assert all(not r.items for r in results[:-1])


def may_pass(gaps: list[float], min_s: float = 0.03, pause_s: float = 0.6) -> int:
    """How many requests of a burst, not counting its last, the adaptive debounce may let through to the
    model when the server saw consecutive edits at most ``gaps`` apart: one followed by a gap of
    ``min_s`` or more, or one made when the running average of the typing gaps (0.7 old + 0.3 new,
    pauses left out) had reached ``min_s`` (typing that slow is not waited for while the model is
    untimed). The average of the bounds bounds the server's."""
    n, average = 0, None
    for gap in gaps:
        n += gap >= min_s or (average is not None and average >= min_s)
        if gap < pause_s:
            average = gap if average is None else 0.7 * average + 0.3 * gap
    return n


async def test_fast_typing_at_the_default_debounce_makes_one_model_call(checkpoint: Path, tmp_path: Path) -> None:
    """The adaptive debounce at its defaults (no options). What it guarantees: while edits come less
    than debounceMinMs (30 ms) apart, a request waits at least that long after the last edit however
    fast the model is (an untimed model counts as fast), so the next edit supersedes it before it
    reaches the model. Ten keystrokes a round trip apart (a few ms) reach the model once, for the last;
    each gap the machine stretches past 30 ms may let one more through (``may_pass``)."""
    async with lsp_session(["--model", str(checkpoint)], tmp_path) as (client, _):
        open_doc(client, "file:///home/dev/pkg/warm.py", "x = 1\n")
        await inline(client, "file:///home/dev/pkg/warm.py", 0, 5)  # the model is loaded (invoked: no wait)
        uri = "file:///home/dev/pkg/fast.py"
        open_doc(client, uri, "def f(x):\n    return \n")
        before = await server_stats(client)
        results, gaps = await type_with_round_trips(client, uri, 1, 11, "x + 1 - y2")
        after = await server_stats(client)
    d = {k: after[k] - before[k] for k in ("requests", "superseded_before_model", "cancelled_before_model",
                                           "model_calls")}
    passed = d["requests"] - d["superseded_before_model"] - d["cancelled_before_model"]
    excused = may_pass(gaps)
    assert d["requests"] == 10 and d["cancelled_before_model"] == 0
    assert passed <= 1 + excused and d["model_calls"] <= 1 + excused, (d, [round(g * 1000) for g in gaps])
    if excused == 0:  # every gap under 30 ms, as on a machine that is not overloaded
        assert d["superseded_before_model"] == 9 and d["model_calls"] == 1
        assert all(not r.items for r in results[:-1])


async def test_cancel_request_before_the_model(session: Any) -> None:
    """$/cancelRequest while the request waits (an automatic request right after an edit waits for
    the next key): it answers RequestCancelled and never reaches the model."""
    client, _, _ = session
    uri = "file:///home/dev/pkg/cancel.py"
    open_doc(client, uri, "x = 1\n")
    client.text_document_did_change(types.DidChangeTextDocumentParams(
        text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=2),
        content_changes=[types.TextDocumentContentChangePartial(
            range=types.Range(types.Position(1, 0), types.Position(1, 0)), text="y")]))
    before = await server_stats(client)
    params = types.InlineCompletionParams(
        context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Automatic),
        text_document=types.TextDocumentIdentifier(uri=uri), position=types.Position(1, 1))
    request = asyncio.wrap_future(
        client.protocol.send_request(types.TEXT_DOCUMENT_INLINE_COMPLETION, params, msg_id="cancel-me"))
    while (await server_stats(client))["waiting"] == 0:
        await asyncio.sleep(0.01)
    client.protocol.notify(types.CANCEL_REQUEST, types.CancelParams(id="cancel-me"))
    with pytest.raises(JsonRpcException) as error:
        await asyncio.wait_for(request, 10)
    assert error.value.code == -32800  # RequestCancelled
    await asyncio.sleep(0.5)
    after = await server_stats(client)
    assert after["model_calls"] == before["model_calls"]
    assert after["cancelled_before_model"] - before["cancelled_before_model"] == 1


async def test_bad_requests_get_errors_and_the_server_keeps_serving(session: Any) -> None:
    client, _, _ = session
    with pytest.raises(JsonRpcException, match="unknown document"):
        await inline(client, "file:///home/dev/pkg/never_opened.py", 0, 0)
    with pytest.raises(JsonRpcException, match="outside the document"):
        await inline(client, URI, 400, 0)
    with pytest.raises(JsonRpcException, match="past the end of its line"):
        await inline(client, URI, 0, 99)
    # Garbage on stdin: a body that is not JSON, then a request that must still be answered.
    client.protocol.writer.write(b"Content-Length: 9\r\n\r\n{garbage!")
    message = await asyncio.wait_for(client.wait_for_notification(types.WINDOW_SHOW_MESSAGE), 10)
    assert message.type == types.MessageType.Error
    result = await inline(client, URI, 4, 8)
    assert isinstance(result, types.InlineCompletionList)


async def test_completion_fallback(session: Any) -> None:
    client, _, _ = session
    result = await client.text_document_completion_async(types.CompletionParams(
        text_document=types.TextDocumentIdentifier(uri=URI), position=types.Position(5, 14),
        context=types.CompletionContext(trigger_kind=types.CompletionTriggerKind.Invoked)))
    assert isinstance(result, types.CompletionList) and result.is_incomplete
    for item in result.items:
        assert item.text_edit.range.start == types.Position(5, 11) and item.text_edit.new_text.startswith("tot")


async def test_feedback_is_logged_and_summarised(session: Any) -> None:
    client, _, data = session
    result = await inline(client, URI, 10, 4)
    client.protocol.notify("smallcode/feedback", {"event": "shown", "id": "abc"})
    client.protocol.notify("smallcode/feedback", {"event": "accepted", "id": "abc", "chars": 7})
    if result.items:  # the command an accepted item carries
        command = result.items[0].command
        await client.workspace_execute_command_async(types.ExecuteCommandParams(command.command, command.arguments))
    await server_stats(client)  # answered after the notifications before it were handled
    log = data / "lsp-feedback.jsonl"
    events = [json.loads(x) for x in log.read_text().splitlines()]
    assert {"shown", "accepted", "served"} <= {e["event"] for e in events}, events
    out = CliRunner().invoke(stats_command, ["--log", str(log), "--json"])
    summary = json.loads(out.output)
    assert summary["accepted"] == 1 + bool(result.items) and summary["shown"] == 1
    assert summary["accepted_chars"] >= 7 and summary["latency_ms"]["p50"] > 0
