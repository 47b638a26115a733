"""Corpus discovery: from corpus specs to a sorted list of source files, and reading their documents.

A corpus spec is a directory (walked recursively for files with the wanted extensions), a glob
pattern, a single source file, or a ``.jsonl`` file whose lines are JSON objects holding one
document each (read under :mod:`smallcode.fileio`'s JSONL policy). With no spec, the embedded
corpus is used: the running interpreter's own standard-library sources (``site-packages``
excluded), which every machine has, minus the modules the ``repo`` evaluation suite takes its
problems from (held out, so that suite is never scored on text the model trained on). Explicit specs
are taken as given: nothing is held out of them.

Every directory is walked by one walker, :func:`python_files`. The standard library's library code,
which the ``repo`` suite is mined from, is :func:`stdlib_modules`: the same walk less the
directories that are not library code, its files named by the same :func:`module_name`, so what the
suite is made of and what training holds out cannot drift apart.

Reading is strict: a file that cannot be read or vanished since discovery raises
:class:`DataError` naming it; it is never skipped silently. Deciding whether a readable file is
*wanted* (binary, non-UTF-8, generated, oversized, contaminated) is the data pipeline's job.

The tokenizer, the data pipeline, the miner and the demo build on this module, and it imports none
of them (only ``smallcode.errors`` and ``smallcode.fileio``); the held-out module names come from
:mod:`smallcode.tasks` (see :func:`default_held_out_modules`), a leaf itself.
"""

from __future__ import annotations

import glob
import sysconfig
from collections.abc import Callable, Iterator, Sequence, Set
from dataclasses import dataclass, field
from pathlib import Path
from threading import Event

from smallcode.errors import UserError
from smallcode.fileio import JsonlError, numbered_jsonl

# Directories never entered when walking a corpus directory (nor any hidden one): caches, VCS data,
# installed third-party packages (which are somebody else's corpus, and our held-out set).
SKIP_DIRS = frozenset(
    {"__pycache__", ".git", ".hg", ".svn", ".venv", "venv", "node_modules", "site-packages", "dist-packages"}
)
STDLIB_NOT_LIBRARY_DIRS = frozenset(
    {"test", "tests", "idlelib", "turtledemo", "tkinter", "lib2to3", "ensurepip", "pydoc_data"}
)
"""Standard-library directories (besides ``config-*``) that are not library code or need a display or
a network: the ``repo`` suite's problems never come from them. The embedded corpus keeps them."""
STDLIB_NOT_LIBRARY_MODULES = frozenset({"antigravity", "this", "turtle", "__phello__", "__hello__"})
"""Top-level standard-library modules (and packages) that are jokes, demos or need a display."""
DEFAULT_EXTENSIONS: tuple[str, ...] = (".py",)
JSONL_TEXT_FIELDS: tuple[str, ...] = ("text", "content", "code")
EMBEDDED_LABEL = "<embedded: standard library>"


class DataError(UserError, ValueError):
    """Bad corpus or shard input; the message names the file (and line or field)."""


@dataclass(frozen=True)
class SourceRef:
    """Where a document comes from: a file, or one line of a JSONL file (1-based)."""

    path: Path
    line: int | None = None

    def __str__(self) -> str:
        return f"{self.path}:{self.line}" if self.line is not None else str(self.path)


@dataclass(frozen=True)
class RawDocument:
    """A document's bytes as read, before any filtering or decoding."""

    source: SourceRef
    data: bytes


@dataclass(frozen=True)
class Discovery:
    """The files of a corpus, and the files of the embedded corpus left out of it (file -> module)."""

    files: list[Path]
    held_out: dict[Path, str] = field(default_factory=dict)


def stdlib_root() -> Path:
    """The standard-library source directory of the running interpreter."""
    return Path(sysconfig.get_paths()["stdlib"])


def default_corpus() -> list[Path]:
    """The embedded corpus: the standard-library source directory of the running interpreter."""
    return [stdlib_root()]


def python_files(
    root: Path, extensions: Sequence[str] = DEFAULT_EXTENSIONS, skip_dir: Callable[[str], bool] | None = None,
    *, skip: Callable[[Path], bool] | None = None, limit: int | None = None, stop: Event | None = None,
) -> list[Path]:
    """THE walker: every file under ``root`` with one of ``extensions``, in sorted path order.

    Never enters ``SKIP_DIRS``, a hidden directory, a symlinked one, or one whose name ``skip_dir``
    refuses; never takes a symlinked file. ``skip`` refuses a file or directory by its whole path (a
    repository index's ``.gitignore`` rules); the walk ends once ``limit`` files are found or ``stop``
    is set (a workspace opened at a home directory, a server shutting down). The embedded corpus, the
    ``repo`` suite's miner (:func:`stdlib_modules`), the held-out set, the demo and the repository
    index all walk with it, so what the suite is mined from and what training holds out name the same
    files.
    """
    found: list[Path] = []

    def walk(here: Path) -> None:
        for p in sorted(here.iterdir()):
            if (limit is not None and len(found) >= limit) or (stop is not None and stop.is_set()):
                return
            if p.is_symlink():
                continue
            if p.is_dir():
                if p.name not in SKIP_DIRS and not p.name.startswith(".") and not (skip_dir and skip_dir(p.name)) \
                        and not (skip and skip(p)):
                    walk(p)
            elif p.is_file() and p.suffix in extensions and not (skip and skip(p)):
                found.append(p)

    walk(root)
    return found


def module_name(root: Path, path: Path, prefix: str = "") -> str:
    """The dotted module name of the source file ``path`` below ``root`` (``a/b/__init__.py`` is ``a.b``),
    after ``prefix`` (``"pkg."`` when ``root`` is itself package ``pkg``)."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return prefix + ".".join(parts) if parts else prefix.rstrip(".")


def python_modules(
    root: Path, prefix: str = "", skip_dir: Callable[[str], bool] | None = None
) -> list[tuple[str, Path]]:
    """(module name, file) of every ``.py`` file :func:`python_files` finds under ``root``."""
    return [(module_name(root, p, prefix), p) for p in python_files(root, (".py",), skip_dir)]


def _not_library(name: str) -> bool:
    return name in STDLIB_NOT_LIBRARY_DIRS or name.startswith("config-")


def stdlib_modules() -> list[tuple[str, Path]]:
    """(module name, file) of the standard library's own library code: the embedded corpus's walk
    without ``STDLIB_NOT_LIBRARY_DIRS`` and ``STDLIB_NOT_LIBRARY_MODULES``. What the ``repo`` suite is
    mined from."""
    return [(m, p) for m, p in python_modules(stdlib_root(), skip_dir=_not_library)
            if m.split(".")[0] not in STDLIB_NOT_LIBRARY_MODULES]


def default_held_out_modules() -> frozenset[str]:
    """The modules held out of the embedded corpus unless told otherwise: those of the ``repo`` suite.

    The one place that default is looked up; everything else takes the set as a parameter.
    """
    from smallcode.tasks import repo_modules

    return repo_modules()


def held_out_files(root: Path, modules: Set[str]) -> dict[Path, str]:
    """Every file of the walk of ``root`` that one of ``modules`` lives in, mapped to that module's name.

    Only a module's own file (``a/b.py`` or ``a/b/__init__.py``): the submodules of a package are
    modules of their own. Named by :func:`module_name`, as the miner names the modules it mines.
    """
    return {path: m for m, path in python_modules(root) if m in modules}


def discover(
    specs: Sequence[str | Path] | None,
    extensions: Sequence[str] = DEFAULT_EXTENSIONS,
    held_out_modules: Set[str] | None = None,
) -> Discovery:
    """Expand corpus specs into a sorted, de-duplicated list of files (JSONL files kept as such).

    An explicitly named file is kept whatever its extension; a spec matching nothing is an error,
    because a typo must not silently shrink the corpus. With no spec, the embedded corpus is walked
    without the files of ``held_out_modules`` (None: :func:`default_held_out_modules`; an empty set
    holds nothing out); with specs, ``held_out_modules`` is not used.
    """
    held: dict[Path, str] = {}
    if not specs:
        specs = default_corpus()
        modules = default_held_out_modules() if held_out_modules is None else held_out_modules
        for root in specs:
            held.update(held_out_files(root, modules))
    found: set[Path] = set()
    for spec in specs:
        path = Path(spec)
        if path.is_dir():
            found.update(python_files(path, extensions))
        elif path.is_file():
            found.add(path)
        elif any(ch in str(spec) for ch in "*?["):
            matches = [Path(m) for m in glob.glob(str(spec), recursive=True)]
            files = [m for m in matches if m.is_file()]
            for d in (m for m in matches if m.is_dir()):
                files.extend(python_files(d, extensions))
            if not files:
                raise DataError(f"corpus glob {spec!r} matches no file")
            found.update(files)
        else:
            raise DataError(f"corpus path {spec}: no such file or directory")
    held = {p: m for p, m in held.items() if p in found}
    return Discovery(sorted(found - held.keys()), held)


def read_bytes(path: Path) -> bytes:
    """Read a file; a missing or unreadable file is a :class:`DataError` naming it."""
    try:
        return path.read_bytes()
    except FileNotFoundError as e:
        raise DataError(f"{path}: file vanished since discovery (or never existed)") from e
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from e


def _jsonl_documents(path: Path, text_fields: Sequence[str]) -> Iterator[RawDocument]:
    try:
        rows = numbered_jsonl(path, read_bytes(path))
    except JsonlError as e:
        raise DataError(str(e)) from e
    for lineno, obj in rows:
        field = next((f for f in text_fields if f in obj), None)
        if field is None or not isinstance(obj[field], str):
            raise DataError(f"{path}:{lineno}: no string field among {list(text_fields)}")
        yield RawDocument(SourceRef(path, lineno), obj[field].encode("utf-8", "surrogatepass"))


def iter_raw_documents(
    files: Sequence[Path], text_fields: Sequence[str] = JSONL_TEXT_FIELDS
) -> Iterator[RawDocument]:
    """Yield every document of the discovered files, in order: one per file, one per JSONL line."""
    for path in files:
        if path.suffix == ".jsonl":
            yield from _jsonl_documents(path, text_fields)
        else:
            yield RawDocument(SourceRef(path), read_bytes(path))


def read_raw_document(path: Path, text_fields: Sequence[str] = JSONL_TEXT_FIELDS) -> list[RawDocument]:
    """All documents of one file (a list, so it can be shipped back from a worker process)."""
    return list(iter_raw_documents([path], text_fields))
