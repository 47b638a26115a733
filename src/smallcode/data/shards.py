"""The token shard format: flat arrays of token ids with JSON headers, and an index.

A prepared directory holds::

    index.json             written last: format version, tokenizer hash, dtype, splits -> shards,
                           the prepare summary and config. A directory without it is incomplete.
    tokenizer.json         a copy of the tokenizer used (the loader needs it for FIM)
    removed.jsonl          one line per held-out file or decontaminated document, and why
    train-00000.bin        token ids, little-endian ``dtype``, documents each followed by EOT
    train-00000.json       that shard's header: tokenizer hash, dtype, token count, sha256 of the
                           .bin, and the source manifest (source, content sha256, offset, tokens)
    validation-00000.bin / .json

Every file is written to a temporary name and renamed; ``prepare`` also builds the whole
directory under a temporary name, so a crash never leaves a half shard that looks complete.
Opening checks the header against the file size (a truncated shard is an error naming it) and,
on request, the sha256. This module does not tokenise or batch.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from smallcode.corpus import DataError
from smallcode.fileio import atomic_write_bytes, atomic_write_json

FORMAT_VERSION = 1
INDEX_FILE = "index.json"
REMOVED_FILE = "removed.jsonl"
SPLITS = ("train", "validation")


def dtype_for_vocab(vocab_size: int) -> str:
    """uint16 when every id fits, else uint32."""
    return "uint16" if vocab_size <= 1 << 16 else "uint32"

def write_shard(
    directory: Path, name: str, tokens: np.ndarray, manifest: list[dict[str, Any]], tokenizer_hash: str
) -> dict[str, Any]:
    """Write ``name.bin`` then ``name.json`` (each atomically); return the index entry."""
    data = np.ascontiguousarray(tokens).astype(tokens.dtype.newbyteorder("<"), copy=False)
    digest = hashlib.sha256(memoryview(data).cast("B")).hexdigest()
    header = {
        "format_version": FORMAT_VERSION,
        "tokenizer_hash": tokenizer_hash,
        "dtype": str(tokens.dtype),
        "tokens": int(tokens.size),
        "documents": len(manifest),
        "sha256": digest,
        "sources": manifest,
    }
    atomic_write_bytes(directory / f"{name}.bin", memoryview(data).cast("B"))
    atomic_write_json(directory / f"{name}.json", header, indent=1)
    return {"name": name, "tokens": int(tokens.size), "documents": len(manifest), "sha256": digest}


@dataclass(frozen=True)
class ShardInfo:
    """One shard as listed in the index."""

    path: Path
    tokens: int
    sha256: str


def _read_json(path: Path) -> dict[str, Any]:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise DataError(f"{path}: missing") from e
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: unreadable or not JSON ({e})") from e
    if not isinstance(obj, dict):
        raise DataError(f"{path}: expected a JSON object")
    return obj


def read_index(directory: str | Path) -> dict[str, Any]:
    """The index of a prepared directory; a missing index means preparation never finished."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(f"{directory}: not a directory of token shards")
    path = directory / INDEX_FILE
    if not path.exists():
        raise DataError(f"{path}: missing; {directory} is not a finished `smallcode data prepare` output")
    index = _read_json(path)
    if index.get("format_version") != FORMAT_VERSION:
        raise DataError(
            f"{path}: format_version {index.get('format_version')!r}, this code reads {FORMAT_VERSION}"
        )
    for key in ("tokenizer_hash", "dtype", "splits"):
        if key not in index:
            raise DataError(f"{path}: field {key!r} missing")
    return index


def split_shards(directory: Path, index: dict[str, Any], split: str) -> list[ShardInfo]:
    if split not in index["splits"]:
        raise DataError(f"{directory / INDEX_FILE}: no split {split!r} (has {sorted(index['splits'])})")
    return [
        ShardInfo(directory / f"{s['name']}.bin", int(s["tokens"]), s["sha256"])
        for s in index["splits"][split]["shards"]
    ]


def open_shard(info: ShardInfo, dtype: str, tokenizer_hash: str, verify: bool = False) -> np.memmap:
    """Memory-map a shard after checking its header and size (and sha256 when ``verify``)."""
    header = _read_json(info.path.with_suffix(".json"))
    if header.get("tokenizer_hash") != tokenizer_hash:
        raise DataError(f"{info.path}: tokenized with another tokenizer than its index says (hash mismatch)")
    if header.get("dtype") != dtype or header.get("tokens") != info.tokens:
        raise DataError(f"{info.path}: header disagrees with index (dtype/tokens)")
    itemsize = np.dtype(dtype).itemsize
    try:
        size = info.path.stat().st_size
    except FileNotFoundError as e:
        raise DataError(f"{info.path}: shard file missing") from e
    if size != info.tokens * itemsize:
        raise DataError(
            f"{info.path}: truncated or corrupt: {size} bytes, header says {info.tokens} tokens x {itemsize} bytes"
        )
    arr = np.memmap(info.path, dtype=np.dtype(dtype).newbyteorder("<"), mode="r", shape=(info.tokens,))
    if verify and hashlib.sha256(memoryview(np.asarray(arr)).cast("B")).hexdigest() != info.sha256:
        raise DataError(f"{info.path}: sha256 differs from its header (corrupted)")
    return arr


def verify_directory(directory: str | Path) -> dict[str, int]:
    """Check every shard of a directory (sizes, headers, sha256); returns tokens per split."""
    directory = Path(directory)
    index = read_index(directory)
    out = {}
    for split in index["splits"]:
        total = 0
        for info in split_shards(directory, index, split):
            total += open_shard(info, index["dtype"], index["tokenizer_hash"], verify=True).size
        out[split] = total
    return out
