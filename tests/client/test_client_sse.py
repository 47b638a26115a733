"""The one server-sent-events parser: the same events from sync and async sources, whole or torn."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from smallcode.client.sse import DONE, SSEParser, aiter_events, iter_events

STREAM = [
    ": a comment",
    "event: completion",
    'data: {"a": 1}',
    "",
    "id: 7",
    "data: first line",
    "data:second line",
    "",
    "",  # blank lines between events are no events
    "retry: 100",
    "data: [DONE]",
    'data: {"after": "done"}',
]


def both(lines: list) -> list[str]:
    """The events of ``lines`` read as a sync source and as an async one (they must agree)."""

    async def source() -> AsyncIterator:
        for line in lines:
            await asyncio.sleep(0)
            yield line

    async def collect() -> list[str]:
        return [e async for e in aiter_events(source())]

    sync = list(iter_events(lines))
    assert asyncio.run(collect()) == sync
    return sync


def test_events_fields_and_done() -> None:
    assert both(STREAM) == ['{"a": 1}', "first line\nsecond line", DONE, '{"after": "done"}']
    # [DONE] ends an event at once, even before its blank line, and is reported as its own event.
    assert both(["data: x", "data: [DONE]"]) == ["x", DONE]


def test_bytes_and_line_endings() -> None:
    assert both([b"data: caf\xc3\xa9\r\n", b"\r\n", b"data: 2\n", b"\n"]) == ["café", "2"]
    with pytest.raises(ValueError, match="not UTF-8"):
        both([b"data: \xff\n", b"\n"])


def test_a_torn_stream_still_gives_its_last_event() -> None:
    assert both(['data: {"a": 1}', "", 'data: {"b": 2']) == ['{"a": 1}', '{"b": 2']
    parser = SSEParser()
    assert parser.feed("data: x") == [] and parser.finish() == ["x"] and parser.finish() == []


def test_garbage_is_passed_on_not_interpreted() -> None:
    # The parser only frames events: what their data means is the reader's to judge.
    assert both(["<html>", "data: {not json", "", "nonsense: 1"]) == ["{not json"]
    assert both([]) == [] and both(["", "", ": keep-alive"]) == []


def test_importing_the_client_pulls_neither_torch_nor_httpx() -> None:
    import json
    import subprocess
    import sys
    from pathlib import Path

    code = ("import json, sys; import smallcode.client, smallcode.client.sse; "
            "print(json.dumps([m in sys.modules for m in ('torch', 'httpx', 'transformers')]))")
    src = Path(__file__).resolve().parents[2] / "src"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(src)}).stdout
    assert json.loads(out) == [False, False, False]
