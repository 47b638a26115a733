"""``smallcode lsp``: the language server (pygls over stdio) that asks a code model for completions.

Features:

* ``textDocument/inlineCompletion`` (LSP 3.18): one item when triggered automatically, up to three
  (greedy first, then two samples, duplicates dropped) when invoked; ``textDocument/completion``
  gives the same text as completion items for clients without inline completion. Documents are synced
  incrementally (pygls keeps them).
* Only the newest request of a document runs. A new request, or an edit of the document, supersedes
  the one before: if it is still waiting (the adaptive debounce, ``lsp.debounce``) it never reaches
  the model and answers no items; if it reached the model, its generation is cancelled (within one
  decode step in process; by closing the HTTP stream for an endpoint). ``$/cancelRequest`` does the
  same and answers RequestCancelled.
* The prompt: ``lsp.context`` (prefix-biased window, other open documents as extra files, the file's
  path and language, and what ``smallcode.retrieval`` finds in the workspace); the answer:
  ``lsp.postprocess`` (one line inside a line, a block at the end of one, no copy of the suffix),
  streamed and stopped as soon as the shape is decided.
* Feedback: ``smallcode/feedback`` notifications (``{"id", "event": "shown" | "accepted" |
  "dismissed", "chars"?}``) and the ``smallcode.accepted`` command that inline items carry are
  appended to the local log (``lsp.feedback``), as is a ``served`` event per answer.
* ``smallcode/stats`` (a request) returns the server's counters: requests, model calls, requests
  superseded or cancelled before the model and in it. Tests and the latency benchmark read it.

Errors: an unknown document or a position outside it is InvalidParams; a model that cannot answer
is RequestFailed plus a ``window/showMessage`` (at most one per message per ``ERROR_REPEAT_S``); a
model whose queue is full (it fell behind the keystrokes) answers no items;
a message that is not JSON gets a JSON-RPC parse error (id null) and a ``window/showMessage``.
The server keeps serving after each. Each error answer is one warning line on stderr, no traceback
(``_AnswersAreNotBugs``): only a bug in the server logs one.

* Repository context: when the client names a workspace (``workspaceFolders``, else ``rootUri`` or
  ``rootPath``), its Python files are indexed in a thread of their own, started once ``initialized``
  comes (initialize is never kept waiting; until the index is built, completions go without it).
  For a Python document, the definitions of the names used near the cursor and the chunks most like
  the text before it come first among the extra files (``RepoIndex.context``, half of the extra
  budget when other documents are open). The editor's text of open documents replaces the disk's:
  a document edited since it was indexed is indexed again on ``didSave``, or when a completion is
  asked in another document (its own file is never retrieved from, so typing costs no re-indexing);
  ``didClose`` goes back to the disk's version; ``workspace/didChangeWatchedFiles`` is followed.
  ``smallcode/stats`` reports the index (``repo_index``). Off with ``smallcode lsp --no-repo-context``
  or ``"repoContext": false``.

Settings come from ``initializationOptions`` (all optional): ``maxTokens``, ``automaticMaxTokens``, ``debounceMinMs``,
``debounceMaxMs``, ``prefixTokens``, ``suffixTokens``, ``extraTokens``, ``maxLines``, ``repoContext``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from lsprotocol import types
from pygls.exceptions import JsonRpcException, JsonRpcInternalError, JsonRpcInvalidParams
from pygls.lsp.server import LanguageServer

from smallcode.client import ClientBusy, ClientError
from smallcode.lsp import feedback
from smallcode.lsp.context import Budget, OtherFile, build_context, retrieval_budget
from smallcode.lsp.debounce import Debounce
from smallcode.lsp.models import CompletionModel, FimRequest
from smallcode.lsp.postprocess import MAX_LINES, multiline, shape, word_start
from smallcode.retrieval import IndexLimits, RepoIndex, index_directory

log = logging.getLogger(__name__)

ERROR_REPEAT_S = 30.0
"""The same error message is shown to the user at most once in this many seconds."""
ACCEPT_COMMAND = "smallcode.accepted"
FEEDBACK_METHOD = "smallcode/feedback"
STATS_METHOD = "smallcode/stats"
INVOKED_ITEMS = 3
RECENT_IDS = 256
"""Served completions remembered for the feedback events that name them."""


class RequestFailed(JsonRpcException):
    """LSP's RequestFailed: the request was valid but could not be answered (the model is down)."""

    CODE = -32803


@dataclass
class Settings:
    max_tokens: int = 64
    """Most tokens of one completion the user asked for (invoked)."""
    auto_max_tokens: int = 16
    """Most tokens of one completion triggered while typing (automatic): about a line, kept short so
    that it comes back before the next keystroke."""
    budget: Budget = Budget()
    max_lines: int = MAX_LINES
    debounce_min_s: float = 0.03
    debounce_max_s: float = 0.25
    feedback_log: Path | None = None
    """Where feedback events go (None: the user's data directory)."""
    repo_context: bool = True
    """Index the workspace's Python files and add what they hold to completions."""
    index_limits: IndexLimits = IndexLimits()


@dataclass
class _DocState:
    language_id: str = ""
    edited_line: int | None = None
    edited_at: float = 0.0
    debounce: Debounce | None = None
    ticket: int = 0
    """Bumped by every request and edit: a request whose ticket is no longer current is superseded."""
    model_task: asyncio.Task | None = None
    superseded: asyncio.Event | None = None


@dataclass
class _Answer:
    texts: list[str]
    """What to insert after the typed part of the word at the cursor, best first."""
    id: str
    typed: str
    """The part of the word before the cursor, which each item repeats (its range starts there)."""
    range: types.Range


@dataclass
class _Served:
    text: str
    latency_ms: float
    language_id: str


class Counters:
    """What the server did, for ``smallcode/stats``."""

    def __init__(self) -> None:
        self.requests = 0
        self.waiting = 0
        """Requests in their debounce wait now."""
        self.superseded_before_model = 0
        self.cancelled_before_model = 0
        self.stopped_in_model = 0
        self.answered = 0
        self.errors = 0
        self.busy = 0
        """Requests the model's full queue turned away (no items, no error)."""


class _AnswersAreNotBugs(logging.Filter):
    """pygls logs a traceback for every ``JsonRpcException`` a handler raises. Ours are answers the
    client gets (InvalidParams for an unknown document, RequestFailed for a model that is down), not
    bugs: such a record becomes one warning line. An internal error keeps its traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, JsonRpcException) and not isinstance(error, JsonRpcInternalError):
            record.msg, record.args = "request answered with error %d: %s", (error.code, error.message)
            record.exc_info, record.exc_text = None, None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


class SmallcodeServer(LanguageServer):
    """The language server; ``model`` answers the completions (``lsp.models``)."""

    def __init__(self, model: CompletionModel, settings: Settings | None = None) -> None:
        from smallcode import __version__

        super().__init__("smallcode", __version__)
        # pygls logs from its JSON-RPC module; the filter sits on that logger, where the records are made.
        rpc_log = logging.getLogger("pygls.protocol.json_rpc")
        if not any(isinstance(f, _AnswersAreNotBugs) for f in rpc_log.filters):
            rpc_log.addFilter(_AnswersAreNotBugs())
        self.model = model
        self.settings = settings or Settings()
        self.counters = Counters()
        self.docs: dict[str, _DocState] = {}
        self.served: OrderedDict[str, _Served] = OrderedDict()
        self._shown_errors: dict[str, float] = {}
        self.roots: list[Path] = []
        """The workspace folders the client named."""
        self.index: RepoIndex | None = None
        """The workspace's index, once built (None before, or when repository context is off)."""
        self.index_state = "off"
        """"off", "building", "ready" or "failed"."""
        self.index_seconds: float | None = None
        self._dirty: set[str] = set()
        """Documents whose editor text the index does not hold yet."""
        self._index_stop = threading.Event()

    # ------------------------------------------------------------------ errors and feedback
    def report_server_error(self, error: Exception, source: Any) -> None:
        # A message that is not JSON: the JSON-RPC answer is a parse error with id null.
        if isinstance(error, json.JSONDecodeError):
            self.protocol._send_data({"jsonrpc": "2.0", "id": None,
                                      "error": {"code": -32700, "message": f"Parse error: {error}"}})
        super().report_server_error(error, source)

    def show_error(self, message: str) -> None:
        now = time.monotonic()
        if now - self._shown_errors.get(message, -ERROR_REPEAT_S) >= ERROR_REPEAT_S:
            self._shown_errors[message] = now
            self.window_show_message(types.ShowMessageParams(type=types.MessageType.Error,
                                                             message=f"smallcode: {message}"))

    def record(self, event: dict[str, Any]) -> None:
        try:
            feedback.append(self.settings.feedback_log or feedback.default_log(), event)
        except OSError as e:  # a full disk or a read-only home must not break completion
            self.show_error(f"cannot write the feedback log: {e}")

    # ------------------------------------------------------------------ documents
    def state(self, uri: str) -> _DocState:
        return self.docs.setdefault(uri, _DocState())

    def supersede(self, uri: str) -> None:
        """A newer request or an edit: whatever the document's last request is doing, it is stale."""
        st = self.state(uri)
        st.ticket += 1
        if st.superseded is not None:
            st.superseded.set()
        if st.model_task is not None and not st.model_task.done():
            st.model_task.cancel()

    def document(self, uri: str) -> Any:
        doc = self.workspace.text_documents.get(unquote(uri))
        if doc is None:
            raise JsonRpcInvalidParams(f"unknown document {uri}: it was not opened with textDocument/didOpen")
        return doc

    def offset(self, doc: Any, position: types.Position) -> int:
        lines = doc.lines
        if position.line > len(lines) or position.line < 0 or position.character < 0:
            raise JsonRpcInvalidParams(f"position {position.line}:{position.character} is outside the document "
                                       f"({len(lines)} lines)")
        line = lines[position.line] if position.line < len(lines) else ""
        width = doc.position_codec.client_num_units(line.rstrip("\r\n"))
        if position.character > width:
            raise JsonRpcInvalidParams(f"position {position.line}:{position.character} is past the end of its "
                                       f"line ({width} characters)")
        return doc.offset_at_position(position)

    # ------------------------------------------------------------------ repository context
    def index_key(self, uri: str) -> str | None:
        """The index's name for a document (its display path), or None for one that is not Python."""
        path = _display_path(uri, self.workspace.root_path)
        return path if path.endswith(".py") else None

    def start_index(self) -> None:
        """Index the workspace in a thread of its own (see the module docstring)."""
        if not self.settings.repo_context or not self.roots or self.index_state != "off":
            return
        self.index_state = "building"
        loop = asyncio.get_running_loop()
        root = self.workspace.root_path

        def key(file: Path) -> str:
            return _relative(str(file), root)

        def build() -> None:
            started = time.monotonic()
            try:
                index = RepoIndex(self.settings.index_limits)
                for folder in self.roots:
                    index_directory(folder, index, key=key, stop=self._index_stop)
            except Exception as e:  # noqa: BLE001 - completions go on without the index
                log.warning("the workspace could not be indexed: %s", e)
                loop.call_soon_threadsafe(setattr, self, "index_state", "failed")
                return
            seconds = time.monotonic() - started
            log.info("indexed %d Python files (%d chunks) in %.2f s; %d do not parse, %d skipped",
                     index.files, index.chunks, seconds, len(index.errors), len(index.skipped))
            loop.call_soon_threadsafe(self._index_built, index, seconds)

        threading.Thread(target=build, name="smallcode-lsp-index", daemon=True).start()

    def _index_built(self, index: RepoIndex, seconds: float) -> None:
        if self._index_stop.is_set():
            return
        self.index, self.index_state, self.index_seconds = index, "ready", seconds
        # What the editor holds is newer than what the walk read from disk.
        self._dirty.update(self.workspace.text_documents)

    def mark_dirty(self, uri: str) -> None:
        """Note that the editor's text of ``uri`` changed (indexed when it next matters)."""
        if self.index is not None:
            self._dirty.add(unquote(uri))

    def stop_index(self) -> None:
        """End an index build under way (shutdown); the index is not published."""
        self._index_stop.set()

    def refresh(self, uri: str) -> None:
        """Index the editor's text of the open document ``uri``."""
        self._dirty.discard(uri)
        doc = self.workspace.text_documents.get(uri)
        key = self.index_key(uri)
        if self.index is not None and doc is not None and key is not None:
            self.index.update(key, doc.source)

    def reread(self, uri: str) -> None:
        """Index the disk's version of ``uri`` (a closed document, a watched change), or forget it when
        it is gone or outside the workspace."""
        self._dirty.discard(uri)
        key = self.index_key(uri)
        if self.index is None or key is None:
            return
        path = Path(unquote(urlparse(uri).path))
        inside = any(path.is_relative_to(root) for root in self.roots)
        try:
            if inside and path.is_file() and path.stat().st_size <= self.index.limits.max_file_bytes:
                self.index.update(key, path.read_text(encoding="utf-8", errors="replace"))
                return
        except OSError:
            pass
        self.index.remove(key)

    def retrieve(self, uri: str, source: str, offset: int, open_files: int) -> list[tuple[str, str]]:
        """Context files from the workspace index for a cursor at ``offset`` of ``uri`` ([] without one)."""
        key = self.index_key(uri)
        if self.index is None or key is None:
            return []
        doc_key = unquote(uri)
        for other in list(self._dirty):
            if other != doc_key:
                self.refresh(other)
        return self.index.context(source[:offset], key, retrieval_budget(self.settings.budget, open_files))

    def index_stats(self) -> dict[str, Any]:
        index = self.index
        out: dict[str, Any] = {"state": self.index_state}
        if index is not None:
            out.update(files=index.files, chunks=index.chunks, bytes=index.bytes, errors=len(index.errors),
                       skipped=len(index.skipped), seconds=round(self.index_seconds or 0.0, 3))
        return out

    def others(self, uri: str) -> list[OtherFile]:
        out = []
        for other_uri, doc in self.workspace.text_documents.items():
            if other_uri == unquote(uri):
                continue
            st = self.docs.get(other_uri) or _DocState()
            out.append(OtherFile(_display_path(other_uri, self.workspace.root_path), doc.source, st.edited_line,
                                 st.edited_at))
        return out

    # ------------------------------------------------------------------ completion
    async def complete(self, uri: str, position: types.Position, *, invoked: bool) -> _Answer | None:
        """The completions for ``position`` of ``uri``, or None when a newer request or an edit
        superseded this one."""
        started = time.monotonic()
        self.counters.requests += 1
        doc = self.document(uri)
        offset = self.offset(doc, position)
        self.supersede(uri)
        st = self.state(uri)
        ticket = st.ticket
        superseded = st.superseded = asyncio.Event()
        if st.debounce is None:
            st.debounce = self.new_debounce()
        debounce = st.debounce
        wait = debounce.wait(started, invoked=invoked)
        try:
            if wait > 0:
                self.counters.waiting += 1
                try:
                    await asyncio.wait_for(superseded.wait(), wait)
                except TimeoutError:
                    pass
                finally:
                    self.counters.waiting -= 1
        except asyncio.CancelledError:
            self.counters.cancelled_before_model += 1
            raise
        if st.ticket != ticket:
            self.counters.superseded_before_model += 1
            debounce.superseded()
            return None
        # The document as it is now: an edit since the request came would have superseded it.
        others = self.others(uri)
        ctx = build_context(doc.source, offset, path=_display_path(uri, self.workspace.root_path),
                            language_id=st.language_id or doc.language_id or "", others=others,
                            budget=self.settings.budget,
                            retrieved=self.retrieve(uri, doc.source, offset, len(others)))
        start = word_start(ctx.line_prefix)
        typed = ctx.line_prefix[start:]
        start_col = position.character - doc.position_codec.client_num_units(typed)
        n = INVOKED_ITEMS if invoked else 1
        max_tokens = self.settings.max_tokens if invoked else self.settings.auto_max_tokens
        requests = [FimRequest(ctx.prefix, ctx.suffix, ctx.extra, max_tokens,
                               temperature=0.0 if i == 0 else 0.6, seed=i,
                               stop=[] if multiline(ctx) else ["\n"]) for i in range(n)]

        def enough(text: str) -> bool:
            return shape(text, ctx, final=False, max_lines=self.settings.max_lines).done

        calls = [asyncio.ensure_future(self.model.complete(r, enough)) for r in requests]
        task = st.model_task = asyncio.ensure_future(asyncio.gather(*calls))
        try:
            # Shielded, so that a supersede (which cancels the model task) and $/cancelRequest (which
            # cancels this handler) can be told apart below.
            raw = await asyncio.shield(task)
        except asyncio.CancelledError:
            task.cancel()  # stops the model: the scheduler drops the row at its next step
            self.counters.stopped_in_model += 1
            if _handler_cancelled():
                raise
            return None
        except ClientBusy:
            self.counters.busy += 1
            return None
        except ClientError as e:
            self.counters.errors += 1
            self.show_error(str(e))
            raise RequestFailed(str(e)) from e
        finally:
            for call in calls:  # gather leaves the other samples running when one fails
                call.cancel()
            if st.model_task is task:
                st.model_task = None
        texts: list[str] = []
        for r in raw:
            text = shape(r, ctx, max_lines=self.settings.max_lines).text
            if text and text not in texts:
                texts.append(text)
        latency = time.monotonic() - started
        if not invoked:  # the debounce weighs the model's time for what typing triggers
            debounce.answered(latency - wait)
        self.counters.answered += 1
        completion_id = uuid.uuid4().hex[:12]
        if texts:
            self.served[completion_id] = _Served(texts[0], latency * 1000, st.language_id)
            while len(self.served) > RECENT_IDS:
                self.served.popitem(last=False)
            self.record({"event": "served", "id": completion_id, "latency_ms": round(latency * 1000, 1),
                         "chars": len(texts[0]), "language": st.language_id, "items": len(texts)})
        return _Answer(texts, completion_id, typed, _range(position.line, start_col, position.character))

    def new_debounce(self) -> Debounce:
        return Debounce(min_s=self.settings.debounce_min_s, max_s=self.settings.debounce_max_s)

    def on_feedback(self, params: Any) -> None:
        data = _as_dict(params)
        event = data.get("event")
        if event not in ("shown", "accepted", "dismissed"):
            self.show_error(f"{FEEDBACK_METHOD}: unknown event {event!r} (shown, accepted or dismissed)")
            return
        served = self.served.get(str(data.get("id")))
        chars = data.get("chars")
        if not isinstance(chars, int) or chars < 0:
            chars = len(served.text) if served is not None and event == "accepted" else None
        record: dict[str, Any] = {"event": event, "id": data.get("id")}
        if chars is not None:
            record["chars"] = chars
        if served is not None:
            record["language"] = served.language_id
        self.record(record)


def _as_dict(params: Any) -> dict[str, Any]:
    """The params of a custom message (pygls hands them over as a dict or a named tuple)."""
    if isinstance(params, dict):
        return params
    if hasattr(params, "_asdict"):
        return dict(params._asdict())
    return dict(getattr(params, "__dict__", {}))


def _handler_cancelled() -> bool:
    """Whether the running handler task itself was cancelled (``$/cancelRequest``), as opposed to the
    model task under it (a supersede)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _display_path(uri: str, root: str | None) -> str:
    """The path a prompt names: relative to the workspace root when inside it."""
    parsed = urlparse(uri)
    path = unquote(parsed.path) if parsed.scheme in ("file", "") else uri
    return _relative(path, root)


def _relative(path: str, root: str | None) -> str:
    if root and path.startswith(root.rstrip("/") + "/"):
        return path[len(root.rstrip("/")) + 1:]
    return path


def _roots(params: types.InitializeParams) -> list[Path]:
    """The workspace folders of ``initialize``: ``workspaceFolders``, else ``rootUri``, else ``rootPath``."""
    uris = [f.uri for f in params.workspace_folders or []] or ([params.root_uri] if params.root_uri else [])
    paths = [Path(unquote(urlparse(u).path)) for u in uris if urlparse(u).scheme in ("file", "")]
    if not paths and params.root_path:
        paths = [Path(params.root_path)]
    return [p for p in paths if p.is_dir()]


def _flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"repoContext must be true or false, got {value!r}")
    return value


def _accept_command(completion_id: str, text: str) -> types.Command:
    """The command an item runs once inserted: the acceptance event, without a custom client."""
    return types.Command(title="smallcode: accepted", command=ACCEPT_COMMAND, arguments=[completion_id, len(text)])


def _range(line: int, start: int, end: int) -> types.Range:
    return types.Range(types.Position(line, start), types.Position(line, end))


def create_server(model: CompletionModel, settings: Settings | None = None) -> SmallcodeServer:
    """The language server with every feature registered."""
    server = SmallcodeServer(model, settings)

    @server.feature(types.INITIALIZE)
    def initialize(ls: SmallcodeServer, params: types.InitializeParams) -> None:
        options = params.initialization_options if isinstance(params.initialization_options, dict) else {}
        s = ls.settings
        try:
            b = s.budget
            ls.settings = replace(
                s, max_tokens=int(options.get("maxTokens", s.max_tokens)),
                auto_max_tokens=int(options.get("automaticMaxTokens", options.get("maxTokens", s.auto_max_tokens))),
                max_lines=int(options.get("maxLines", s.max_lines)),
                debounce_min_s=float(options.get("debounceMinMs", s.debounce_min_s * 1000)) / 1000,
                debounce_max_s=float(options.get("debounceMaxMs", s.debounce_max_s * 1000)) / 1000,
                budget=replace(b, prefix_tokens=int(options.get("prefixTokens", b.prefix_tokens)),
                               suffix_tokens=int(options.get("suffixTokens", b.suffix_tokens)),
                               extra_tokens=int(options.get("extraTokens", b.extra_tokens))),
                repo_context=_flag(options.get("repoContext", s.repo_context)))
        except (TypeError, ValueError) as e:
            raise JsonRpcInvalidParams(f"initializationOptions: {e}") from e
        if min(ls.settings.max_tokens, ls.settings.auto_max_tokens, ls.settings.max_lines) < 1:
            raise JsonRpcInvalidParams("initializationOptions: maxTokens, automaticMaxTokens and maxLines must be >= 1")
        ls.settings.debounce_max_s = max(ls.settings.debounce_max_s, ls.settings.debounce_min_s)
        ls.roots = _roots(params)

    @server.feature(types.INITIALIZED)
    async def initialized(ls: SmallcodeServer, params: types.InitializedParams) -> None:
        ls.start_index()

    @server.feature(types.TEXT_DOCUMENT_DID_OPEN)
    def did_open(ls: SmallcodeServer, params: types.DidOpenTextDocumentParams) -> None:
        st = ls.state(params.text_document.uri)
        st.language_id, st.edited_at = params.text_document.language_id, time.monotonic()
        ls.mark_dirty(params.text_document.uri)

    @server.feature(types.TEXT_DOCUMENT_DID_CHANGE)
    def did_change(ls: SmallcodeServer, params: types.DidChangeTextDocumentParams) -> None:
        uri = params.text_document.uri
        ls.supersede(uri)
        st = ls.state(uri)
        now = time.monotonic()
        st.edited_at = now
        if st.debounce is None:
            st.debounce = ls.new_debounce()
        st.debounce.edited(now)
        last = params.content_changes[-1] if params.content_changes else None
        if isinstance(last, types.TextDocumentContentChangePartial):
            st.edited_line = last.range.start.line
        ls.mark_dirty(uri)

    @server.feature(types.TEXT_DOCUMENT_DID_SAVE)
    def did_save(ls: SmallcodeServer, params: types.DidSaveTextDocumentParams) -> None:
        ls.refresh(unquote(params.text_document.uri))

    @server.feature(types.WORKSPACE_DID_CHANGE_WATCHED_FILES)
    def did_change_watched(ls: SmallcodeServer, params: types.DidChangeWatchedFilesParams) -> None:
        for change in params.changes:
            uri = unquote(change.uri)
            if uri in ls.workspace.text_documents:  # open: the editor's text wins
                ls.mark_dirty(uri)
            else:
                ls.reread(uri)

    @server.feature(types.TEXT_DOCUMENT_DID_CLOSE)
    def did_close(ls: SmallcodeServer, params: types.DidCloseTextDocumentParams) -> None:
        ls.supersede(params.text_document.uri)
        ls.docs.pop(params.text_document.uri, None)
        ls.reread(unquote(params.text_document.uri))

    @server.feature(types.TEXT_DOCUMENT_INLINE_COMPLETION, types.InlineCompletionOptions())
    async def inline_completion(ls: SmallcodeServer, params: types.InlineCompletionParams
                                ) -> types.InlineCompletionList:
        invoked = params.context.trigger_kind == types.InlineCompletionTriggerKind.Invoked
        answer = await ls.complete(params.text_document.uri, params.position, invoked=invoked)
        if answer is None:
            return types.InlineCompletionList(items=[])
        return types.InlineCompletionList(items=[types.InlineCompletionItem(
            insert_text=answer.typed + text, filter_text=answer.typed + text, range=answer.range,
            command=_accept_command(answer.id, text)) for text in answer.texts])

    @server.feature(types.TEXT_DOCUMENT_COMPLETION, types.CompletionOptions(trigger_characters=[".", "(", " "]))
    async def completion(ls: SmallcodeServer, params: types.CompletionParams) -> types.CompletionList:
        invoked = params.context is None or params.context.trigger_kind == types.CompletionTriggerKind.Invoked
        answer = await ls.complete(params.text_document.uri, params.position, invoked=invoked)
        if answer is None:
            return types.CompletionList(is_incomplete=True, items=[])
        items = []
        for i, text in enumerate(answer.texts):
            full = answer.typed + text
            items.append(types.CompletionItem(
                label=full.split("\n", 1)[0].strip() or text.strip().split("\n", 1)[0],
                kind=types.CompletionItemKind.Text, detail="smallcode", filter_text=full, sort_text=f"0{i}",
                preselect=i == 0, documentation=types.MarkupContent(types.MarkupKind.Markdown, f"```\n{full}\n```"),
                text_edit=types.TextEdit(answer.range, full),
                command=_accept_command(answer.id, text)))
        # Incomplete: the next keystroke asks again instead of filtering these.
        return types.CompletionList(is_incomplete=True, items=items)

    @server.command(ACCEPT_COMMAND)
    def accepted(ls: SmallcodeServer, *args: Any) -> None:
        ls.on_feedback({"event": "accepted", "id": args[0] if args else None,
                        "chars": args[1] if len(args) > 1 else None})

    @server.feature(FEEDBACK_METHOD)
    def on_feedback(ls: SmallcodeServer, params: Any) -> None:
        ls.on_feedback(params)

    @server.feature(STATS_METHOD)
    def stats(ls: SmallcodeServer, params: Any) -> dict[str, Any]:
        c = ls.counters
        return {"requests": c.requests, "waiting": c.waiting, "model_calls": ls.model.calls,
                "superseded_before_model": c.superseded_before_model,
                "cancelled_before_model": c.cancelled_before_model, "stopped_in_model": c.stopped_in_model,
                "answered": c.answered, "errors": c.errors, "busy": c.busy, "repo_index": ls.index_stats()}

    @server.feature(types.SHUTDOWN)
    async def shutdown(ls: SmallcodeServer, params: Any) -> None:
        ls.stop_index()
        for uri in list(ls.docs):
            ls.supersede(uri)
        await ls.model.close()

    return server
