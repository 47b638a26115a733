"""The offline teacher cache: a teacher's top-k log-probs for every sample a training run will visit.

``build_teacher_cache(teacher, loader, steps, out_dir, top_k)`` runs the teacher once over the union of
the samples that ``loader``'s run visits in steps [0, steps) on all its ranks, and keeps, per input
position, the top-k log-probs at temperature 1 (in descending order) and their token ids. Training
applies its temperature afterwards: the target is ``softmax(log-probs / t)`` over those k ids, which is
the teacher at temperature t renormalised on its top-k (see :mod:`smallcode.train.distill`).
``TeacherCache.open(dir, tokenizer_hash, seq_len, teacher_hash)`` and ``.lookup(sample_ids, input_ids)``
serve a batch's rows back.

A cache directory holds::

    build.json                  the build plan (everything below but the chunk list); written first
    chunk-00000.safetensors     ``chunk_samples`` samples in ascending sample-id order: sample_ids (int64),
                                checksums (uint64), logprobs float16 (n, T, k), ids uint16 (n, T, k)
                                (int32 when the vocabulary exceeds 65536); each written atomically
    index.safetensors           all sample ids, ascending
    cache.json                  the header, written last: format version, teacher and tokenizer hashes,
                                vocab size, seq_len, top_k, dtypes, sample count, chunks, bytes per token

A sample's checksum is the first 8 bytes of blake2b over its T input ids (little-endian int64), so a
lookup notices a window that is not the one the teacher saw (other shards, another seq_len).
An interrupted build resumes: rerunning with the same arguments keeps every finished chunk and computes
the rest; different arguments over a partial build are refused. Loaders with FIM are refused (FIM
rewrites windows, so the teacher would not have seen what the student sees).

Not here: the loss (``distill.py``), loading teachers (``teacher.py``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save as save_arrays
from tqdm import tqdm

from smallcode.data.loader import ShardLoader
from smallcode.errors import UserError
from smallcode.fileio import atomic_write_bytes, atomic_write_text
from smallcode.train.teacher import Teacher

FORMAT_VERSION = 1
HEADER_FILE, PLAN_FILE, INDEX_FILE = "cache.json", "build.json", "index.safetensors"
CHUNK_BYTES = 64 << 20
"""Target size of one chunk file: the unit of atomic writes and of resumption."""
_PER_SAMPLE_BYTES = 8 + 8  # sample id and checksum


class CacheError(UserError, ValueError):
    """A teacher cache that cannot be used; the message names the directory and what is wrong."""


def ids_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 1 << 16 else np.dtype(np.int32)


def bytes_per_token(seq_len: int, top_k: int, vocab_size: int) -> float:
    """Bytes the cache spends per training token: k float16 log-probs, k ids, and the per-sample fields."""
    return top_k * (2 + ids_dtype(vocab_size).itemsize) + _PER_SAMPLE_BYTES / seq_len


def window_checksums(input_ids_BT: np.ndarray) -> np.ndarray:
    """(B,) uint64: blake2b-64 of each row's token ids as little-endian int64."""
    rows = np.ascontiguousarray(input_ids_BT, dtype="<i8")
    return np.array([int.from_bytes(hashlib.blake2b(r.tobytes(), digest_size=8).digest(), "little") for r in rows],
                    dtype=np.uint64)


def visited_samples(loader: ShardLoader, steps: int) -> np.ndarray:
    """Ascending unique sample ids that ``loader``'s run reads in steps [0, steps), on every rank.

    The loader takes step k's rows for all ranks as one block of batch_size * world_size samples of the
    epoch's order, rank r its r-th slice; a one-rank loader with that batch size reads exactly the block.
    """
    if loader.fim_rate > 0.0:
        raise CacheError(f"{loader.directory}: the loader applies FIM (fim_rate={loader.fim_rate}), which "
                         "rewrites windows; an offline teacher cache needs fim_rate 0")
    if steps < 1:
        raise CacheError(f"steps must be >= 1, got {steps}")
    whole = ShardLoader(loader.directory, loader.batch_size * loader.world_size, loader.seq_len, loader.seed,
                        split=loader.split)
    return np.unique(np.concatenate([whole.sample_indices(s) for s in range(steps)])).astype(np.int64)


def _chunk_name(i: int) -> str:
    return f"chunk-{i:05d}.safetensors"


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CacheError(f"{path}: unreadable ({e})") from e


def _chunk_is_done(path: Path, sample_ids: np.ndarray, teacher_hash: str) -> bool:
    """A finished chunk holds exactly the planned samples (writes are atomic, so it is whole or absent)."""
    if not path.is_file():
        return False
    try:
        with safe_open(path, framework="numpy") as f:
            same_teacher = (f.metadata() or {}).get("teacher_hash") == teacher_hash
            return same_teacher and np.array_equal(f.get_tensor("sample_ids"), sample_ids)
    except (SafetensorError, OSError, KeyError):
        return False


def build_teacher_cache(teacher: Teacher, loader: ShardLoader, steps: int, out_dir: str | Path, top_k: int,
                        batch_size: int = 8, chunk_samples: int | None = None, progress: bool = True
                        ) -> dict[str, Any]:
    """Compute (or finish) the cache in ``out_dir`` and return its header (see the module docstring).

    ``batch_size`` is rows per teacher forward; ``chunk_samples`` samples per chunk file (default: about
    64 MiB per chunk).
    """
    out = Path(out_dir)
    T, V = loader.seq_len, teacher.vocab_size
    if not 1 <= top_k <= V:
        raise CacheError(f"top_k must be in [1, vocab size {V}], got {top_k}")
    if batch_size < 1:
        raise CacheError(f"batch_size must be >= 1, got {batch_size}")
    samples = visited_samples(loader, steps)
    id_dtype = ids_dtype(V)
    per_sample = T * top_k * (2 + id_dtype.itemsize) + _PER_SAMPLE_BYTES
    chunk_samples = chunk_samples or max(1, CHUNK_BYTES // per_sample)
    plan = {
        "format_version": FORMAT_VERSION,
        "teacher_hash": teacher.hash,
        "tokenizer_hash": loader.tokenizer_hash,
        "vocab_size": V,
        "seq_len": T,
        "top_k": top_k,
        "temperature": 1.0,
        "dtypes": {"logprobs": "float16", "ids": str(id_dtype), "sample_ids": "int64", "checksums": "uint64"},
        "checksum": "blake2b-64 of the sample's T input ids as little-endian int64",
        "n_samples": int(samples.size),
        "samples_sha256": hashlib.sha256(samples.tobytes()).hexdigest(),
        "chunk_samples": chunk_samples,
        "loader": {"split": loader.split, "seed": loader.seed, "batch_size": loader.batch_size,
                   "world_size": loader.world_size, "steps": steps},
    }
    out.mkdir(parents=True, exist_ok=True)
    for name in (HEADER_FILE, PLAN_FILE):
        if (out / name).is_file():
            existing = _read_json(out / name)
            differs = sorted(k for k in plan if existing.get(k) != plan[k])
            if differs:
                raise CacheError(f"{out}: holds a teacher cache built with other settings ({', '.join(differs)} "
                                 "differ); remove it or choose another output directory")
    if (out / HEADER_FILE).is_file():
        return _read_json(out / HEADER_FILE)  # already complete
    atomic_write_text(out / PLAN_FILE, json.dumps(plan, indent=1) + "\n")

    starts = range(0, samples.size, chunk_samples)
    done = [_chunk_is_done(out / _chunk_name(i), samples[s : s + chunk_samples], teacher.hash)
            for i, s in enumerate(starts)]
    bar = tqdm(total=int(samples.size), unit="sample", desc="teacher cache", disable=not progress,
               initial=sum(min(chunk_samples, samples.size - s) for s, d in zip(starts, done, strict=True) if d))
    for i, s in enumerate(starts):
        if done[i]:
            continue
        chunk_ids = samples[s : s + chunk_samples]
        windows = np.stack([loader.stream.read(int(j) * T, T) for j in chunk_ids])
        logprobs = np.empty((chunk_ids.size, T, top_k), dtype=np.float16)
        ids = np.empty((chunk_ids.size, T, top_k), dtype=id_dtype)
        for b in range(0, chunk_ids.size, batch_size):
            log_p_BTV = F.log_softmax(teacher.logits(torch.from_numpy(windows[b : b + batch_size])), dim=-1)
            top = torch.topk(log_p_BTV, top_k, dim=-1, sorted=True)
            logprobs[b : b + batch_size] = top.values.cpu().numpy().astype(np.float16)
            ids[b : b + batch_size] = top.indices.cpu().numpy().astype(id_dtype)
            bar.update(min(batch_size, chunk_ids.size - b))
        arrays = {"sample_ids": chunk_ids, "checksums": window_checksums(windows), "logprobs": logprobs, "ids": ids}
        atomic_write_bytes(out / _chunk_name(i), save_arrays(arrays, metadata={"teacher_hash": teacher.hash}))
    bar.close()
    atomic_write_bytes(out / INDEX_FILE, save_arrays({"sample_ids": samples}))
    header = {**plan, "chunks": [_chunk_name(i) for i in range(len(starts))],
              "bytes_per_token": bytes_per_token(T, top_k, V)}
    atomic_write_text(out / HEADER_FILE, json.dumps(header, indent=1) + "\n")
    return header


class TeacherCache:
    """A finished cache, opened for lookups; :meth:`open` checks it belongs to this run."""

    def __init__(self, directory: Path, header: dict[str, Any], sample_ids: np.ndarray) -> None:
        self.directory, self.header, self.sample_ids = directory, header, sample_ids
        self.seq_len: int = header["seq_len"]
        self.top_k: int = header["top_k"]
        self.vocab_size: int = header["vocab_size"]
        self.teacher_hash: str = header["teacher_hash"]
        self.chunk_samples: int = header["chunk_samples"]
        self.bytes_per_token: float = header["bytes_per_token"]

    @classmethod
    def open(cls, directory: str | Path, tokenizer_hash: str, seq_len: int, teacher_hash: str | None = None
             ) -> TeacherCache:
        """Open ``directory``; refuse an unfinished cache, an unknown format, or another tokenizer/seq_len/teacher."""
        d = Path(directory)
        if not (d / HEADER_FILE).is_file():
            hint = "the build did not finish; rerun it" if (d / PLAN_FILE).is_file() else "not a teacher cache"
            raise CacheError(f"{d}: no {HEADER_FILE} ({hint})")
        header = _read_json(d / HEADER_FILE)
        version = header.get("format_version")
        if version != FORMAT_VERSION:
            raise CacheError(f"{d / HEADER_FILE}: format_version {version!r} is not supported "
                             f"(this smallcode reads {FORMAT_VERSION}); rebuild the cache")
        if header.get("tokenizer_hash") != tokenizer_hash:
            raise CacheError(f"{d}: built for tokenizer {str(header.get('tokenizer_hash'))[:16]}, "
                             f"but training uses {tokenizer_hash[:16]}")
        if header.get("seq_len") != seq_len:
            raise CacheError(f"{d}: built for seq_len {header.get('seq_len')}, but training uses {seq_len}")
        if teacher_hash is not None and header.get("teacher_hash") != teacher_hash:
            raise CacheError(f"{d}: built by teacher {str(header.get('teacher_hash'))[:16]}, "
                             f"but the configured teacher is {teacher_hash[:16]}")
        try:
            with safe_open(d / INDEX_FILE, framework="numpy") as f:
                sample_ids = f.get_tensor("sample_ids")
        except (SafetensorError, OSError) as e:
            raise CacheError(f"{d / INDEX_FILE}: unreadable ({e})") from e
        if sample_ids.size != header.get("n_samples"):
            raise CacheError(f"{d / INDEX_FILE}: {sample_ids.size} samples, the header says {header.get('n_samples')}")
        return cls(d, header, sample_ids)

    def lookup(self, sample_ids: torch.Tensor | np.ndarray, input_ids: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """(log-probs (B, T, k) float32, ids (B, T, k) int64) of these samples, checked against their tokens."""
        wanted = np.asarray(torch.as_tensor(sample_ids).cpu(), dtype=np.int64).reshape(-1)
        tokens = input_ids.detach().cpu().numpy()
        if tokens.shape != (wanted.size, self.seq_len):
            raise CacheError(f"{self.directory}: input_ids of shape {tuple(tokens.shape)} for {wanted.size} "
                             f"samples of seq_len {self.seq_len}")
        pos = np.searchsorted(self.sample_ids, wanted).clip(max=max(self.sample_ids.size - 1, 0))
        missing = wanted[self.sample_ids[pos] != wanted] if self.sample_ids.size else wanted
        if missing.size:
            raise CacheError(f"{self.directory}: sample {int(missing[0])} is not in the cache (it holds the "
                             f"{self.sample_ids.size} samples of steps [0, {self.header['loader']['steps']}))")
        checks = window_checksums(tokens)
        logprobs = np.empty((wanted.size, self.seq_len, self.top_k), dtype=np.float32)
        ids = np.empty((wanted.size, self.seq_len, self.top_k), dtype=np.int64)
        chunk_of, row_of = np.divmod(pos, self.chunk_samples)
        for c in np.unique(chunk_of):
            path = self.directory / self.header["chunks"][int(c)]
            try:
                with safe_open(path, framework="numpy") as f:
                    rows = [(i, int(row_of[i])) for i in np.flatnonzero(chunk_of == c)]
                    stored_ids, stored_checks = f.get_tensor("sample_ids"), f.get_tensor("checksums")
                    lp, ix = f.get_slice("logprobs"), f.get_slice("ids")
                    for i, r in rows:
                        if stored_ids[r] != wanted[i]:
                            raise CacheError(f"{path}: row {r} holds sample {int(stored_ids[r])}, the index "
                                             f"says {int(wanted[i])}; the cache is damaged, rebuild it")
                        if stored_checks[r] != checks[i]:
                            raise CacheError(
                                f"{path}: sample {int(wanted[i])}'s tokens differ from those the teacher saw "
                                "(other shards, or a batch not from this loader?)")
                        logprobs[i], ids[i] = lp[r : r + 1][0], ix[r : r + 1][0]
            except (SafetensorError, OSError) as e:
                raise CacheError(f"{path}: unreadable ({e})") from e
        return torch.from_numpy(logprobs), torch.from_numpy(ids)
