"""Atomic writes of files and directories (the one writer every part of smallcode uses), the one JSONL
reader and appender, and file digests.

A file is written to a temporary name in its target's directory, flushed, fsync'd and renamed over
the target, so a reader sees the old file or the new one, never half of one. A directory is built
under a temporary sibling name (``atomic_dir``) and renamed into place when the block that fills it
succeeds. Temporary names start with ``.<target name>.`` so a crashed writer's leftovers are easy to
recognise and remove.

Permissions: with ``mode=None`` a new file gets what ``open()`` would give it (0666 less the umask);
with a ``mode`` the temporary file is created 0600 and set to ``mode`` before the rename, so a
private file is never readable by others, not even for an instant (0600 is for secrets: a token,
expected outputs the sandbox must not see; weights are not, see ``as_created``). What this module does not do:
locking (two writers of one path race, the last rename wins) or durability of the parent
directories above the target's own.

JSONL (one JSON object a line) has one policy, in ``read_jsonl`` and ``JsonlLog``: blank lines are
skipped; a last line without its newline that does not parse is a torn write (a crash mid-append)
and is dropped, and cut from the file when ``JsonlLog`` opens it to append again; any other line
that is not valid UTF-8 JSON holding an object is a ``JsonlError`` naming the file and line, never
skipped, since a silently dropped row changes what a run counts.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from smallcode.errors import UserError


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _temp_name(target: Path, kind: str) -> Path:
    return target.with_name(f".{target.name}.{kind}-{secrets.token_hex(6)}")


@contextmanager
def atomic_file(path: Path, mode: int | None = None) -> Iterator[Path]:
    """Yield a new, empty temporary file beside ``path``; when the block succeeds it is fsync'd and
    renamed over ``path``, when it fails it is removed.

    For writers that need a path rather than bytes (a C compiler's ``-o``); ``atomic_write_bytes``
    is this with a Python write. ``mode`` (e.g. ``0o600``) is set before anything is written.
    """
    path = Path(path)
    while True:
        tmp = _temp_name(path, "tmp")
        try:
            # 0666 lets the umask decide, as open() would; 0600 keeps a private file private from the start.
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666 if mode is None else 0o600)
            break
        except FileExistsError:
            continue
    try:
        if mode is not None:
            os.fchmod(fd, mode)
        os.close(fd)
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def umask() -> int:
    """The process's umask; read from /proc where it can be, since ``os.umask`` can only read it by
    setting it (for an instant, under every other thread too)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def as_created(*paths: Path) -> None:
    """Give ``paths`` the mode ``open()`` gives a new file (0666 less the umask). For files a library
    writes private: safetensors creates its files 0600, as if weights were secrets, and other users
    of a shared machine could not read a checkpoint."""
    mode = 0o666 & ~umask()
    for path in paths:
        os.chmod(path, mode)


def atomic_write_bytes(path: Path, data: bytes | memoryview, mode: int | None = None) -> None:
    """Replace ``path`` by ``data`` in one rename; ``mode`` (e.g. ``0o600``) is set before the rename."""
    with atomic_file(path, mode) as tmp, open(tmp, "wb") as f:
        f.write(data)


def atomic_write_text(path: Path, text: str, mode: int | None = None) -> None:
    """``atomic_write_bytes`` of ``text`` encoded as UTF-8."""
    atomic_write_bytes(path, text.encode("utf-8"), mode=mode)


def atomic_write_json(path: Path, obj: Any, mode: int | None = None, indent: int | None = 2) -> None:
    """``obj`` as JSON (``indent`` spaces, a final newline), written atomically."""
    atomic_write_text(path, json.dumps(obj, indent=indent) + "\n", mode=mode)


@contextmanager
def atomic_dir(target: Path) -> Iterator[Path]:
    """Yield an empty temporary sibling of ``target``; on success it replaces ``target``, on error it goes.

    Every file in it is fsync'd before the rename. An existing ``target`` is first moved aside and
    removed after the new directory is in place, so a crash leaves the old directory (under
    ``.<name>.old-*`` if it falls between the two renames) or the new one, never a mixture.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = _temp_name(target, "tmp")
        try:
            os.mkdir(tmp)  # 0777 less the umask, as mkdir would give the target itself
            break
        except FileExistsError:
            continue
    old = None
    try:
        yield tmp
        for f in sorted(tmp.rglob("*")):
            if f.is_file() and not f.is_symlink():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
        _fsync_dir(tmp)
        if target.exists():
            old = _temp_name(target, "old")
            os.rename(target, old)
        os.rename(tmp, target)
        _fsync_dir(target.parent)
    except BaseException:
        if old is not None and not target.exists():
            os.rename(old, target)  # the new directory never arrived: put the old one back
            old = None
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks (files may be larger than memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# ---- JSONL ----------------------------------------------------------------------------------------
class JsonlError(UserError, ValueError):
    """A JSONL file with a line that is not a JSON object (the message names the file and line)."""


def _jsonl_rows(path: Path, data: bytes) -> list[tuple[int, dict[str, Any]]]:
    """The (line number, row) pairs of ``data``; a last line without its newline that does not parse
    (a torn write) is left out."""
    rows: list[tuple[int, dict[str, Any]]] = []
    lines = data.split(b"\n")
    for lineno, line in enumerate(lines, start=1):
        last = lineno == len(lines)  # no newline after it: the empty remainder, or a torn write
        if not line.strip():
            continue
        try:
            row = json.loads(line.decode("utf-8"))
        except UnicodeDecodeError as e:
            if last:
                break
            raise JsonlError(f"{path}:{lineno}: not valid UTF-8 (byte {e.start})") from e
        except json.JSONDecodeError as e:
            if last:
                break
            raise JsonlError(f"{path}:{lineno}: not valid JSON ({e.msg} at column {e.colno})") from e
        if not isinstance(row, dict):
            raise JsonlError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
        rows.append((lineno, row))
    return rows


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """The JSON objects of ``path``, one a line, under the module's JSONL policy (a torn last line is
    left out; any other bad line raises ``JsonlError``). ``FileNotFoundError`` when it is missing."""
    return [row for _, row in numbered_jsonl(path)]


def numbered_jsonl(path: str | Path, data: bytes | None = None) -> list[tuple[int, dict[str, Any]]]:
    """``read_jsonl`` with each object's 1-based line number, for callers whose own checks of a row
    name its line. ``data``: the file's bytes when they are already in memory (a decompressed copy);
    ``path`` then only names them in errors."""
    path = Path(path)
    return _jsonl_rows(path, path.read_bytes() if data is None else data)


def _last_line(path: Path) -> tuple[int, bytes]:
    """Where the file's last line starts and its bytes, when the file does not end with a newline
    (else its size and nothing); read backwards from the end, so a long log costs one block."""
    with open(path, "rb") as f:
        pos = f.seek(0, os.SEEK_END)
        tail = b""
        while pos > 0:
            step = min(1 << 16, pos)
            pos -= step
            f.seek(pos)
            block = f.read(step)
            newline = block.rfind(b"\n")
            if newline != -1:
                return pos + newline + 1, block[newline + 1:] + tail
            tail = block + tail
        return 0, tail


class JsonlLog:
    """An append-only JSONL file: the rows already there (``rows``, unless ``read_rows=False``: a log
    that is only ever added to need not be read), and ``append``, which writes, flushes and fsyncs
    each row before returning. Opening it cuts a torn last line off the file (and ends a complete last
    row that lacks its newline). Safe to append from several threads."""

    def __init__(self, path: str | Path, read_rows: bool = True) -> None:
        self.path = Path(path)
        self.rows: list[dict[str, Any]] = []
        if read_rows and self.path.exists():
            self.rows = read_jsonl(self.path)
        self._lock = threading.Lock()
        self._f = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - kept open for the run
        start, tail = _last_line(self.path)
        if tail.strip():
            try:
                complete = isinstance(json.loads(tail.decode("utf-8")), dict)
            except (UnicodeDecodeError, json.JSONDecodeError):
                complete = False
            if complete:
                self._f.write("\n")
            else:  # a torn write: the rows before it are whole
                self._f.truncate(start)

    def append(self, row: dict[str, Any]) -> None:
        line = json.dumps(row, ensure_ascii=False) + "\n"
        with self._lock:
            self._f.write(line)
            self._f.flush()
            os.fsync(self._f.fileno())
            self.rows.append(row)

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> JsonlLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
