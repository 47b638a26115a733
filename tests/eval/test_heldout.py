"""Held-out bits per byte: a fixed, documented sample of third-party code, scored against a naive formula."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from smallcode.eval.heldout import HELD_OUT_PACKAGES, HeldOutError, bits_per_byte, held_out_set
from smallcode.eval.samples import distinct_ngram_ratio
from smallcode.model import ModelConfig, SmallCodeLM
from smallcode.tokenizer import load_tokenizer, train_tokenizer


def test_the_held_out_set_is_fixed_and_within_its_budget() -> None:
    a, b = held_out_set(bytes_per_package=6000), held_out_set(bytes_per_package=6000)
    assert a == b and a.fingerprint == b.fingerprint
    packages = {n.split("/")[0] for n in a.names}
    assert packages == set(HELD_OUT_PACKAGES)
    for pkg in packages:
        sizes = [len(t.encode()) for n, t in zip(a.names, a.texts, strict=True) if n.startswith(pkg + "/")]
        # whole files until the budget is spent; a single file may be bigger than the budget
        assert sum(sizes) <= 6000 or len(sizes) == 1
    assert all(n.endswith(".py") for n in a.names)
    # none of it is the standard library the models train on (the corpus leaves installed packages out)
    import importlib.util
    for pkg in HELD_OUT_PACKAGES:
        origin = importlib.util.find_spec(pkg).origin
        assert "site-packages" in origin or "dist-packages" in origin, origin
    assert held_out_set(bytes_per_package=12000).n_bytes > a.n_bytes
    with pytest.raises(HeldOutError, match="not installed"):
        held_out_set(["no_such_package_here"])


def test_bits_per_byte_equals_the_naive_sum(tmp_path) -> None:  # noqa: ANN001
    texts = ["def f(x):\n    return x + 1\n" * 5, "import os\nprint(os.sep)\n", "x = [i * i for i in range(10)]\n" * 9]
    corpus = tmp_path / "c"
    corpus.mkdir()
    (corpus / "a.py").write_text("".join(texts) * 3)
    tok = load_tokenizer(train_tokenizer([corpus], 300, tmp_path / "tok", show_progress=False))
    torch.manual_seed(0)
    model = SmallCodeLM(ModelConfig.preset("tiny", vocab_size=tok.vocab_size, window=64, max_seq_len=256))
    result = bits_per_byte(model, tok, texts, context=16, batch_size=3)
    # naive: the whole stream (each text then end-of-text) in rows of 17 overlapping by one token
    stream = [t for text in texts for t in [*tok.encode(text), tok.eot_id]]
    nats, count = 0.0, 0
    with torch.no_grad():
        for s in range(0, len(stream) - 1, 16):
            row = torch.tensor(stream[s: s + 17])[None]
            logits = model(row[:, :-1]).logits[0]
            nats += F.cross_entropy(logits, row[0, 1:], reduction="sum").item()
            count += row.shape[1] - 1
    assert result.tokens == count == len(stream) - 1
    n_bytes = sum(len(t.encode()) for t in texts)
    assert result.bits_per_byte == pytest.approx(nats / math.log(2) / n_bytes, rel=1e-5)
    assert result.nats_per_token == pytest.approx(nats / count, rel=1e-5)
    assert model.training  # left as it was found


@pytest.mark.parametrize(("text", "expected"), [
    ("a b c d e f", 1.0),
    ("x = 1 x = 1 x = 1 x = 1 x = 1", 3 / 12),  # 12 four-grams, 3 distinct (the loop's phases)
    ("x=1\nx=1\nx=1\nx=1\nx=1", 3 / 12),  # blanks do not matter, marks are words
    (")" * 40, 1 / 37),
    ("one two", 1.0),
    ("def f(x):\n    return x + 1\n", 1.0),
])
def test_distinct_ngram_ratio(text: str, expected: float) -> None:
    assert distinct_ngram_ratio(text) == pytest.approx(expected)
