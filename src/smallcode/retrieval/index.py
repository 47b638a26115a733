"""An in-memory index of a repository's Python files, and the context it retrieves for a completion.

``RepoIndex`` holds, per file (a repository-relative ``/`` path):

* **definitions**: every function, class, method and module-level assignment, by name, with the
  lines worth showing (a function's first ``DEF_LINES`` lines; a class's header and docstring and
  its methods' signatures; an assignment's statement), read with ``ast``. A file that does not parse
  is recorded in ``errors`` and its ``def``/``class`` lines are found by a regular expression instead;
* **imports**: ``(module, name, alias, line)`` per import statement;
* **chunks**: windows of ``CHUNK_LINES`` lines every ``CHUNK_STEP`` lines, scored against a query
  with Okapi BM25 (Robertson and Zaragoza, "The Probabilistic Relevance Framework: BM25 and Beyond",
  2009; the ``ln(1 + (N - n + 0.5) / (n + 0.5))`` IDF that Lucene uses, never negative). The terms
  are identifiers (keywords dropped), lower-cased, plus the parts of a snake_case or camelCase one.

An inverted index (term -> chunk -> term frequency) in plain dicts keeps it incremental:
``update(path, text)`` and ``remove(path)`` touch only that file's postings, where the BM25 libraries
(rank_bm25, bm25s) rebuild their matrices on every change. Memory is bounded by ``IndexLimits``
(files, bytes of text, chunks, bytes per file): what would pass a cap is not indexed and is listed in
``skipped``. A lock makes the index safe to build in one thread while another queries or updates it.

``context(before, path, budget)`` is the retrieval for one completion: the definitions of the names
used in the last ``NAME_LINES`` lines before the cursor (the nearest name first; a name the text
imports from a module resolves to that module's definition, any other name counts only when the
repository defines it at most ``MAX_CANDIDATES`` times), then the chunks most similar to the last
``QUERY_LINES`` lines, within a character budget, never from ``path`` itself (the cursor's file is
the prompt's prefix and suffix already). It answers ``(path, text)`` pairs, one per file, pieces in
line order with a ``# ...`` line between pieces that are not adjacent, the most relevant file last
(nearest the cursor's file): the shape ``lsp.context.build_context`` and ``runtime.formats`` take.
"""

from __future__ import annotations

import ast
import builtins
import fnmatch
import keyword
import math
import re
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from smallcode.corpus import python_files as walk_files

CHUNK_LINES = 12
"""Lines per lexical-search chunk."""
CHUNK_STEP = 6
"""A chunk starts every this many lines (chunks overlap by half, so a passage is never only split)."""
DEF_LINES = 10
"""Most lines of one definition shown (the signature, the docstring, the start of the body)."""
SIGNATURE_LINES = 3
"""Most lines of one method signature in a class's outline."""
NAME_LINES = 8
"""Lines before the cursor whose names are looked up as definitions."""
QUERY_LINES = 12
"""Lines before the cursor that make the BM25 query."""
MAX_NAMES = 16
"""Most distinct names looked up per completion."""
MAX_CANDIDATES = 2
"""A name not resolved through an import is looked up only if the repository defines it at most this
often (``get``, ``run``, ``__init__`` are everywhere and would say nothing)."""
K1 = 1.2
B = 0.75
GAP = "# ...\n"
"""The line between two pieces of one file that are not adjacent."""

SKIP_DIRS = frozenset({".git", ".hg", ".svn", "__pycache__", "node_modules", ".venv", "venv", "env", ".tox",
                       ".nox", "site-packages", "dist-packages", "build", "dist", ".eggs", ".mypy_cache",
                       ".pytest_cache", ".ruff_cache"})
"""Directories never walked into (virtual environments, build output, caches, version control)."""

IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
CAMEL = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|[0-9]+")
LEXICAL_DEF = re.compile(r"^([ \t]*)(?:async[ \t]+)?(def|class)[ \t]+([A-Za-z_][A-Za-z0-9_]*)", re.M)
IMPORT_LINE = re.compile(r"^[ \t]*(?:from[ \t]+(\.*[\w.]*)[ \t]+import[ \t]+\(?([^#\n]*)|import[ \t]+([^#\n]*))",
                         re.M)
_BUILTINS = frozenset(dir(builtins))
_KEYWORDS = frozenset(keyword.kwlist) | frozenset(keyword.softkwlist)


@dataclass(frozen=True)
class IndexLimits:
    """Caps that bound the index's memory: a file that would pass one is skipped (``skipped``)."""

    max_files: int = 20_000
    max_file_bytes: int = 1_000_000
    """Larger files are generated or data, not code to read."""
    max_total_bytes: int = 64_000_000
    max_chunks: int = 500_000


@dataclass(frozen=True)
class RetrievalBudget:
    """How much one retrieval may answer."""

    chars: int = 1536
    """Characters of context, all files together."""
    files: int = 4
    """Most files answered."""
    definition_share: float = 2 / 3
    """The part of ``chars`` definitions may take before the chunks; what they leave goes to chunks."""


@dataclass(frozen=True)
class Definition:
    """Where a name is defined, and the lines (0-based, end exclusive) shown for it."""

    name: str
    qualname: str
    """``Class.method`` for a method, the name otherwise."""
    kind: str
    """"function", "class", "method" or "variable"."""
    path: str
    line: int
    """0-based first line (decorators included)."""
    ranges: tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class Import:
    """One imported name: ``from module import name as alias`` (``import module as alias``: name "")."""

    module: str
    name: str
    alias: str
    line: int


@dataclass(frozen=True)
class Hit:
    """A chunk found by lexical search."""

    path: str
    start: int
    end: int
    score: float


@dataclass
class PreparedFile:
    """One file parsed and chunked (``prepare_file``), ready for ``RepoIndex.insert``."""

    path: str
    lines: list[str]
    size: int
    definitions: list[Definition]
    imports: list[Import]
    chunks: list[tuple[int, int, dict[str, int]]]
    error: str | None = None


@dataclass
class _Stored:
    lines: list[str]
    size: int
    definitions: list[Definition]
    imports: list[Import]
    chunk_ids: list[int] = field(default_factory=list)


# ---------------------------------------------------------------------------------- terms
def bm25_terms(text: str) -> list[str]:
    """The BM25 terms of ``text``: each identifier that is not a keyword, lower-cased, then its parts
    when it has several (``load_config`` -> load_config, load, config; ``HTTPServer`` -> httpserver,
    http, server); terms of one character are dropped."""
    out: list[str] = []
    for word in IDENT.findall(text):
        if word in _KEYWORDS:
            continue
        low = word.lower()
        if len(low) > 1:
            out.append(low)
        parts = [p.lower() for piece in word.split("_") for p in CAMEL.findall(piece)]
        if len(parts) > 1:
            out.extend(p for p in parts if len(p) > 1)
    return out


def _module_of(path: str) -> str:
    """The dotted module a path holds (``pkg/sub/__init__.py`` -> ``pkg.sub``)."""
    stem = path[:-3] if path.endswith(".py") else path
    parts = [p for p in stem.split("/") if p]
    if parts and parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


# ---------------------------------------------------------------------------------- one file
def _signature_end(node: ast.AST, lines: list[str]) -> int:
    """The 0-based line after a def's or class's header (where its body starts, or one past the header)."""
    body = getattr(node, "body", None)
    if body:
        first = body[0]
        return max(node.lineno, first.lineno - 1)  # type: ignore[attr-defined]
    return node.lineno  # type: ignore[attr-defined]


def _docstring_end(node: ast.AST) -> int | None:
    body = getattr(node, "body", None)
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
            and isinstance(body[0].value.value, str):
        return body[0].end_lineno or body[0].lineno
    return None


def _definitions(tree: ast.Module, path: str, lines: list[str]) -> list[Definition]:
    out: list[Definition] = []

    def start_of(node: ast.AST) -> int:
        decorators = getattr(node, "decorator_list", [])
        return min([node.lineno] + [d.lineno for d in decorators]) - 1  # type: ignore[attr-defined]

    def function(node: ast.FunctionDef | ast.AsyncFunctionDef, qualname: str, kind: str) -> None:
        start = start_of(node)
        end = min(node.end_lineno or node.lineno, start + DEF_LINES)
        out.append(Definition(node.name, qualname, kind, path, start, ((start, end),)))

    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            function(node, node.name, "function")
        elif isinstance(node, ast.ClassDef):
            start = start_of(node)
            header_end = _docstring_end(node) or _signature_end(node, lines)
            ranges = [(start, min(header_end, start + DEF_LINES))]
            for item in node.body:
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
                    function(item, f"{node.name}.{item.name}", "method")
                    s = start_of(item)
                    ranges.append((s, min(_signature_end(item, lines), s + SIGNATURE_LINES)))
            out.append(Definition(node.name, node.name, "class", path, start, tuple(ranges)))
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            start = node.lineno - 1
            end = min(node.end_lineno or node.lineno, start + 4)
            for target in targets:
                if isinstance(target, ast.Name):
                    out.append(Definition(target.id, target.id, "variable", path, start, ((start, end),)))
    return out


def _imports(tree: ast.Module) -> list[Import]:
    out: list[Import] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                out.append(Import(a.name, "", a.asname or a.name.split(".")[0], node.lineno - 1))
        elif isinstance(node, ast.ImportFrom):
            module = "." * node.level + (node.module or "")
            for a in node.names:
                out.append(Import(module, a.name, a.asname or a.name, node.lineno - 1))
    return out


def _lexical_definitions(text: str, path: str, lines: list[str]) -> list[Definition]:
    """``def``/``class`` lines found without parsing (a file with a syntax error)."""
    out = []
    for m in LEXICAL_DEF.finditer(text):
        line = text.count("\n", 0, m.start())
        kind = "class" if m.group(2) == "class" else ("method" if m.group(1) else "function")
        out.append(Definition(m.group(3), m.group(3), kind, path, line, ((line, min(len(lines), line + DEF_LINES)),)))
    return out


def lexical_imports(text: str) -> list[Import]:
    """The imports of ``text`` read line by line (text cut at a cursor seldom parses)."""
    out: list[Import] = []
    line, at = 0, 0
    for m in IMPORT_LINE.finditer(text):
        line += text.count("\n", at, m.start())
        at = m.start()
        if m.group(3) is not None:
            for part in m.group(3).split(","):
                bits = part.split()
                if bits and IDENT.fullmatch(bits[0].replace(".", "_")):
                    alias = bits[2] if len(bits) == 3 and bits[1] == "as" else bits[0].split(".")[0]
                    out.append(Import(bits[0], "", alias, line))
        else:
            for part in m.group(2).replace(")", "").split(","):
                bits = part.split()
                if bits and IDENT.fullmatch(bits[0]):
                    alias = bits[2] if len(bits) == 3 and bits[1] == "as" else bits[0]
                    out.append(Import(m.group(1), bits[0], alias, line))
    return out


def _chunks(lines: list[str]) -> list[tuple[int, int, dict[str, int]]]:
    out = []
    for start in range(0, max(1, len(lines)), CHUNK_STEP):
        end = min(len(lines), start + CHUNK_LINES)
        tf: dict[str, int] = defaultdict(int)
        for term in bm25_terms("".join(lines[start:end])):
            tf[term] += 1
        if tf:
            out.append((start, end, dict(tf)))
        if end >= len(lines):
            break
    return out


def prepare_file(path: str, text: str) -> PreparedFile:
    """Parse and chunk one file (no lock held: the expensive part of an update)."""
    lines = text.splitlines(keepends=True)
    error = None
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError, RecursionError) as e:  # RecursionError: nesting deeper than the parser goes
        where = f" line {e.lineno}" if isinstance(e, SyntaxError) and e.lineno else ""
        error = f"does not parse ({type(e).__name__}{where}: {getattr(e, 'msg', None) or e}); indexed lexically"
        definitions, imports = _lexical_definitions(text, path, lines), lexical_imports(text)
    else:
        definitions, imports = _definitions(tree, path, lines), _imports(tree)
    return PreparedFile(path, lines, len(text.encode("utf-8", "replace")), definitions, imports, _chunks(lines), error)


# ---------------------------------------------------------------------------------- the index
class RepoIndex:
    """Definitions, imports and BM25 chunks of a set of files (see the module docstring)."""

    def __init__(self, limits: IndexLimits | None = None) -> None:
        self.limits = limits or IndexLimits()
        self.errors: dict[str, str] = {}
        """Files that do not parse (indexed lexically), with the reason."""
        self.skipped: dict[str, str] = {}
        """Files not indexed, with the cap or read error that kept them out."""
        self._files: dict[str, _Stored] = {}
        self._defs: dict[str, list[Definition]] = defaultdict(list)
        self._postings: dict[str, dict[int, int]] = defaultdict(dict)
        self._chunks: dict[int, tuple[str, int, int, int]] = {}
        """chunk id -> (path, start, end, length in terms)."""
        self._free: list[int] = []
        """Chunk ids given back by removed files, used again first (the score arrays stay as small as
        the most chunks ever held at once)."""
        self._lengths = np.zeros(1024)
        """Terms per chunk id (0 for an id not in use)."""
        self._arrays: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        """A term's posting as (chunk ids, term frequencies) arrays, made when a query first needs it."""
        self._norm: np.ndarray | None = None
        """BM25's length normalisation per chunk id, ``K1 * (1 - B + B * length / average)``."""
        self._total_len = 0
        self._bytes = 0
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ size
    @property
    def files(self) -> int:
        """Files indexed."""
        return len(self._files)

    @property
    def chunks(self) -> int:
        """Chunks indexed."""
        return len(self._chunks)

    @property
    def bytes(self) -> int:
        """Bytes of text indexed."""
        return self._bytes

    def paths(self) -> list[str]:
        """The indexed files' paths, sorted."""
        with self._lock:
            return sorted(self._files)

    def __contains__(self, path: object) -> bool:
        return path in self._files

    # ------------------------------------------------------------------ changes
    def update(self, path: str, text: str) -> bool:
        """Index ``text`` as the file ``path``, replacing what was there; False (and the reason in
        ``skipped``) when a cap keeps it out."""
        return self.insert(prepare_file(path, text))

    def insert(self, data: PreparedFile) -> bool:
        """Store a file ``prepare_file`` made (``update`` in two steps, so that the parse can run
        outside a caller's own lock)."""
        limits = self.limits
        with self._lock:
            self._remove(data.path)
            why = None
            if data.size > limits.max_file_bytes:
                why = f"{data.size} bytes > max_file_bytes {limits.max_file_bytes}"
            elif len(self._files) >= limits.max_files:
                why = f"max_files {limits.max_files} reached"
            elif self._bytes + data.size > limits.max_total_bytes:
                why = f"max_total_bytes {limits.max_total_bytes} reached"
            elif len(self._chunks) + len(data.chunks) > limits.max_chunks:
                why = f"max_chunks {limits.max_chunks} reached"
            if why is not None:
                self.skipped[data.path] = why
                return False
            stored = _Stored(data.lines, data.size, data.definitions, data.imports)
            for start, end, tf in data.chunks:
                cid = self._free.pop() if self._free else len(self._chunks)
                if cid >= len(self._lengths):
                    self._lengths = np.concatenate([self._lengths, np.zeros(len(self._lengths))])
                length = sum(tf.values())
                self._chunks[cid] = (data.path, start, end, length)
                self._lengths[cid] = length
                self._total_len += length
                for term, n in tf.items():
                    self._postings[term][cid] = n
                    self._arrays.pop(term, None)
                self._norm = None
                stored.chunk_ids.append(cid)
            for d in data.definitions:
                self._defs[d.name].append(d)
            self._files[data.path] = stored
            self._bytes += data.size
            if data.error is not None:
                self.errors[data.path] = data.error
            return True

    def remove(self, path: str) -> None:
        """Forget ``path`` (nothing happens when it is not indexed)."""
        with self._lock:
            self._remove(path)

    def _remove(self, path: str) -> None:
        self.errors.pop(path, None)
        self.skipped.pop(path, None)
        stored = self._files.pop(path, None)
        if stored is None:
            return
        self._bytes -= stored.size
        for cid in stored.chunk_ids:
            _, start, end, length = self._chunks.pop(cid)
            self._total_len -= length
            self._lengths[cid] = 0
            self._free.append(cid)
            self._norm = None
            for term in bm25_terms("".join(stored.lines[start:end])):
                self._arrays.pop(term, None)
                posting = self._postings.get(term)
                if posting is not None:
                    posting.pop(cid, None)
                    if not posting:
                        del self._postings[term]
        for d in stored.definitions:
            left = [x for x in self._defs.get(d.name, ()) if x.path != path]
            if left:
                self._defs[d.name] = left
            else:
                self._defs.pop(d.name, None)

    # ------------------------------------------------------------------ queries
    def definitions(self, name: str) -> list[Definition]:
        """Where ``name`` is defined, in path and line order."""
        with self._lock:
            return sorted(self._defs.get(name, ()), key=lambda d: (d.path, d.line))

    def imports(self, path: str) -> list[Import]:
        """The imports of an indexed file ([] for one not indexed)."""
        with self._lock:
            stored = self._files.get(path)
            return list(stored.imports) if stored else []

    def idf(self, term: str) -> float:
        """BM25's inverse document frequency of ``term`` over the chunks."""
        n_chunks, having = len(self._chunks), len(self._postings.get(term, ()))
        return math.log(1 + (n_chunks - having + 0.5) / (having + 0.5))

    def search(self, query: str, k: int = 10, exclude: Iterable[str] = ()) -> list[Hit]:
        """The ``k`` chunks that score best against ``query`` under BM25 (ties: path, line; chunks tied
        with the ``k``-th are kept too), none from the paths in ``exclude``, none scoring 0."""
        terms = set(bm25_terms(query))
        with self._lock:
            if not self._chunks or not terms:
                return []
            if self._norm is None:
                avg = self._total_len / len(self._chunks)
                self._norm = K1 * (1 - B + B * self._lengths / avg)
            norm = self._norm
            scores = np.zeros(len(norm))
            for term in terms:
                posting = self._postings.get(term)
                if not posting:
                    continue
                arrays = self._arrays.get(term)
                if arrays is None:
                    arrays = self._arrays[term] = (np.fromiter(posting.keys(), np.int64, len(posting)),
                                                   np.fromiter(posting.values(), np.float64, len(posting)))
                ids, tf = arrays
                scores[ids] += self.idf(term) * tf * (K1 + 1) / (tf + norm[ids])
            for path in exclude:
                stored = self._files.get(path)
                if stored is not None and stored.chunk_ids:
                    scores[stored.chunk_ids] = 0.0
            found = np.flatnonzero(scores > 0)
            if len(found) > k:
                kth = np.partition(scores[found], len(found) - k)[len(found) - k]
                found = found[scores[found] >= kth]
            hits = [Hit(*self._chunks[int(c)][:3], float(scores[c])) for c in found]
        hits.sort(key=lambda h: (-h.score, h.path, h.start))
        return hits[:k]

    def _resolve(self, name: str, imported: dict[str, Import], path: str) -> list[Definition]:
        """The definitions ``name`` means in the file ``path`` (see the module docstring)."""
        candidates = [d for d in self._defs.get(name, ()) if d.path != path]
        if not candidates:
            return []
        how = imported.get(name)
        if how is not None and how.name:
            module = _absolute(how.module, path)
            chosen = [d for d in candidates
                      if _module_of(d.path) == module or _module_of(d.path).endswith("." + module)]
            # Imported from elsewhere (the standard library, a dependency): not the repository's namesake.
            return chosen[:1]
        if len(candidates) > MAX_CANDIDATES:
            return []
        # Module-level definitions before methods, then by path: a stable choice.
        return sorted(candidates, key=lambda d: (d.kind == "method", d.path, d.line))

    def used_definitions(self, before: str, path: str) -> list[Definition]:
        """The definitions of the names used in the last ``NAME_LINES`` lines of ``before`` (the file
        ``path`` up to the cursor), the nearest use first, none in ``path`` itself (see the module
        docstring for how a name is resolved)."""
        tail = before[-4000:].split("\n")[-NAME_LINES:]
        names: list[str] = []
        for word in reversed(IDENT.findall("\n".join(tail))):
            if word not in names and word not in _KEYWORDS and word not in _BUILTINS:
                names.append(word)
                if len(names) >= MAX_NAMES:
                    break
        imported = {i.alias: i for i in lexical_imports(before)}
        with self._lock:
            return [d for name in names for d in self._resolve(name, imported, path)]

    def context(self, before: str, path: str, budget: RetrievalBudget | None = None) -> list[tuple[str, str]]:
        """The context files for a cursor after ``before`` (the cursor's file up to the cursor) in the
        file ``path``: ``(path, text)`` pairs within ``budget``, the most relevant last."""
        budget = budget or RetrievalBudget()
        if budget.chars <= 0 or budget.files <= 0:
            return []
        pieces: dict[str, list[tuple[int, int]]] = {}
        order: list[str] = []
        used = 0

        def take(where: str, start: int, end: int, limit: int) -> None:
            nonlocal used
            stored = self._files.get(where)
            if stored is None or end <= start:
                return
            if where not in pieces and len(pieces) >= budget.files:
                return
            have = pieces.get(where, [])
            new = [i for i in range(start, min(end, len(stored.lines)))
                   if not any(s <= i < e for s, e in have)]
            cost = sum(len(stored.lines[i]) for i in new) + len(GAP)
            if not new or used + cost > limit:
                return
            used += cost
            pieces.setdefault(where, []).append((start, end))
            if where not in order:
                order.append(where)

        with self._lock:
            def_limit = int(budget.chars * budget.definition_share)
            for d in self.used_definitions(before, path):
                for start, end in d.ranges:
                    take(d.path, start, end, def_limit)
            query = "\n".join(before[-4000:].split("\n")[-QUERY_LINES:])
            for hit in self.search(query, k=4 * budget.files + 8, exclude=(path,)):
                take(hit.path, hit.start, hit.end, budget.chars)
            return [(p, self._render(p, pieces[p])) for p in reversed(order)]

    def _render(self, path: str, ranges: list[tuple[int, int]]) -> str:
        lines = self._files[path].lines
        merged: list[list[int]] = []
        for start, end in sorted(ranges):
            if merged and start <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], end)
            else:
                merged.append([start, end])
        parts = []
        for start, end in merged:
            text = "".join(lines[start:end])
            parts.append(text if text.endswith("\n") else text + "\n")
        return GAP.join(parts)


def _absolute(module: str, path: str) -> str:
    """``module`` as written in ``path`` (``.x``, ``..x`` relative to its package) made absolute."""
    level = len(module) - len(module.lstrip("."))
    if not level:
        return module
    package = _module_of(path).split(".")
    if not path.endswith("__init__.py"):
        package = package[:-1]
    package = package[: len(package) - (level - 1)] if level > 1 else package
    rest = module[level:]
    return ".".join([*package, rest] if rest else package)


# ---------------------------------------------------------------------------------- a directory
def _gitignore(root: Path) -> list[str]:
    try:
        text = (root / ".gitignore").read_text(errors="replace")
    except OSError:
        return []
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith(("#", "!"))]


def _ignored(rel: str, name: str, patterns: Sequence[str], is_dir: bool) -> bool:
    for pattern in patterns:
        dir_only = pattern.endswith("/")
        p = pattern.strip("/")
        if dir_only and not is_dir:
            continue
        anchored = pattern.startswith("/") or "/" in p
        if fnmatch.fnmatch(rel, p) if anchored else fnmatch.fnmatch(name, p):
            return True
    return False


def python_files(root: Path, *, limit: int | None = None, stop: threading.Event | None = None) -> list[Path]:
    """The Python files under ``root`` worth indexing (``smallcode.corpus.python_files``' walk), sorted:
    no version control, virtual environment, build output or cache directory, nothing the root's
    ``.gitignore`` names (its simple patterns; a ``!`` exception is not honoured), no symbolic link
    followed. The walk ends once ``limit`` files are found (a workspace opened at a home directory)
    or ``stop`` is set."""
    patterns = _gitignore(root)

    def skip(path: Path) -> bool:
        rel = path.relative_to(root).as_posix()
        if path.is_dir():
            return (path.name in SKIP_DIRS or path.name.endswith(".egg-info") or (path / "pyvenv.cfg").exists()
                    or _ignored(rel, path.name, patterns, True))
        return _ignored(rel, path.name, patterns, False)

    return sorted(walk_files(root, (".py",), skip=skip, limit=limit, stop=stop))


def index_directory(root: str | Path, index: RepoIndex | None = None, *, key: Callable[[Path], str] | None = None,
                    stop: threading.Event | None = None, progress: bool = False) -> RepoIndex:
    """``index`` (a new one by default) with every Python file under ``root`` (``python_files``), each
    under ``key(file)`` (default: its root-relative path); a file that cannot be read is listed in
    ``skipped``. ``stop``, once set, ends the walk early (a server shutting down)."""
    root = Path(root)
    index = index or RepoIndex()
    files = python_files(root, limit=index.limits.max_files + 1, stop=stop)
    if progress:
        from tqdm import tqdm

        files = tqdm(files, desc="index", unit="file")  # type: ignore[assignment]
    for file in files:
        if stop is not None and stop.is_set():
            break
        rel = key(file) if key is not None else file.relative_to(root).as_posix()
        try:
            size = file.stat().st_size
            if size > index.limits.max_file_bytes:
                index.skipped[rel] = f"{size} bytes > max_file_bytes {index.limits.max_file_bytes}"
                continue
            text = file.read_text(encoding="utf-8", errors="replace")
        except OSError as e:
            index.skipped[rel] = f"cannot be read: {e.strerror or e}"
            continue
        index.insert(prepare_file(rel, text))
    return index
