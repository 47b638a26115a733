"""Atomic writes: content, permissions, no temporaries left, the old file or directory kept on failure;
the one JSONL policy of read_jsonl and JsonlLog."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

import smallcode.fileio as fileio
from smallcode.errors import UserError
from smallcode.fileio import (
    JsonlError,
    JsonlLog,
    atomic_dir,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    numbered_jsonl,
    read_jsonl,
)


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_writes_and_replaces(tmp_path: Path) -> None:
    target = tmp_path / "a.txt"
    atomic_write_text(target, "one")
    atomic_write_bytes(target, memoryview(b"two"))
    assert target.read_bytes() == b"two"
    atomic_write_json(target, {"b": [1, 2]}, indent=1)
    assert target.read_text() == json.dumps({"b": [1, 2]}, indent=1) + "\n"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_default_mode_follows_the_umask_and_a_given_mode_is_exact(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "public", "x")
        atomic_write_text(tmp_path / "private", "x", mode=0o600)
        atomic_write_text(tmp_path / "shared", "x", mode=0o664)  # a given mode is not narrowed by the umask
    finally:
        os.umask(old)
    assert _mode(tmp_path / "public") == 0o644
    assert _mode(tmp_path / "private") == 0o600
    assert _mode(tmp_path / "shared") == 0o664
    # replacing a public file with a private one never leaves it readable by others
    atomic_write_text(tmp_path / "public", "secret", mode=0o600)
    assert _mode(tmp_path / "public") == 0o600


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o002])
def test_as_created_gives_a_private_file_opens_mode_under_the_umask(tmp_path: Path, mask: int) -> None:
    path = tmp_path / "weights"
    atomic_write_text(path, "x", mode=0o600)  # as safetensors writes it
    old = os.umask(mask)
    try:
        assert fileio.umask() == mask
        fileio.as_created(path)
    finally:
        os.umask(old)
    assert _mode(path) == 0o666 & ~mask


def test_a_private_file_is_created_private_and_has_its_mode_before_the_rename(tmp_path: Path, monkeypatch) -> None:
    created: list[int] = []
    at_fsync: list[int] = []
    real_open, real_fsync = os.open, os.fsync

    def open_spy(path, flags, mode=0o777):  # noqa: ANN001, ANN202 - os.open's signature
        if flags & os.O_CREAT:
            created.append(mode)
        return real_open(path, flags, mode)

    def fsync_spy(fd: int) -> None:
        at_fsync.append(stat.S_IMODE(os.fstat(fd).st_mode))
        real_fsync(fd)

    monkeypatch.setattr(fileio.os, "open", open_spy)
    monkeypatch.setattr(fileio.os, "fsync", fsync_spy)
    atomic_write_bytes(tmp_path / "key", b"secret", mode=0o640)
    assert created == [0o600] and at_fsync == [0o640]
    assert _mode(tmp_path / "key") == 0o640


def test_crash_mid_write_keeps_the_old_file_and_no_temporary(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "state.json"
    atomic_write_text(target, "old")

    def crash(fd: int) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(fileio.os, "fsync", crash)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_text(target, "new" * 1000, mode=0o600)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_atomic_dir_creates_and_replaces(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "out"
    with atomic_dir(target) as tmp:
        assert tmp.parent == target.parent and tmp.name.startswith(".out.") and not target.exists()
        (tmp / "a").write_text("1")
        (tmp / "sub").mkdir()
        (tmp / "sub" / "b").write_text("2")
    assert (target / "a").read_text() == "1" and (target / "sub" / "b").read_text() == "2"
    with atomic_dir(target) as tmp:
        (tmp / "c").write_text("3")
    assert sorted(p.name for p in target.iterdir()) == ["c"]
    assert [p.name for p in target.parent.iterdir()] == ["out"]


def test_atomic_dir_failure_keeps_the_old_directory(tmp_path: Path) -> None:
    target = tmp_path / "out"
    with atomic_dir(target) as tmp:
        (tmp / "a").write_text("old")
    with pytest.raises(RuntimeError, match="stage failed"), atomic_dir(target) as tmp:
        (tmp / "a").write_text("new")
        raise RuntimeError("stage failed")
    assert (target / "a").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_atomic_dir_puts_the_old_directory_back_if_the_new_one_cannot_take_its_place(
        tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "out"
    with atomic_dir(target) as tmp:
        (tmp / "a").write_text("old")
    real_rename = os.rename

    def failing(src, dst) -> None:  # noqa: ANN001 - os.rename's signature
        if Path(src).name.startswith(".out.tmp-"):
            raise OSError("rename refused")
        real_rename(src, dst)

    monkeypatch.setattr(fileio.os, "rename", failing)
    with pytest.raises(OSError, match="rename refused"), atomic_dir(target) as tmp:
        (tmp / "a").write_text("new")
    assert (target / "a").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


# ---- JSONL ----------------------------------------------------------------------------------------
def test_jsonl_skips_blank_lines_and_numbers_rows_by_their_line(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_text('{"a": 1}\n\n   \n{"a": "\u00e9"}\n')
    assert read_jsonl(path) == [{"a": 1}, {"a": "é"}]
    assert numbered_jsonl(path) == [(1, {"a": 1}), (4, {"a": "é"})]
    assert numbered_jsonl("elsewhere.jsonl", b'{"b": 2}') == [(1, {"b": 2})]  # bytes in memory, named
    with pytest.raises(FileNotFoundError):
        read_jsonl(tmp_path / "absent.jsonl")


@pytest.mark.parametrize(("line", "reason"), [
    ('{"a": ', "not valid JSON"),
    ("[1, 2]", "expected a JSON object, got list"),
    ("\xff\xfe", "not valid UTF-8 (byte 0)"),
])
def test_a_bad_line_before_the_last_is_an_error_naming_file_and_line(tmp_path: Path, line: str, reason: str) -> None:
    path = tmp_path / "x.jsonl"
    path.write_bytes(b'{"a": 1}\n\n' + line.encode("latin-1") + b'\n{"a": 2}\n')
    for read in (read_jsonl, JsonlLog):
        with pytest.raises(JsonlError) as err:
            read(path)
        assert str(err.value).startswith(f"{path}:3: ") and reason in str(err.value)
        assert isinstance(err.value, UserError) and isinstance(err.value, ValueError)
    assert path.read_bytes().endswith(b'{"a": 2}\n')  # nothing cut from a file with a bad middle line


def test_a_bad_last_line_with_its_newline_is_not_a_torn_write(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_text('{"a": 1}\n{"a": \n')
    with pytest.raises(JsonlError, match=":2: not valid JSON"):
        read_jsonl(path)


@pytest.mark.parametrize("read_rows", [True, False])
def test_a_torn_last_line_is_dropped_and_cut_when_appending(tmp_path: Path, read_rows: bool) -> None:
    path = tmp_path / "x.jsonl"
    path.write_text('{"a": 1}\n{"a": 2}\n{"a": 3, "b')  # a crash mid-append
    assert read_jsonl(path) == [{"a": 1}, {"a": 2}]
    assert path.read_text().endswith('"b')  # reading never changes the file
    with JsonlLog(path, read_rows=read_rows) as log:
        assert log.rows == ([{"a": 1}, {"a": 2}] if read_rows else [])
        log.append({"a": 3})
    assert path.read_text() == '{"a": 1}\n{"a": 2}\n{"a": 3}\n'
    assert JsonlLog(path).rows == [{"a": 1}, {"a": 2}, {"a": 3}]


@pytest.mark.parametrize("read_rows", [True, False])
def test_a_complete_last_row_without_its_newline_is_kept(tmp_path: Path, read_rows: bool) -> None:
    path = tmp_path / "x.jsonl"
    path.write_text('{"a": 1}\n{"a": 2}')
    assert read_jsonl(path) == [{"a": 1}, {"a": 2}]
    with JsonlLog(path, read_rows=read_rows) as log:
        log.append({"a": 3})
    assert read_jsonl(path) == [{"a": 1}, {"a": 2}, {"a": 3}]
