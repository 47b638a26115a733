"""Corpus discovery and the shard format's small pieces."""

from __future__ import annotations

import json
import sysconfig
from pathlib import Path

import numpy as np
import pytest

from smallcode.data import DataError, default_corpus
from smallcode.data.discover import discover_files, iter_raw_documents
from smallcode.data.shards import ShardInfo, dtype_for_vocab, open_shard, write_shard


def test_walk_skips_caches_and_installed_packages(tmp_path: Path) -> None:
    for rel in ["a.py", "pkg/b.py", "pkg/c.txt", "__pycache__/d.py", ".git/e.py", "lib/site-packages/f.py"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x = 1\n")
    assert discover_files([tmp_path]) == [tmp_path / "a.py", tmp_path / "pkg" / "b.py"]
    # An explicitly named file is taken whatever its suffix; globs expand; duplicates collapse.
    got = discover_files([tmp_path / "pkg" / "c.txt", str(tmp_path / "*.py"), tmp_path / "a.py"])
    assert got == [tmp_path / "a.py", tmp_path / "pkg" / "c.txt"]
    assert discover_files([tmp_path], extensions=[".txt"]) == [tmp_path / "pkg" / "c.txt"]
    with pytest.raises(DataError, match="matches no file"):
        discover_files([str(tmp_path / "*.rs")])


def test_default_corpus_is_the_standard_library_without_site_packages() -> None:
    (root,) = default_corpus()
    assert root == Path(sysconfig.get_paths()["stdlib"])
    files = discover_files([root / "json"])
    assert root / "json" / "decoder.py" in files
    assert not any("site-packages" in p.parts for p in files)


def test_jsonl_errors_name_file_and_line(tmp_path: Path) -> None:
    f = tmp_path / "d.jsonl"
    f.write_text(json.dumps({"text": "a"}) + "\n\n" + json.dumps({"code": "b"}) + "\n")
    docs = list(iter_raw_documents([f]))
    assert [(str(d.source), d.data) for d in docs] == [(f"{f}:1", b"a"), (f"{f}:3", b"b")]
    for bad, message in [
        ("{oops", r"d.jsonl:2: not a JSON object"),
        ('{"title": "x"}', r"d.jsonl:2: no string field"),
    ]:
        f.write_text(json.dumps({"text": "a"}) + "\n" + bad + "\n")
        with pytest.raises(DataError, match=message):
            list(iter_raw_documents([f]))


def test_large_vocabularies_get_uint32_shards(tmp_path: Path) -> None:
    assert dtype_for_vocab(65536) == "uint16" and dtype_for_vocab(65537) == "uint32"
    tokens = np.array([0, 70_000, 4_000_000_000], dtype="uint32")
    entry = write_shard(tmp_path, "train-00000", tokens, [], "h" * 64)
    arr = open_shard(
        ShardInfo(tmp_path / "train-00000.bin", entry["tokens"], entry["sha256"]), "uint32", "h" * 64, True
    )
    assert arr.tolist() == tokens.tolist()
