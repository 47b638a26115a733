"""Repository context in ``smallcode lsp``: the workspace is indexed in the background and what it
retrieves reaches the model's prompt (``input_extra`` of ``/infill``, seen by a recording endpoint);
``--no-repo-context`` and ``"repoContext": false`` turn it off; a saved edit is indexed again."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from lsp_helpers import inline, lsp_session, open_doc, server_stats  # type: ignore[import-not-found]
from lsprotocol import types

pytestmark = pytest.mark.asyncio

HELPER = '''"""Checksums."""


def compute_checksum(data, seed=0):
    """Adler-style checksum of ``data``."""
    total = seed
    for byte in data:
        total = (total * 31 + byte) % 65521
    return total
'''
MAIN = '''from pkg.helper import compute_checksum


def verify(blob, expected):
    value = compute_checksum(blob
'''


class Recorder:
    """llama.cpp's ``/infill`` that answers nothing and keeps every request body."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server API
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                recorder.bodies.append(body)
                data = json.dumps({"content": "", "stop": True, "stop_type": "eos"}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    rec = Recorder()
    thread = threading.Thread(target=rec.server.serve_forever, daemon=True)
    thread.start()
    yield rec
    rec.server.shutdown()
    rec.server.server_close()


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "__init__.py").write_text("")
    (root / "pkg" / "helper.py").write_text(HELPER)
    (root / "pkg" / "main.py").write_text(MAIN.rstrip("\n") + ")\n    return value == expected\n")
    (root / ".venv" / "lib").mkdir(parents=True)
    (root / ".venv" / "lib" / "compute.py").write_text("def compute_checksum(x):\n    return 0\n")
    return root


async def _index_stats(client: Any) -> dict[str, Any]:
    stats = (await server_stats(client))["repo_index"]
    return stats if isinstance(stats, dict) else dict(stats._asdict())


async def _ready(client: Any) -> dict[str, Any]:
    for _ in range(400):
        stats = await _index_stats(client)
        if stats["state"] != "building":
            return stats
        await asyncio.sleep(0.05)
    raise AssertionError("the index was not built in 20 s")


async def _extra_at_cursor(client: Any, recorder: Recorder, root: Path) -> list[dict[str, str]]:
    uri = (root / "pkg" / "main.py").as_uri()
    recorder.bodies.clear()
    await inline(client, uri, 4, len("    value = compute_checksum(blob"), invoked=False)
    return [e for body in recorder.bodies for e in body["input_extra"]]


OPTIONS = {"debounceMinMs": 0, "debounceMaxMs": 0}


async def test_the_retrieved_definition_is_in_the_prompt(recorder: Recorder, workspace: Path, tmp_path: Path) -> None:
    # What the session saw is checked after it ends: an assertion inside it would leave the server running.
    async with lsp_session(["--endpoint", recorder.url], tmp_path / "data", OPTIONS, root=workspace) as (client, _):
        stats = await _ready(client)
        open_doc(client, (workspace / "pkg" / "main.py").as_uri(), MAIN)
        first = await _extra_at_cursor(client, recorder, workspace)
        # An edit of helper.py in the editor, saved: the next completion elsewhere sees the new definition
        # (helper.py is then also an open document: its window comes after the retrieved piece).
        helper_uri = (workspace / "pkg" / "helper.py").as_uri()
        open_doc(client, helper_uri, HELPER)
        client.text_document_did_change(types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=helper_uri, version=2),
            content_changes=[types.TextDocumentContentChangeWholeDocument(text=HELPER.replace("seed=0", "seed=7"))]))
        client.text_document_did_save(types.DidSaveTextDocumentParams(types.TextDocumentIdentifier(helper_uri)))
        second = await _extra_at_cursor(client, recorder, workspace)
    assert stats["state"] == "ready" and stats["files"] == 3 and stats["errors"] == 0  # not .venv's file
    assert [e["filename"] for e in first] == ["pkg/helper.py"]
    assert "def compute_checksum(data, seed=0):" in first[0]["text"]
    assert [e["filename"] for e in second] == ["pkg/helper.py", "pkg/helper.py"]
    assert "seed=7" in second[0]["text"] and "seed=0" not in second[0]["text"]


@pytest.mark.parametrize("off", ["flag", "option"])
async def test_switched_off_nothing_is_indexed_or_sent(off: str, recorder: Recorder, workspace: Path,
                                                       tmp_path: Path) -> None:
    args = ["--endpoint", recorder.url] + (["--no-repo-context"] if off == "flag" else [])
    options = {**OPTIONS, **({"repoContext": False} if off == "option" else {})}
    async with lsp_session(args, tmp_path / "data", options, root=workspace) as (client, _):
        stats = await _index_stats(client)
        open_doc(client, (workspace / "pkg" / "main.py").as_uri(), MAIN)
        extra = await _extra_at_cursor(client, recorder, workspace)
    assert stats == {"state": "off"} and extra == []
