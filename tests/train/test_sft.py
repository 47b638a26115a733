"""Fine-tuning data: completion-only labels, chat masking, JSONL errors, MBPP pairs, the resumable loader."""

from __future__ import annotations

import ast
import json
import subprocess
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from smallcode.model import ModelConfig, SmallCodeLM
from smallcode.tasks.mbpp import load_mbpp
from smallcode.tokenizer import CodeTokenizer
from smallcode.train.objectives import next_token_objective
from smallcode.train.sft import (
    IGNORE_INDEX,
    SFTDataError,
    SFTLoader,
    TokenizedExample,
    load_mbpp_train,
    load_mbpp_validation,
    make_row,
    read_jsonl,
    tokenize_example,
    tokenize_examples,
    write_jsonl,
)

PAIRS = [
    {"prompt": "def add(a, b):\n", "completion": "    return a + b\n"},
    {"prompt": "# sort a list\n", "completion": "def s(xs):\n    return sorted(xs)\n", "task_id": "x/1"},
    {"prompt": "", "completion": "import json\nprint(json.dumps({}))\n"},
    {"prompt": "class A:\n    def f(self):\n", "completion": "        return None\n"},
    {"prompt": "x = ", "completion": "[1, 2, 3]\n"},
]


@pytest.fixture(scope="module")
def tok(tiny_tokenizer: CodeTokenizer) -> CodeTokenizer:
    return tiny_tokenizer


def labelled(row_labels: torch.Tensor) -> list[int]:
    return row_labels[row_labels != IGNORE_INDEX].tolist()


def test_labels_are_exactly_the_completion_and_eot(tok: CodeTokenizer) -> None:
    examples, stats = tokenize_examples(PAIRS, tok, seq_len=64)
    assert stats.kept == len(PAIRS) and stats.dropped == stats.truncated == 0
    loader = SFTLoader(examples, batch_size=len(PAIRS), seq_len=64, seed=0, pad_id=tok.pad_id)
    batch = loader.batch(0)
    assert batch["input_ids"].shape == batch["labels"].shape == (len(PAIRS), 64)
    for row, i in enumerate(loader.sample_indices(0)):
        ex, ids, labels = PAIRS[i], batch["input_ids"][row], batch["labels"][row]
        if ex["prompt"]:
            assert tok.decode(labelled(labels)) == ex["completion"] + "<|endoftext|>"
        else:  # nothing precedes the first token, so it cannot be predicted
            assert tok.decode(labelled(labels)) == tok.decode(tok.encode(ex["completion"])[1:]) + "<|endoftext|>"
        full = tok.encode(ex["prompt"]) + tok.encode(ex["completion"]) + [tok.eot_id]
        n, n_prompt = len(full) - 1, len(tok.encode(ex["prompt"]))  # n input positions hold the example
        assert ids.tolist() == full[:-1] + [tok.pad_id] * (64 - n)
        # label i is token i + 1 when that token belongs to the completion (or is the eot)
        want = [full[i + 1] if i + 1 >= n_prompt else IGNORE_INDEX for i in range(n)]
        assert labels.tolist() == want + [IGNORE_INDEX] * (64 - n)


def test_chat_labels_cover_assistant_turns_only(tok: CodeTokenizer) -> None:
    messages = [
        {"role": "system", "content": "You write Python."},
        {"role": "user", "content": "Reverse a list."},
        {"role": "assistant", "content": "xs[::-1]"},
        {"role": "user", "content": "And sort it?"},
        {"role": "assistant", "content": "sorted(xs)"},
    ]
    t = tokenize_example({"messages": messages}, tok)
    assert list(t.ids) == tok.chat_ids(messages)
    ids, labels = (torch.from_numpy(a) for a in make_row(t, 64, tok.pad_id))
    assert tok.decode(labelled(labels)) == "xs[::-1]<|end|>sorted(xs)<|end|>"
    # every labelled run starts right after an <|assistant|> token, which is itself never a label
    assistant = tok.role_ids["assistant"]
    starts = [i for i in range(64) if labels[i] != IGNORE_INDEX and (i == 0 or labels[i - 1] == IGNORE_INDEX)]
    assert [int(ids[i]) for i in starts] == [assistant, assistant]
    assert assistant not in labelled(labels) and tok.role_ids["user"] not in labelled(labels)


@pytest.mark.parametrize(("line", "reason"), [
    ('{"prompt": "a", "completion": ', "not valid JSON"),
    ('["prompt", "completion"]', "expected a JSON object, got list"),
    ('{"prompt": "a"}', "missing 'completion'"),
    ('{"prompt": "a", "completion": 3}', "'completion' must be a string, got int"),
    ('{"messages": []}', "'messages' must be a non-empty list"),
    ('{"messages": [{"role": "bot", "content": "x"}]}', "message 0 has role 'bot'"),
    ('{"messages": [{"role": "user", "content": "x"}, {"role": "assistant"}]}', "message 1 content must be a string"),
    ('{"messages": [{"role": "user", "content": "x"}]}', "no assistant message"),
    ('{"messages": [{"role": "assistant", "content": "x"}], "prompt": "p"}', "both 'messages' and 'prompt'"),
])
def test_malformed_lines_are_rejected_with_their_line_number(tmp_path: Path, line: str, reason: str) -> None:
    path = tmp_path / "data.jsonl"
    good = json.dumps(PAIRS[0])
    path.write_text(f"{good}\n\n{good}\n{line}\n{good}\n")  # the blank line 2 still counts
    with pytest.raises(SFTDataError) as err:
        read_jsonl(path)
    assert str(err.value).startswith(f"{path}:4: ") and reason in str(err.value)


def test_write_and_read_back(tmp_path: Path) -> None:
    chat = {"messages": [{"role": "user", "content": "é ✓"}, {"role": "assistant", "content": "ok\n"}]}
    path = write_jsonl([*PAIRS, chat], tmp_path / "out" / "sft.jsonl")
    assert read_jsonl(path) == [*PAIRS, chat]
    assert sorted(p.name for p in path.parent.iterdir()) == ["sft.jsonl"]  # no temporary left behind
    with pytest.raises(SFTDataError, match="example 1: missing 'completion'"):
        write_jsonl([PAIRS[0], {"prompt": "x"}], tmp_path / "bad.jsonl")
    assert not (tmp_path / "bad.jsonl").exists()


def test_mbpp_pairs_follow_the_evaluation_prompt(shared_data: Path) -> None:
    train, val = load_mbpp_train(), load_mbpp_validation()  # the package's copy of MBPP
    assert len(train) == 374 and len(val) == 90
    assert train == load_mbpp_train(shared_data) and val == load_mbpp_validation(shared_data)  # the override
    ids = lambda pairs: {int(p["task_id"].split("/")[1]) for p in pairs}  # noqa: E731
    assert ids(train) == set(range(601, 975)) and ids(val) == set(range(511, 601))
    test_ids = {int(t.task_id.split("/")[1]) for t in load_mbpp(split="test")}
    assert len(test_ids) == 500 and not (ids(train) | ids(val)) & test_ids
    # the prompt is the evaluation's prompt, byte for byte
    eval_prompts = {t.task_id: t.prompt for t in load_mbpp(split="train")}
    assert all(p["prompt"] == eval_prompts[p["task_id"]] for p in train)
    # and both are the documented template, rebuilt here from the raw file
    raw = {r["task_id"]: r for r in map(json.loads, (shared_data / "mbpp" / "mbpp.jsonl").read_text().splitlines())}
    for p in train:
        r = raw[int(p["task_id"].split("/")[1])]
        if '"""' not in r["text"] and "\\" not in r["text"] + "".join(r["test_list"]):
            assert p["prompt"] == '"""\n' + r["text"].strip() + "\n" + "\n".join(r["test_list"]) + '\n"""\n'
        assert p["completion"] == r["code"].replace("\r\n", "\n") + "\n"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SyntaxWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            ast.parse(p["prompt"] + p["completion"])  # prompt + completion is the program the eval runs


def test_mbpp_pairs_need_no_data_directory(offline_python: Callable[..., subprocess.CompletedProcess]) -> None:
    # A fresh install: no ../shared, no data directory, HOME and the working directory elsewhere.
    code = ("import json; from smallcode.train.sft import load_mbpp_train, load_mbpp_validation; "
            "t, v = load_mbpp_train(), load_mbpp_validation(); "
            "print(json.dumps([len(t), len(v), t[0]['task_id'], t[0]['completion']]))")
    proc = offline_python("-c", code)
    assert proc.returncode == 0, proc.stderr
    first = load_mbpp_train()[0]
    assert json.loads(proc.stdout) == [374, 90, first["task_id"], first["completion"]]


def test_overflow_is_dropped_or_truncated_and_counted(tok: CodeTokenizer) -> None:
    long_completion = {"prompt": "x = ", "completion": "value + 1\n" * 20}
    long_prompt = {"prompt": "# comment\n" * 20, "completion": "pass\n"}
    short = {"prompt": "a", "completion": "b"}
    examples = [short, long_completion, long_prompt, short]
    seq_len = 12
    kept, stats = tokenize_examples(examples, tok, seq_len, overflow="drop")
    assert (stats.kept, stats.dropped, stats.truncated) == (2, 2, 0) and stats.examples == 4
    assert stats.longest == max(len(tokenize_example(e, tok)) for e in examples)
    assert stats.target_tokens == 2 * tokenize_example(short, tok).n_targets
    kept, stats = tokenize_examples(examples, tok, seq_len, overflow="truncate")
    # the long prompt leaves no completion in the first seq_len + 1 tokens: dropped even when truncating
    assert (stats.kept, stats.dropped, stats.truncated) == (3, 1, 1)
    full = tokenize_example(long_completion, tok)
    assert kept[1].ids == full.ids[: seq_len + 1] and kept[1].target == full.target[: seq_len + 1]
    ids, labels = make_row(kept[1], seq_len, tok.pad_id)
    assert list(ids) == list(full.ids[:seq_len]) and labels[-1] == full.ids[seq_len]
    with pytest.raises(ValueError, match="does not fit a row"):
        make_row(full, seq_len, tok.pad_id)
    with pytest.raises(ValueError, match="training example 1 has"):
        SFTLoader([kept[0], full], 1, seq_len, seed=0)


def fake_examples(n: int, seed: int = 0) -> list[TokenizedExample]:
    """n distinct examples: example i starts with token 100 + i, so a row names its example."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        length = int(rng.integers(3, 10))
        ids = (100 + i, *rng.integers(10, 90, size=length - 1).tolist())
        out.append(TokenizedExample(ids, (False,) + (True,) * (length - 1)))
    return out


def test_batches_are_a_pure_function_of_step() -> None:
    examples = fake_examples(23)
    a = SFTLoader(examples, batch_size=4, seq_len=10, seed=7)
    assert a.steps_per_epoch == 5
    seq = [a.batch(s) for s in range(12)]
    b = SFTLoader(examples, batch_size=4, seq_len=10, seed=7)
    for s in (11, 3, 7, 0):  # a resumed run, visiting steps in any order, gets the same batches
        assert torch.equal(b.batch(s)["input_ids"], seq[s]["input_ids"])
        assert torch.equal(b.batch(s)["labels"], seq[s]["labels"])
    # rows are the examples named by sample_indices, each at most once per epoch, different per epoch
    for s in range(5):
        assert (seq[s]["input_ids"][:, 0] - 100).tolist() == a.sample_indices(s).tolist()
    epoch0 = np.concatenate([a.sample_indices(s) for s in range(5)])
    epoch1 = np.concatenate([a.sample_indices(s) for s in range(5, 10)])
    assert len(set(epoch0.tolist())) == 20 and len(set(epoch1.tolist())) == 20
    assert not np.array_equal(epoch0, epoch1)
    c = SFTLoader(examples, batch_size=4, seq_len=10, seed=8)
    assert not torch.equal(c.batch(0)["input_ids"], seq[0]["input_ids"])


def test_ranks_split_each_global_batch_without_overlap() -> None:
    examples = fake_examples(20)
    ranks = [SFTLoader(examples, batch_size=2, seq_len=10, seed=3, rank=r, world_size=3) for r in range(3)]
    single = SFTLoader(examples, batch_size=6, seq_len=10, seed=3)
    assert ranks[0].steps_per_epoch == single.steps_per_epoch == 3
    seen: list[int] = []
    for step in range(3):
        parts = [ld.batch(step)["input_ids"] for ld in ranks]
        # the ranks together hold exactly the one-rank global batch, each its own slice
        assert torch.equal(torch.cat(parts), single.batch(step)["input_ids"])
        seen += [int(x) - 100 for p in parts for x in p[:, 0]]
    assert len(seen) == len(set(seen)) == 18


def test_validation_in_order_and_split_across_ranks() -> None:
    train, val = fake_examples(4), fake_examples(7, seed=1)
    loader = SFTLoader(train, batch_size=2, seq_len=10, seed=0, validation=val)
    batches = list(loader.validation(batch_size=3))
    assert [len(b["input_ids"]) for b in batches] == [3, 3, 1]
    rows = torch.cat([b["input_ids"] for b in batches])
    assert torch.equal(rows, torch.stack([torch.from_numpy(make_row(e, 10, 1)[0]) for e in val]))
    r1 = SFTLoader(train, batch_size=2, seq_len=10, seed=0, rank=1, world_size=2, validation=val)
    assert [b["input_ids"][0, 0].item() for b in r1.validation()] == [val[2].ids[0], val[6].ids[0]]


def test_loader_refuses_too_few_examples() -> None:
    with pytest.raises(ValueError, match="fewer than one global batch"):
        SFTLoader(fake_examples(5), batch_size=3, seq_len=10, seed=0, world_size=2)


def test_the_objective_takes_cross_entropy_on_completion_tokens_only(tok: CodeTokenizer) -> None:
    torch.manual_seed(0)
    model = SmallCodeLM(ModelConfig.preset("tiny", vocab_size=tok.vocab_size))
    examples, _ = tokenize_examples(PAIRS, tok, seq_len=40)
    loader = SFTLoader(examples, batch_size=3, seq_len=40, seed=0, pad_id=tok.pad_id)
    batch = loader.batch(0)
    total, ce, metrics = next_token_objective(model, batch)
    # by hand: each example alone (no padding), -log p(next token) at the completion positions only
    terms = []
    with torch.no_grad():
        for i in loader.sample_indices(0):
            ex = PAIRS[i]
            p, c = tok.encode(ex["prompt"]), tok.encode(ex["completion"]) + [tok.eot_id]
            ids = torch.tensor([p + c])
            logp = model(ids[:, :-1]).logits[0].log_softmax(-1)
            for j in range(len(c)):
                pos = len(p) + j  # index of the target token in the example
                if pos >= 1:
                    terms.append(-logp[pos - 1, ids[0, pos]])
    want = torch.stack(terms).mean()
    torch.testing.assert_close(ce, want, atol=1e-5, rtol=1e-5)
    assert int((batch["labels"] != -100).sum()) == len(terms)
    aux = model.config.balance_loss_coef * metrics["balance_loss"] + model.config.z_loss_coef * metrics["z_loss"]
    torch.testing.assert_close(total, ce + aux)
    total.backward()
    assert model.lm_head.weight.grad is not None and model.lm_head.weight.grad.abs().sum() > 0


def test_mbpp_source_leaves_out_stop_holders_and_ends_each_completion_at_its_code(
        tiny_tokenizer_dir: Path, tiny_tokenizer: CodeTokenizer) -> None:
    from smallcode.tasks.base import DEFAULT_STOP
    from smallcode.train.config import DataConfig
    from smallcode.train.sources import build_source

    tokenizer = tiny_tokenizer
    source = build_source(DataConfig(kind="mbpp", tokenizer=str(tiny_tokenizer_dir), seq_len=2048), 8, 0, 0, 1)
    refs = {ex["task_id"]: ex["completion"] for ex in load_mbpp_train()}
    dropped = {ex["task_id"] for ex in source.dropped}
    assert len(dropped) == 104 and all("\ndef" in refs[t].rstrip("\n") for t in dropped)
    kept = [t for t in refs if t not in dropped]
    assert len(kept) == 270 and not any(s in refs[t].rstrip("\n") for t in kept for s in DEFAULT_STOP)
    # every row's targets are its reference without the trailing whitespace, then the end of text
    batch = source.batch(0)
    for labels in batch["labels"]:
        targets = labelled(labels)
        assert targets[-1] == tokenizer.eot_id
        text = tokenizer.decode(targets[:-1])
        assert text and text in {r.rstrip() for r in refs.values()}
