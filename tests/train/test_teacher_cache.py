"""The offline teacher cache: coverage of a run's samples, round trip, refusals, resume, CLI, offline loss."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.numpy import load_file

from factories import TOKENIZER_VOCAB
from smallcode.cli.main import main
from smallcode.data import PrepareConfig, ShardLoader, prepare
from smallcode.model import ModelConfig, SmallCodeLM
from smallcode.model.checkpoint import save_checkpoint
from smallcode.train.config import DistillConfig
from smallcode.train.distill import DistillObjective, build_distill_objective
from smallcode.train.teacher import Teacher
from smallcode.train.teacher_cache import (
    CacheError,
    TeacherCache,
    build_teacher_cache,
    bytes_per_token,
    visited_samples,
)

VOCAB, B, T, W, STEPS, K = TOKENIZER_VOCAB, 2, 16, 2, 5, 8


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory, tiny_tokenizer_dir: Path) -> Path:
    root = tmp_path_factory.mktemp("cache_data")
    corpus = root / "corpus"
    corpus.mkdir()
    for i in range(12):
        text = "".join(f"def f_{i}_{j}(x):\n    return x * {i * j + 7} + {j}  # v{i % 5}\n" for j in range(30))
        (corpus / f"m{i}.py").write_text(text)
    prepare([corpus], tiny_tokenizer_dir, root / "shards", PrepareConfig(workers=1, val_fraction=0.1, near_dedup=False),
            progress=False)
    return root / "shards"


@pytest.fixture(scope="module")
def teacher() -> Teacher:
    torch.manual_seed(2)
    model = SmallCodeLM(ModelConfig.preset("tiny", vocab_size=VOCAB, n_experts=1, top_k=1))
    return Teacher(model, "smallcode", "teacher-hash-for-tests", VOCAB, "cpu")


class CountingTeacher:
    """A teacher that counts its forwards and can be told to stop (an interrupted build) after some."""

    def __init__(self, inner: Teacher, fail_after: int | None = None) -> None:
        self.inner, self.fail_after, self.calls = inner, fail_after, 0
        self.hash, self.vocab_size = inner.hash, inner.vocab_size

    def logits(self, input_ids: torch.Tensor) -> torch.Tensor:
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise KeyboardInterrupt
        self.calls += 1
        return self.inner.logits(input_ids)


def _loader(shards: Path, rank: int = 0, **kw: object) -> ShardLoader:
    return ShardLoader(shards, B, T, seed=4, rank=rank, world_size=W, **kw)


def _batch(loader: ShardLoader, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.from_numpy(loader.sample_indices(step)), loader.batch(step)[:, :-1]


@pytest.fixture(scope="module")
def built(shards: Path, teacher: Teacher, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("cache") / "c"
    header = build_teacher_cache(teacher, _loader(shards), STEPS, out, K, batch_size=3, chunk_samples=6,
                                 progress=False)
    return out, header


def _open(shards: Path, out: Path, **kw: object) -> TeacherCache:
    return TeacherCache.open(out, **{"tokenizer_hash": _loader(shards).tokenizer_hash, "seq_len": T, **kw})


def test_covers_every_sample_of_every_rank(shards: Path) -> None:
    per_rank = [_loader(shards, r).sample_indices(s) for r in range(W) for s in range(STEPS)]
    assert np.array_equal(visited_samples(_loader(shards, 1), STEPS), np.unique(np.concatenate(per_rank)))
    # past an epoch samples repeat; the cache holds each once
    loader = _loader(shards)
    steps = loader.steps_per_epoch + 3
    assert visited_samples(loader, steps).size == loader.steps_per_epoch * B * W


def test_round_trip_equals_the_recomputed_teacher(shards: Path, teacher: Teacher, built: tuple[Path, dict]) -> None:
    out, header = built
    cache = _open(shards, out, teacher_hash=teacher.hash)
    assert header["n_samples"] == STEPS * B * W and len(header["chunks"]) == 4  # 20 samples, 6 per chunk
    assert header["dtypes"] == {"logprobs": "float16", "ids": "uint16", "sample_ids": "int64", "checksums": "uint64"}
    for rank in range(W):
        loader = _loader(shards, rank)
        for step in (0, STEPS - 1):
            sample_ids, input_ids = _batch(loader, step)
            logprobs, ids = cache.lookup(sample_ids, input_ids)
            assert logprobs.shape == ids.shape == (B, T, K)
            assert logprobs.dtype == torch.float32 and ids.dtype == torch.int64
            ref = torch.topk(F.log_softmax(teacher.model(input_ids).logits.detach(), -1), K)
            assert torch.equal(ids, ref.indices)
            torch.testing.assert_close(logprobs, ref.values, atol=2e-2, rtol=1e-3)  # stored as float16
            assert torch.all(logprobs[..., :-1] >= logprobs[..., 1:])


def test_bytes_per_token_matches_the_files(built: tuple[Path, dict]) -> None:
    out, header = built
    assert header["bytes_per_token"] == bytes_per_token(T, K, VOCAB) == K * (2 + 2) + 16 / T
    data = 0
    for c in header["chunks"]:  # a safetensors file: 8-byte length, JSON header of that length, the arrays
        raw = (out / c).read_bytes()
        data += len(raw) - 8 - int.from_bytes(raw[:8], "little")
    assert data == header["bytes_per_token"] * header["n_samples"] * T


def test_k_equal_v_holds_the_whole_distribution(shards: Path, teacher: Teacher, tmp_path: Path) -> None:
    loader = _loader(shards)
    build_teacher_cache(teacher, loader, 1, tmp_path, VOCAB, progress=False)
    sample_ids, input_ids = _batch(loader, 0)
    logprobs, ids = _open(shards, tmp_path).lookup(sample_ids, input_ids)
    full = torch.empty(B, T, VOCAB).scatter_(-1, ids, logprobs)
    torch.testing.assert_close(full, F.log_softmax(teacher.model(input_ids).logits.detach(), -1),
                               atol=2e-2, rtol=1e-3)


def test_lookup_refuses_other_tokens_and_missing_samples(shards: Path, built: tuple[Path, dict]) -> None:
    out, _ = built
    cache = _open(shards, out)
    loader = _loader(shards)
    sample_ids, input_ids = _batch(loader, 1)
    changed = input_ids.clone()
    changed[1, 5] = (changed[1, 5] + 1) % VOCAB
    with pytest.raises(CacheError, match=rf"sample {int(sample_ids[1])}'s tokens differ"):
        cache.lookup(sample_ids, changed)
    later_ids, later_inputs = _batch(loader, loader.steps_per_epoch - 1)  # a step the cache does not cover
    absent = [i for i in range(2) if int(later_ids[i]) not in set(cache.sample_ids.tolist())][0]
    with pytest.raises(CacheError, match=rf"sample {int(later_ids[absent])} is not in the cache"):
        cache.lookup(later_ids, later_inputs)
    with pytest.raises(CacheError, match="input_ids of shape"):
        cache.lookup(sample_ids, input_ids[:, :-1])


def test_open_refuses_another_run(shards: Path, built: tuple[Path, dict], tmp_path: Path) -> None:
    out, _ = built
    with pytest.raises(CacheError, match="built for tokenizer"):
        _open(shards, out, tokenizer_hash="f" * 64)
    with pytest.raises(CacheError, match=f"built for seq_len {T}, but training uses 32"):
        _open(shards, out, seq_len=32)
    with pytest.raises(CacheError, match="built by teacher teacher-hash-for"):
        _open(shards, out, teacher_hash="a" * 64)
    with pytest.raises(CacheError, match="not a teacher cache"):
        _open(shards, tmp_path)
    copy = tmp_path / "future"
    copy.mkdir()
    for f in out.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    header = json.loads((copy / "cache.json").read_text())
    (copy / "cache.json").write_text(json.dumps({**header, "format_version": 99}))
    with pytest.raises(CacheError, match="format_version 99 is not supported"):
        _open(shards, copy)


def test_fim_loaders_are_refused(shards: Path, teacher: Teacher, tmp_path: Path) -> None:
    with pytest.raises(CacheError, match="FIM"):
        build_teacher_cache(teacher, _loader(shards, fim_rate=0.5), 2, tmp_path, K, progress=False)


def test_an_interrupted_build_resumes_to_the_one_shot_result(shards: Path, teacher: Teacher, built: tuple[Path, dict],
                                                             tmp_path: Path) -> None:
    one_shot, one_shot_header = built
    out = tmp_path / "c"
    args = dict(loader=_loader(shards), steps=STEPS, out_dir=out, top_k=K, batch_size=3, chunk_samples=6,
                progress=False)
    with pytest.raises(KeyboardInterrupt):  # dies in the third chunk (two forwards per chunk of 6)
        build_teacher_cache(CountingTeacher(teacher, fail_after=5), **args)
    assert sorted(p.name for p in out.glob("chunk-*")) == ["chunk-00000.safetensors", "chunk-00001.safetensors"]
    assert not list(out.glob(".*tmp"))  # no half-written file left behind
    with pytest.raises(CacheError, match="did not finish"):
        _open(shards, out)
    # other settings over the partial build are refused rather than mixed in
    with pytest.raises(CacheError, match="top_k"):
        build_teacher_cache(teacher, **{**args, "top_k": K + 1})
    resumed = CountingTeacher(teacher)
    header = build_teacher_cache(resumed, **args)
    assert resumed.calls == 3  # chunks 2 (6 samples: 2 forwards of 3) and 3 (2 samples) only
    assert header == one_shot_header
    for name in header["chunks"] + ["index.safetensors"]:
        ours, ref = load_file(out / name), load_file(one_shot / name)
        assert ours.keys() == ref.keys() and all(np.array_equal(ours[k], ref[k]) for k in ref)
    again = CountingTeacher(teacher)
    assert build_teacher_cache(again, **args) == header and again.calls == 0  # finished: nothing to do


def test_offline_objective_equals_online_with_k_equal_v(shards: Path, teacher: Teacher, tmp_path: Path) -> None:
    loader = _loader(shards)
    build_teacher_cache(teacher, loader, 2, tmp_path, VOCAB, progress=False)
    cache = _open(shards, tmp_path)
    student = SmallCodeLM(ModelConfig.preset("tiny", vocab_size=VOCAB))
    sample_ids, input_ids = _batch(loader, 1)
    labels = loader.batch(1)[:, 1:].clone()
    labels[:, :3] = -100
    batch = {"input_ids": input_ids, "labels": labels, "sample_ids": sample_ids}
    for T_ in (1.0, 2.0):
        offline = DistillObjective(DistillConfig("t", temperature=T_, mode="offline", cache=str(tmp_path),
                                                 top_k=VOCAB), cache=cache)(student, batch)
        online = DistillObjective(DistillConfig("t", temperature=T_), teacher=teacher)(student, batch)
        torch.testing.assert_close(offline[0], online[0], atol=2e-3, rtol=1e-3)
        torch.testing.assert_close(offline[2]["kd_loss"], online[2]["kd_loss"], atol=2e-3, rtol=1e-3)
    with pytest.raises(ValueError, match="sample_ids"):
        DistillObjective(DistillConfig("t", mode="offline", cache=str(tmp_path), top_k=4), cache=cache)(
            student, {"input_ids": input_ids, "labels": labels})
    with pytest.raises(Exception, match="holds only the top"):
        DistillObjective(DistillConfig("t", mode="offline", cache=str(tmp_path), top_k=VOCAB + 1), cache=cache)


def test_cli_builds_a_cache_the_trainer_can_open(shards: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                                 ) -> None:
    torch.manual_seed(3)
    model = SmallCodeLM(ModelConfig.preset("tiny", vocab_size=VOCAB, n_experts=1, top_k=1))
    ckpt = save_checkpoint(model, tmp_path / "teacher", shards / "tokenizer.json")
    out = tmp_path / "cache"
    argv = ["teacher-cache", str(ckpt), "--data", str(shards), "--steps", "3", "--batch-size", str(B), "--seq-len",
            str(T), "--seed", "4", "--world-size", str(W), "--top-k", "4", "--out", str(out), "--quiet"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert f"{3 * B * W} samples of {T} tokens, top-4: {bytes_per_token(T, 4, VOCAB):.2f} bytes per token" in text
    assert json.loads(text[text.index("{"):])["top_k"] == 4
    # the trainer's entry point checks that the cache was made by the configured teacher
    loader = _loader(shards)
    objective = build_distill_objective(DistillConfig(str(ckpt), mode="offline", cache=str(out), top_k=4),
                                        VOCAB, loader.tokenizer_hash, T)
    sample_ids, input_ids = _batch(loader, 2)
    logprobs, _ = objective.cache.lookup(sample_ids, input_ids)
    with torch.no_grad():
        ref = torch.topk(F.log_softmax(model(input_ids).logits, -1), 4).values
    torch.testing.assert_close(logprobs, ref, atol=2e-2, rtol=1e-3)
    other = save_checkpoint(SmallCodeLM(model.config), tmp_path / "other", shards / "tokenizer.json")
    with pytest.raises(CacheError, match="built by teacher"):
        build_distill_objective(DistillConfig(str(other), mode="offline", cache=str(out), top_k=4),
                                VOCAB, loader.tokenizer_hash, T)
    # a teacher with another vocabulary: one line, exit status 1
    small = save_checkpoint(SmallCodeLM(ModelConfig.preset("tiny")), tmp_path / "small", shards / "tokenizer.json")
    assert main(["teacher-cache", str(small), *argv[2:-3], "--out", str(tmp_path / "c2"), "--quiet"]) == 1
    assert f"256 tokens but the student's has {VOCAB}" in capsys.readouterr().err
