"""``prepare``: raw source files -> filtered, decontaminated, deduplicated, split, packed shards.

Stages (each timed in the summary):

1. discover files (:mod:`smallcode.corpus`); with the embedded corpus, the modules of the ``repo``
   suite's problems are held out (``hold_out_repo_modules``);
2. read, filter (:mod:`smallcode.data.filters`), check against the benchmarks' texts
   (:mod:`smallcode.data.decontaminate`), hash and MinHash every document in worker processes, in
   corpus order;
3. drop exact then near duplicates (:mod:`smallcode.data.dedup`), keeping the first;
4. split train / validation by content hash (the same file lands in the same split whatever
   else is in the corpus);
5. tokenise with ``encode_batch`` (spread over all cores by ``tokenizers``) and pack into
   shards (:mod:`smallcode.data.shards`), each document followed by end-of-text.

The tokenizer is copied beside the shards (``tokenizer.json``; a Hugging Face model's tokenizer with
its other files, ``CodeTokenizer.sidecars``, so the models trained on them keep them).

Every held-out file and every decontaminated document is listed, with the module or the benchmark
text it matched, in ``removed.jsonl`` beside the shards; the summary counts them (``held_out``,
``dropped["decontaminated"]``). The output directory is built under a temporary name and renamed
into place at the end, so it either holds a finished, indexed dataset or does not exist.
Unreadable or vanished files stop the run with an error naming them. The kept texts of one run are
held in memory (fine for corpora of a few GB); the loader is the part built to scale past RAM.
FIM is not applied here: the loader applies it when batches are built, so its rate can change
without re-preparing.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import time
from collections import Counter
from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from smallcode.corpus import EMBEDDED_LABEL, DataError, discover, read_raw_document
from smallcode.data.config import PrepareConfig
from smallcode.data.decontaminate import Contamination, ContaminationIndex, default_references
from smallcode.data.dedup import NearDuplicateIndex, content_hash, minhash_signature
from smallcode.data.filters import DROP_REASONS, classify
from smallcode.data.shards import (
    FORMAT_VERSION,
    INDEX_FILE,
    REMOVED_FILE,
    dtype_for_vocab,
    write_shard,
)
from smallcode.fileio import atomic_dir, atomic_write_bytes, atomic_write_json, atomic_write_text
from smallcode.tokenizer import CodeTokenizer, load_tokenizer
from smallcode.tokenizer.code_tokenizer import TOKENIZER_FILE


@dataclass
class _Doc:
    """One document after stage 2 (what a worker sends back)."""

    source: str
    reason: str | None
    text: str | None = None
    sha256: str | None = None
    signature: np.ndarray | None = None
    contamination: Contamination | None = None


_CFG: PrepareConfig | None = None
_CONTAMINATION: ContaminationIndex | None = None


def _init_worker(cfg: PrepareConfig, contamination: ContaminationIndex | None) -> None:
    global _CFG, _CONTAMINATION
    _CFG, _CONTAMINATION = cfg, contamination


def _process_file(path: Path) -> list[_Doc]:
    cfg = _CFG
    assert cfg is not None
    out = []
    for raw in read_raw_document(path, cfg.jsonl_text_fields):
        text, reason = classify(raw.data, cfg)
        if text is None:
            out.append(_Doc(str(raw.source), reason))
            continue
        hit = _CONTAMINATION.match(text) if _CONTAMINATION is not None else None
        if hit is not None:
            out.append(_Doc(str(raw.source), "decontaminated", contamination=hit))
            continue
        sig = minhash_signature(text, cfg.num_perm, cfg.shingle_words) if cfg.near_dedup else None
        out.append(_Doc(str(raw.source), None, text, content_hash(text), sig))
    return out


def in_validation(sha256_hex: str, val_fraction: float) -> bool:
    """Deterministic split: the first 64 bits of the content hash as a uniform number in [0, 1)."""
    return int(sha256_hex[:16], 16) / float(1 << 64) < val_fraction


def _scan(
    files: list[Path], cfg: PrepareConfig, contamination: ContaminationIndex | None, progress: bool
) -> list[_Doc]:
    workers = cfg.workers or os.cpu_count() or 1
    bar = tqdm(total=len(files), desc="read+filter+minhash", unit="file", disable=not progress)
    docs: list[_Doc] = []
    if workers > 1 and len(files) > 1:
        # fork: workers inherit the imported modules and the contamination index without copying
        # it through a pipe; nothing here has started threads yet.
        ctx = mp.get_context("fork")
        with ctx.Pool(workers, initializer=_init_worker, initargs=(cfg, contamination)) as pool:
            for result in pool.imap(_process_file, files, chunksize=8):
                docs.extend(result)
                bar.update()
    else:
        _init_worker(cfg, contamination)
        for f in files:
            docs.extend(_process_file(f))
            bar.update()
    bar.close()
    return docs


def _pack(
    split: str,
    docs: list[_Doc],
    tok: CodeTokenizer,
    cfg: PrepareConfig,
    directory: Path,
    dtype: str,
    progress: bool,
) -> dict[str, Any]:
    shards: list[dict[str, Any]] = []
    buf: list[np.ndarray] = []
    manifest: list[dict[str, Any]] = []
    n_buf = 0

    def flush() -> None:
        nonlocal buf, manifest, n_buf
        if not buf:
            return
        name = f"{split}-{len(shards):05d}"
        shards.append(write_shard(directory, name, np.concatenate(buf), manifest, tok.hash))
        buf, manifest, n_buf = [], [], 0

    bar = tqdm(total=len(docs), desc=f"tokenise {split}", unit="doc", disable=not progress)
    for start in range(0, len(docs), cfg.encode_batch_docs):
        chunk = docs[start : start + cfg.encode_batch_docs]
        for doc, ids in zip(chunk, tok.encode_batch([d.text or "" for d in chunk]), strict=True):
            arr = np.empty(len(ids) + 1, dtype=dtype)
            arr[:-1] = ids
            arr[-1] = tok.eot_id
            if n_buf and n_buf + arr.size > cfg.shard_tokens:
                flush()
            manifest.append(
                {"source": doc.source, "sha256": doc.sha256, "offset": n_buf, "tokens": int(arr.size)}
            )
            buf.append(arr)
            n_buf += arr.size
        bar.update(len(chunk))
    flush()
    bar.close()
    return {
        "shards": shards,
        "documents": len(docs),
        "tokens": sum(s["tokens"] for s in shards),
        "bytes": sum(len((d.text or "").encode("utf-8")) for d in docs),
    }


def prepare(
    corpus: Sequence[str | Path] | None,
    tokenizer: str | Path | CodeTokenizer,
    out: str | Path,
    config: PrepareConfig | None = None,
    overwrite: bool = False,
    progress: bool = True,
    references: Mapping[str, str] | None = None,
    held_out_modules: Set[str] | None = None,
) -> dict[str, Any]:
    """Build a shard directory at ``out`` from ``corpus`` (None: the embedded corpus); return the summary.

    ``references``: the labelled benchmark texts documents are checked against (None: those of
    ``config.decontaminate_suites``, see :func:`~smallcode.data.decontaminate.default_references`);
    ``held_out_modules``: the modules left out of the embedded corpus (None: the ``repo`` suite's,
    see :func:`smallcode.corpus.default_held_out_modules`). Either is unused when its config switch
    is off.
    """
    cfg = config or PrepareConfig()
    out = Path(out)
    if out.exists() and not overwrite and (not out.is_dir() or any(out.iterdir())):
        raise DataError(f"{out}: already exists; choose another --out or pass --overwrite")
    tok = tokenizer if isinstance(tokenizer, CodeTokenizer) else load_tokenizer(tokenizer)
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()

    found = discover(corpus, cfg.extensions, held_out_modules if cfg.hold_out_repo_modules else frozenset())
    files = found.files
    if not files:
        raise DataError(f"corpus {list(corpus or [])} holds no file with extensions {cfg.extensions}")
    seconds["discover"] = time.perf_counter() - t0

    t = time.perf_counter()
    contamination = None
    if cfg.decontaminate:
        refs = default_references(cfg.decontaminate_suites) if references is None else references
        contamination = ContaminationIndex(refs, cfg.decontaminate_ngram)
    docs = _scan(files, cfg, contamination, progress)
    seconds["read_filter_minhash"] = time.perf_counter() - t

    t = time.perf_counter()
    dropped: Counter[str] = Counter({r: 0 for r in (*DROP_REASONS, "decontaminated")})
    removed: list[dict[str, Any]] = [
        {"source": str(p), "reason": "held_out", "module": m} for p, m in sorted(found.held_out.items())
    ]
    seen: dict[str, str] = {}
    near = NearDuplicateIndex(cfg.near_dup_threshold, cfg.num_perm) if cfg.near_dedup else None
    exact_dups, near_dups, examples = 0, 0, []
    kept: list[_Doc] = []
    for doc in docs:
        if doc.reason is not None:
            dropped[doc.reason] += 1
            if doc.contamination is not None:
                removed.append(
                    {
                        "source": doc.source,
                        "reason": doc.reason,
                        "match": doc.contamination.reference,
                        "ngram": doc.contamination.ngram,
                    }
                )
            continue
        assert doc.sha256 is not None
        if doc.sha256 in seen:
            exact_dups += 1
            continue
        seen[doc.sha256] = doc.source
        if near is not None and doc.signature is not None:
            twin = near.offer(doc.source, doc.signature)
            if twin is not None:
                near_dups += 1
                if len(examples) < 10:
                    examples.append([doc.source, twin])
                continue
        kept.append(doc)
    seconds["dedup"] = time.perf_counter() - t

    val = [d for d in kept if in_validation(d.sha256 or "", cfg.val_fraction)]
    train = [d for d in kept if not in_validation(d.sha256 or "", cfg.val_fraction)]
    dtype = dtype_for_vocab(tok.vocab_size)

    out.parent.mkdir(parents=True, exist_ok=True)
    # Built under a temporary name and swapped into place; an old directory is removed only after that.
    with atomic_dir(out) as tmp:
        t = time.perf_counter()
        splits = {
            "train": _pack("train", train, tok, cfg, tmp, dtype, progress),
            "validation": _pack("validation", val, tok, cfg, tmp, dtype, progress),
        }
        seconds["tokenise_pack"] = time.perf_counter() - t
        seconds["total"] = time.perf_counter() - t0
        summary = {
            "files": len(files),
            "documents": len(docs),
            "kept": len(kept),
            "dropped": dict(dropped),
            "held_out": len(found.held_out),
            "exact_duplicates": exact_dups,
            "near_duplicates": near_dups,
            "near_duplicate_examples": examples,
            "train": {k: v for k, v in splits["train"].items() if k != "shards"}
            | {"shards": len(splits["train"]["shards"])},
            "validation": {k: v for k, v in splits["validation"].items() if k != "shards"}
            | {"shards": len(splits["validation"]["shards"])},
            "seconds": {k: round(v, 2) for k, v in seconds.items()},
            "workers": cfg.workers or os.cpu_count() or 1,
        }
        atomic_write_bytes(tmp / TOKENIZER_FILE, tok.to_json().encode("utf-8"))
        for name, text in tok.sidecars.items():  # a model's own tokenizer: its other files, unchanged
            atomic_write_text(tmp / name, text)
        atomic_write_text(tmp / REMOVED_FILE, "".join(json.dumps(r) + "\n" for r in removed))
        index = {
            "format_version": FORMAT_VERSION,
            "tokenizer_hash": tok.hash,
            "vocab_size": tok.vocab_size,
            "eot_id": tok.eot_id,
            "dtype": dtype,
            "splits": splits,
            "summary": summary,
            "config": cfg.to_dict(),
            "corpus": [str(c) for c in corpus] if corpus else [EMBEDDED_LABEL],
        }
        atomic_write_json(tmp / INDEX_FILE, index, indent=1)
    return summary
