"""ShardLoader: exact windows, purity/resume, rank disjointness, validation, FIM, and bad shards."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from data_helpers import make_module  # tests/data/data_helpers.py

from smallcode.data import DataError, PrepareConfig, ShardLoader, prepare, verify_directory
from smallcode.data.fim import apply_fim, fim_document
from smallcode.data.shards import ShardInfo, dtype_for_vocab, open_shard, write_shard
from smallcode.tokenizer import CodeTokenizer, load_tokenizer, train_tokenizer

B, T = 4, 32


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory: pytest.TempPathFactory, tiny_tokenizer: CodeTokenizer) -> Path:
    corpus = tmp_path_factory.mktemp("loader_corpus")
    for i in range(30):
        (corpus / f"m{i:02d}.py").write_text(make_module(i, lines=20))
    out = tmp_path_factory.mktemp("loader") / "shards"
    cfg = PrepareConfig(workers=1, val_fraction=0.2, shard_tokens=4000)
    prepare([corpus], tiny_tokenizer, out, cfg, progress=False)
    return out


def _stream(directory: Path, split: str) -> np.ndarray:
    index = json.loads((directory / "index.json").read_text())
    return np.concatenate(
        [
            np.fromfile(directory / f"{s['name']}.bin", dtype=index["dtype"])
            for s in index["splits"][split]["shards"]
        ]
    ).astype(np.int64)


def test_rows_are_the_indexed_windows(shard_dir: Path) -> None:
    loader = ShardLoader(shard_dir, B, T, seed=3)
    stream = _stream(shard_dir, "train")
    assert loader.n_samples == (stream.size - 1) // T
    assert len(loader.stream.arrays) > 1 and all(isinstance(a, np.memmap) for a in loader.stream.arrays)
    for step in (0, 1, loader.steps_per_epoch + 2):
        x = loader.batch(step)
        assert x.shape == (B, T + 1) and x.dtype == torch.int64
        for row, i in zip(x, loader.sample_indices(step), strict=True):
            assert torch.equal(row, torch.from_numpy(stream[i * T : i * T + T + 1]))


def test_batches_are_a_pure_function_so_resume_is_exact(shard_dir: Path) -> None:
    steps = range(0, 25)
    uninterrupted = [ShardLoader(shard_dir, B, T, seed=7).batch(s) for s in steps]
    resumed = ShardLoader(shard_dir, B, T, seed=7)  # a fresh process restarting at step 11
    for s in steps[11:]:
        assert torch.equal(resumed.batch(s), uninterrupted[s])
    assert not torch.equal(ShardLoader(shard_dir, B, T, seed=8).batch(0), uninterrupted[0])


@pytest.mark.parametrize("world_size", [1, 2])
def test_no_sample_twice_within_an_epoch_across_ranks(shard_dir: Path, world_size: int) -> None:
    loaders = [ShardLoader(shard_dir, B, T, seed=1, rank=r, world_size=world_size) for r in range(world_size)]
    per_epoch = loaders[0].steps_per_epoch
    assert per_epoch == loaders[0].n_samples // (B * world_size)
    for epoch in (0, 1):
        seen = np.concatenate(
            [
                ld.sample_indices(s)
                for s in range(epoch * per_epoch, (epoch + 1) * per_epoch)
                for ld in loaders
            ]
        )
        assert seen.size == per_epoch * B * world_size == np.unique(seen).size
        assert seen.min() >= 0 and seen.max() < loaders[0].n_samples
    # Epochs visit the samples in different orders.
    assert not np.array_equal(loaders[0].sample_indices(0), loaders[0].sample_indices(per_epoch))
    if world_size == 2:
        # The two ranks of a step together are the single-rank batch of twice the size.
        single = ShardLoader(shard_dir, 2 * B, T, seed=1)
        both = torch.cat([loaders[0].batch(5), loaders[1].batch(5)])
        assert torch.equal(both, single.batch(5))


def test_validation_iterates_the_validation_stream_in_order(shard_dir: Path) -> None:
    stream = _stream(shard_dir, "validation")
    n = (stream.size - 1) // T
    full = torch.cat(list(ShardLoader(shard_dir, B, T, seed=0).validation()))
    assert full.shape == (n, T + 1)
    assert torch.equal(full[:, :-1].reshape(-1), torch.from_numpy(stream[: n * T]))
    r0 = list(ShardLoader(shard_dir, B, T, seed=0, rank=0, world_size=2).validation())
    r1 = list(ShardLoader(shard_dir, B, T, seed=0, rank=1, world_size=2).validation())
    assert len(r0) + len(r1) == -(-n // B)
    assert torch.equal(r1[0], full[B : 2 * B])
    assert len(list(ShardLoader(shard_dir, B, T, seed=0).validation(max_batches=1))) == 1


def _parse_fim(ids: list[int], tok: CodeTokenizer) -> str:
    """Rebuild the original text from one FIM document (either layout)."""
    assert ids[0] == tok.fim_prefix_id
    i_suf, i_mid = ids.index(tok.fim_suffix_id), ids.index(tok.fim_middle_id)
    if i_suf == 1:  # spm: <pre><suf> suffix <mid> prefix+middle
        return tok.decode(ids[i_mid + 1 :]) + tok.decode(ids[2:i_mid])
    return tok.decode(ids[1:i_suf]) + tok.decode(ids[i_mid + 1 :]) + tok.decode(ids[i_suf + 1 : i_mid])


def test_fim_document_keeps_the_text(tiny_tokenizer: CodeTokenizer) -> None:
    text = make_module(4, lines=3)
    modes = set()
    for seed in range(20):
        ids = fim_document(text, tiny_tokenizer, np.random.default_rng(seed), spm_rate=0.5)
        assert _parse_fim(ids, tiny_tokenizer) == text
        modes.add(ids[1] == tiny_tokenizer.fim_suffix_id)
    assert modes == {True, False}, "both PSM and SPM must occur at spm_rate 0.5"


def test_apply_fim_on_a_window(tiny_tokenizer: CodeTokenizer) -> None:
    tok = tiny_tokenizer
    docs = [make_module(i, lines=2) for i in range(3)]
    window = np.array(sum((tok.encode(d) + [tok.eot_id] for d in docs), []), dtype=np.int64)
    rng = np.random.default_rng(0)
    assert apply_fim(window, tok, rng, rate=0.0) is window
    padded = np.concatenate([window, np.full(200, tok.pad_id)])  # room so nothing is cut
    out = apply_fim(padded, tok, np.random.default_rng(0), rate=1.0, context_rate=0.0)
    assert out.size == padded.size
    body = out[out != tok.pad_id].tolist()
    pieces, cur = [], []
    for t in body:
        if t == tok.eot_id:
            pieces.append(cur)
            cur = []
        else:
            cur.append(t)
    assert [_parse_fim(p, tok) for p in pieces] == docs


def test_fim_with_context_files_moves_earlier_pieces_before_the_fim_document(tiny_tokenizer: CodeTokenizer) -> None:
    tok = tiny_tokenizer
    assert tok.file_sep_id is not None
    docs = [make_module(i, lines=2) for i in range(4)]
    window = np.array(sum((tok.encode(d) + [tok.eot_id] for d in docs), []), dtype=np.int64)
    # Room so nothing is cut: a tail piece that is never rewritten (a lone lead byte of a UTF-8
    # character decodes to U+FFFD) and is the first thing cut when the rest grows.
    lead_byte = tok.backend.token_to_id("\u00c3")  # byte 0xC3 in the byte-level alphabet
    padded = np.concatenate([window, np.full(400, lead_byte)])
    seen_context = False
    for seed in range(40):  # rate < 1, so some pieces stay plain and can serve as context
        out = apply_fim(padded, tok, np.random.default_rng(seed), rate=0.5, context_rate=1.0)
        assert out.size == padded.size
        body = out[(out != tok.pad_id) & (out != lead_byte)].tolist()
        examples, cur = [], []
        for t in body:
            if t == tok.eot_id:
                examples.append(cur)
                cur = []
            else:
                cur.append(t)
        texts = []
        for ex in examples:
            if tok.fim_prefix_id not in ex:
                texts.append(tok.decode(ex))
                continue
            start = ex.index(tok.fim_prefix_id)
            head, fim = ex[:start], ex[start:]
            if head:
                seen_context = True
                assert head[0] == tok.file_sep_id and tok.fim_prefix_id not in head
                blocks = tok.decode(head).split("<|file_sep|>")[1:]  # decode keeps the special's text
                for k, block in enumerate(blocks):
                    name, text = block.split("\n", 1)
                    assert name == f"file_{k + 1}"
                    texts.append(text)
            texts.append(_parse_fim(fim, tok))
        assert texts == docs, "every document is kept once, in order, as text, context or FIM"
        # The same generator state gives the same window.
        assert np.array_equal(out, apply_fim(padded, tok, np.random.default_rng(seed), rate=0.5, context_rate=1.0))
    assert seen_context


def test_fim_in_batches_is_deterministic_and_rate_controlled(shard_dir: Path) -> None:
    plain = ShardLoader(shard_dir, B, T * 4, seed=2)
    fim = ShardLoader(shard_dir, B, T * 4, seed=2, fim_rate=1.0)
    tok = fim.tokenizer
    x, y = plain.batch(3), fim.batch(3)
    assert y.shape == x.shape and not torch.equal(x, y)
    assert (y == tok.fim_prefix_id).any() and not (x == tok.fim_prefix_id).any()
    assert torch.equal(y, ShardLoader(shard_dir, B, T * 4, seed=2, fim_rate=1.0).batch(3))
    assert torch.equal(ShardLoader(shard_dir, B, T * 4, seed=2, fim_rate=0.0).batch(3), x)


def test_tokenizer_hash_mismatch_is_refused(
    shard_dir: Path, tiny_tokenizer_dir: Path, tmp_path: Path
) -> None:
    ShardLoader(shard_dir, B, T, seed=0, tokenizer=tiny_tokenizer_dir)  # the right one is accepted
    (tmp_path / "c.py").write_text(make_module(1))
    # A second, different tokenizer on purpose: the loader must refuse it.
    train_tokenizer([tmp_path / "c.py"], 300, tmp_path / "other", show_progress=False)
    other = load_tokenizer(tmp_path / "other")
    with pytest.raises(DataError, match=r"prepared with tokenizer .* but the given tokenizer is"):
        ShardLoader(shard_dir, B, T, seed=0, tokenizer=other)


def _copy(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_truncated_corrupt_and_unfinished_shards(shard_dir: Path, tmp_path: Path) -> None:
    d = _copy(shard_dir, tmp_path / "truncated")
    shard = d / "train-00001.bin"
    shard.write_bytes(shard.read_bytes()[:-2])
    with pytest.raises(DataError, match=rf"{shard}: truncated or corrupt"):
        ShardLoader(d, B, T, seed=0)

    d = _copy(shard_dir, tmp_path / "flipped")
    shard = d / "train-00000.bin"
    raw = bytearray(shard.read_bytes())
    raw[10] ^= 0xFF
    shard.write_bytes(bytes(raw))
    ShardLoader(d, B, T, seed=0)  # sizes agree, so only verification can tell
    with pytest.raises(DataError, match=rf"{shard}: sha256 differs"):
        verify_directory(d)
    with pytest.raises(DataError, match="sha256 differs"):
        ShardLoader(d, B, T, seed=0, verify=True)

    d = _copy(shard_dir, tmp_path / "foreign_header")
    header = d / "train-00000.json"
    obj = json.loads(header.read_text())
    obj["tokenizer_hash"] = "0" * 64
    header.write_text(json.dumps(obj))
    with pytest.raises(DataError, match=r"train-00000.bin: tokenized with another tokenizer"):
        ShardLoader(d, B, T, seed=0)

    d = _copy(shard_dir, tmp_path / "unfinished")
    (d / "index.json").unlink()
    with pytest.raises(DataError, match="not a finished"):
        ShardLoader(d, B, T, seed=0)

    with pytest.raises(DataError, match="fewer than one global batch"):
        ShardLoader(shard_dir, 10_000, T, seed=0)
    with pytest.raises(ValueError, match="rank 2"):
        ShardLoader(shard_dir, B, T, seed=0, rank=2, world_size=2)


def test_large_vocabularies_get_uint32_shards(tmp_path: Path) -> None:
    assert dtype_for_vocab(65536) == "uint16" and dtype_for_vocab(65537) == "uint32"
    tokens = np.array([0, 70_000, 4_000_000_000], dtype="uint32")
    entry = write_shard(tmp_path, "train-00000", tokens, [], "h" * 64)
    arr = open_shard(
        ShardInfo(tmp_path / "train-00000.bin", entry["tokens"], entry["sha256"]), "uint32", "h" * 64, True
    )
    assert arr.tolist() == tokens.tolist()
