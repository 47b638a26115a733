"""Helpers of the language-server tests: ``smallcode lsp`` started as a real process that talks LSP
over stdio to pygls's client (pytest-lsp's test client), and the few requests the tests send."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from lsprotocol import types
from pytest_lsp import LanguageClient, client_capabilities, make_test_lsp_client

import smallcode

SRC = Path(smallcode.__file__).resolve().parents[1]


def server_env(data_dir: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
            "SMALLCODE_DATA_DIR": str(data_dir)}


@asynccontextmanager
async def lsp_session(args: list[str], data_dir: Path, options: dict[str, Any] | None = None,
                      root: Path | None = None) -> AsyncIterator[tuple[LanguageClient, types.InitializeResult]]:
    """``smallcode lsp ARGS`` started, initialised (with ``options`` as initializationOptions), shut down
    and exited cleanly on the way out."""
    client = make_test_lsp_client()
    await client.start_io(sys.executable, "-m", "smallcode.cli.main", "lsp", *args, env=server_env(data_dir))
    try:
        result = await client.initialize_session(types.InitializeParams(
            capabilities=client_capabilities("visual-studio-code"), initialization_options=options or {},
            root_uri=root.as_uri() if root else None))
        yield client, result
        await client.shutdown_session()
        assert client._server is not None and client._server.returncode == 0  # shutdown + exit: a clean stop
    finally:
        await client.stop()


def open_doc(client: LanguageClient, uri: str, text: str, language: str = "python") -> None:
    client.text_document_did_open(types.DidOpenTextDocumentParams(
        types.TextDocumentItem(uri=uri, language_id=language, version=1, text=text)))


async def inline(client: LanguageClient, uri: str, line: int, character: int, *, invoked: bool = True
                 ) -> types.InlineCompletionList:
    kind = types.InlineCompletionTriggerKind.Invoked if invoked else types.InlineCompletionTriggerKind.Automatic
    result = await client.text_document_inline_completion_async(types.InlineCompletionParams(
        context=types.InlineCompletionContext(trigger_kind=kind),
        text_document=types.TextDocumentIdentifier(uri=uri), position=types.Position(line, character)))
    assert isinstance(result, types.InlineCompletionList), result
    return result


async def type_rapidly(client: LanguageClient, uri: str, line: int, character: int, text: str
                       ) -> list[types.InlineCompletionList]:
    """Type ``text`` one character at a time at (line, character), with no pause, asking for an automatic
    inline completion after every keystroke as an editor does; the document must be at version 1."""
    requests = []
    for i, ch in enumerate(text):
        at = types.Position(line, character + i)
        client.text_document_did_change(types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=2 + i),
            content_changes=[types.TextDocumentContentChangePartial(range=types.Range(at, at), text=ch)]))
        requests.append(asyncio.ensure_future(inline(client, uri, line, character + i + 1, invoked=False)))
    return list(await asyncio.gather(*requests))


async def type_with_round_trips(client: LanguageClient, uri: str, line: int, character: int, text: str
                                ) -> tuple[list[types.InlineCompletionList], list[float]]:
    """Type ``text`` as ``type_rapidly`` does, but wait after each keystroke for a ``smallcode/stats``
    round trip, so that the server has taken the keystroke (and its request) before the next comes:
    keys a few milliseconds apart, as a fast typist's are to the server. Returns the answers and, for
    each keystroke but the last, the time from sending it to the server having taken the next: an
    upper bound on the gap between the two edits as the server saw them."""
    requests, sent, taken = [], [], []
    for i, ch in enumerate(text):
        at = types.Position(line, character + i)
        sent.append(time.monotonic())
        client.text_document_did_change(types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=2 + i),
            content_changes=[types.TextDocumentContentChangePartial(range=types.Range(at, at), text=ch)]))
        params = types.InlineCompletionParams(
            context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Automatic),
            text_document=types.TextDocumentIdentifier(uri=uri), position=types.Position(line, character + i + 1))
        # sent now (``inline`` in a task would send it only when the task runs, after the round trip)
        requests.append(asyncio.wrap_future(client.protocol.send_request(types.TEXT_DOCUMENT_INLINE_COMPLETION,
                                                                         params)))
        await server_stats(client)  # answered after the server took the edit and the request
        taken.append(time.monotonic())
    gaps = [taken[i + 1] - sent[i] for i in range(len(text) - 1)]
    results = list(await asyncio.gather(*requests))
    assert all(isinstance(r, types.InlineCompletionList) for r in results), results
    return results, gaps


async def server_stats(client: LanguageClient) -> dict[str, Any]:
    result = await client.protocol.send_request_async("smallcode/stats", {})
    return result if isinstance(result, dict) else dict(result._asdict())

