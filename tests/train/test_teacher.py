"""Teachers from smallcode checkpoints and Hugging Face directories: logits, identity, refusals."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from factories import TOKENIZER_VOCAB
from smallcode.model import ModelConfig, SmallCodeLM
from smallcode.model.checkpoint import save_checkpoint
from smallcode.tokenizer import load_tokenizer
from smallcode.train.teacher import TeacherError, load_teacher, teacher_hash

VOCAB = TOKENIZER_VOCAB  # the shared tiny tokenizer's


def _model(moe: bool = False, vocab: int = VOCAB) -> SmallCodeLM:
    experts = {} if moe else {"n_experts": 1, "top_k": 1}
    return SmallCodeLM(ModelConfig.preset("tiny", vocab_size=vocab, n_global=0, **experts)).eval()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory, tiny_tokenizer_dir: Path) -> tuple[Path, SmallCodeLM]:
    torch.manual_seed(1)
    model = _model()
    out = save_checkpoint(model, tmp_path_factory.mktemp("teacher") / "ckpt", tiny_tokenizer_dir / "tokenizer.json")
    return out, model


def _hash(tokenizer_dir: Path) -> str:
    return load_tokenizer(tokenizer_dir).hash


def test_smallcode_teacher_gives_the_models_logits(checkpoint: tuple[Path, SmallCodeLM],
                                                   tiny_tokenizer_dir: Path) -> None:
    path, model = checkpoint
    teacher = load_teacher(path, VOCAB, _hash(tiny_tokenizer_dir))
    ids = torch.randint(0, VOCAB, (2, 20))
    logits = teacher.logits(ids)
    assert logits.shape == (2, 20, VOCAB) and logits.dtype == torch.float32 and not logits.requires_grad
    with torch.no_grad():
        torch.testing.assert_close(logits, model(ids).logits, atol=0, rtol=0)
    assert not teacher.model.training and teacher.source == "smallcode" and teacher.vocab_size == VOCAB


def test_hash_is_stable_and_follows_the_weights(checkpoint: tuple[Path, SmallCodeLM], tmp_path: Path) -> None:
    path, model = checkpoint
    copy = shutil.copytree(path, tmp_path / "elsewhere")
    assert teacher_hash(path) == teacher_hash(copy) == load_teacher(copy, VOCAB).hash
    assert len(teacher_hash(path)) == 64
    with torch.no_grad():
        changed = _model()
        changed.load_state_dict(model.state_dict())
        changed.norm.weight[0] += 1e-3
    other = save_checkpoint(changed, tmp_path / "changed")
    assert teacher_hash(other) != teacher_hash(path)


def test_vocab_mismatch_is_refused(checkpoint: tuple[Path, SmallCodeLM]) -> None:
    path, _ = checkpoint
    with pytest.raises(TeacherError, match=rf"{VOCAB} tokens but the student's has 512"):
        load_teacher(path, 512)


def test_tokenizer_mismatch_is_refused(checkpoint: tuple[Path, SmallCodeLM], tiny_tokenizer_dir: Path,
                                       tmp_path: Path) -> None:
    path, model = checkpoint
    ours = _hash(tiny_tokenizer_dir)
    with pytest.raises(TeacherError, match=rf"teacher tokenizer {ours[:16]} differs from the student's 0123456789"):
        load_teacher(path, VOCAB, "0123456789abcdef" * 4)
    bare = save_checkpoint(model, tmp_path / "bare")  # no tokenizer.json: nothing to check against
    with pytest.raises(TeacherError, match="no tokenizer.json"):
        load_teacher(bare, VOCAB, ours)
    assert load_teacher(bare, VOCAB, None).vocab_size == VOCAB


def test_not_a_teacher(tmp_path: Path) -> None:
    with pytest.raises(TeacherError, match="not a directory"):
        load_teacher(tmp_path / "missing", VOCAB)
    with pytest.raises(TeacherError, match="no config.json"):
        load_teacher(tmp_path, VOCAB)
    (tmp_path / "config.json").write_text(json.dumps({"hello": 1}))
    with pytest.raises(TeacherError, match="neither a smallcode checkpoint config nor a Hugging Face config"):
        load_teacher(tmp_path, VOCAB)


@pytest.mark.parametrize("moe", [False, True])
def test_hugging_face_teacher_equals_the_smallcode_teacher(moe: bool, tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    from smallcode.export.hf import to_hf_model

    model = _model(moe)
    save_checkpoint(model, tmp_path / "ours")
    to_hf_model(model).save_pretrained(tmp_path / "hf")
    ours, theirs = load_teacher(tmp_path / "ours", VOCAB), load_teacher(tmp_path / "hf", VOCAB)
    assert theirs.source == "huggingface" and type(theirs.model).__name__ == ("Mixtral" if moe else "Mistral") + \
        "ForCausalLM"
    assert not theirs.model.training and all(not p.requires_grad for p in theirs.model.parameters())
    ids = torch.randint(0, VOCAB, (2, 24))  # longer than the window (16)
    torch.testing.assert_close(theirs.logits(ids), ours.logits(ids), atol=1e-5, rtol=1e-5)
    assert theirs.hash != ours.hash and theirs.hash == teacher_hash(tmp_path / "hf")
    with pytest.raises(TeacherError, match=rf"{VOCAB} tokens but the student's has {VOCAB + 64}"):
        load_teacher(tmp_path / "hf", VOCAB + 64)
    # A teacher with a larger (padded) embedding is refused too, before its weights are read.
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    (tmp_path / "hf" / "config.json").write_text(json.dumps({**config, "vocab_size": VOCAB + 64}))
    with pytest.raises(TeacherError, match=rf"{VOCAB + 64} tokens but the student's has {VOCAB}"):
        load_teacher(tmp_path / "hf", VOCAB)
