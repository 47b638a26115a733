"""Round trips, special-token safety, file formats, hashing and formatting of the code tokenizer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer

from factories import STDLIB
from smallcode.tokenizer import (
    CodeTokenizer,
    TokenizerError,
    canonical_hash,
    load_tokenizer,
    specials,
    train_tokenizer,
)
from smallcode.tokenizer.pretokenize import SCHEMES, build_pre_tokenizer
from smallcode.tokenizer.train import restyle

FRAGMENTS = [
    "\t",
    "\r\n",
    "\r",
    "\n",
    " " * 17,
    "\t\t  \t",
    "\u00e9",
    "\u6f22\u5b57",
    "\U0001f600",
    "\u200b",
    "\x00",
    "def f(x):\n    return x\n",
    "<|endoftext|>",
    "<|fim_prefix|>",
    "<|pad|>",
    "<|user|>",
    "<|end|>",
    "<|endoftext",
    "|>",
    "<fim_middle>",
    "__init__",
    "0x1F",
    "3.14e-10",
    "'''",
    '"""',
    "\\n",
]
code_like = st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=20)), max_size=30).map("".join)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.one_of(st.text(), code_like))
def test_round_trip_and_no_special_ids_from_plain_text(tiny_tokenizer: CodeTokenizer, text: str) -> None:
    ids = tiny_tokenizer.encode(text)
    assert tiny_tokenizer.decode(ids) == text
    assert not set(ids) & set(tiny_tokenizer.special_ids.values())


def test_special_look_alikes_stay_plain_text(tiny_tokenizer: CodeTokenizer) -> None:
    text = "x = '<|endoftext|>'  # <|fim_middle|>"
    ids = tiny_tokenizer.encode(text)
    assert tiny_tokenizer.eot_id not in ids and tiny_tokenizer.fim_middle_id not in ids
    # The same text in a batch is treated the same way.
    assert tiny_tokenizer.encode_batch([text, "y"]) == [ids, tiny_tokenizer.encode("y")]


def test_specials_take_the_first_ids_in_order(tiny_tokenizer: CodeTokenizer, tiny_corpus: tuple) -> None:
    assert [tiny_tokenizer.special_ids[t] for t in specials.SPECIAL_TOKENS] == list(
        range(len(specials.SPECIAL_TOKENS))
    )
    assert tiny_tokenizer.eot_id == 0 and tiny_tokenizer.pad_id == 1
    assert tiny_tokenizer.vocab_size == tiny_corpus[1]


def test_newline_and_indent_is_one_token_after_training(tiny_tokenizer: CodeTokenizer) -> None:
    ids = tiny_tokenizer.encode("if x:\n        return y")
    pieces = [tiny_tokenizer.decode([i]) for i in ids]
    assert "\n        " in pieces


def test_file_loads_in_tokenizers_and_transformers(
    tiny_tokenizer_dir: Path, tiny_tokenizer: CodeTokenizer
) -> None:
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    text = "class A:\n\tdef run(self, n=10):\r\n        return [i ** 2 for i in range(n)]  # \u00e9\n"
    ours = tiny_tokenizer.encode(text)
    raw = Tokenizer.from_file(str(tiny_tokenizer_dir / "tokenizer.json"))
    assert raw.encode(text).ids == ours
    fast = PreTrainedTokenizerFast(tokenizer_file=str(tiny_tokenizer_dir / "tokenizer.json"))
    assert fast(text)["input_ids"] == ours
    auto = AutoTokenizer.from_pretrained(str(tiny_tokenizer_dir))
    assert auto(text)["input_ids"] == ours
    assert auto.decode(ours) == text
    assert auto.eos_token_id == tiny_tokenizer.eot_id and auto.pad_token_id == tiny_tokenizer.pad_id


def test_chat_ids_match_transformers_chat_template(
    tiny_tokenizer_dir: Path, tiny_tokenizer: CodeTokenizer
) -> None:
    from transformers import AutoTokenizer

    messages = [
        {"role": "system", "content": "You write Python."},
        {"role": "user", "content": "Sum a list.\n"},
        {"role": "assistant", "content": "def s(xs):\n    return sum(xs)\n"},
    ]
    ours = tiny_tokenizer.chat_ids(messages, add_generation_prompt=False)
    auto = AutoTokenizer.from_pretrained(str(tiny_tokenizer_dir))
    theirs = auto.apply_chat_template(messages, tokenize=True, add_generation_prompt=False, return_dict=False)
    assert ours == list(theirs)
    assert ours[0] == tiny_tokenizer.role_ids["system"] and ours[-1] == tiny_tokenizer.end_of_turn_id
    prompt = tiny_tokenizer.chat_ids(messages[:2], add_generation_prompt=True)
    assert prompt[-1] == tiny_tokenizer.role_ids["assistant"]
    with pytest.raises(ValueError, match="message 0: role 'robot'"):
        tiny_tokenizer.chat_ids([{"role": "robot", "content": "hi"}])


@pytest.mark.parametrize("mode", ["psm", "spm"])
def test_fim_layouts(tiny_tokenizer: CodeTokenizer, mode: str) -> None:
    t = tiny_tokenizer
    pre, mid, suf = "def add(a, b):\n", "    return a + b", "\n\nprint(add(1, 2))\n"
    ids = t.fim_ids(pre, mid, suf, mode=mode)  # type: ignore[arg-type]
    P, M, S = t.encode(pre), t.encode(mid), t.encode(suf)
    if mode == "psm":
        assert ids == [t.fim_prefix_id, *P, t.fim_suffix_id, *S, t.fim_middle_id, *M]
    else:
        assert ids == [t.fim_prefix_id, t.fim_suffix_id, *S, t.fim_middle_id, *P, *M]
    # The inference prompt is the training example cut right where the middle starts.
    prompt = t.fim_prompt(pre, suf, mode=mode)  # type: ignore[arg-type]
    assert ids[: len(prompt)] == prompt and ids[len(prompt) :] == M
    with pytest.raises(ValueError, match="unknown FIM mode"):
        t.fim_ids(pre, mid, suf, mode="pms")  # type: ignore[arg-type]


def test_hash_is_canonical_and_survives_save_load(tmp_path: Path, tiny_tokenizer: CodeTokenizer) -> None:
    saved = tiny_tokenizer.save(tmp_path / "copy")
    again = load_tokenizer(saved)  # the file path works as well as the directory
    assert again.hash == tiny_tokenizer.hash
    # Re-formatting the file (key order, indentation) does not change the hash ...
    obj = json.loads(saved.read_text())
    assert canonical_hash(json.dumps(obj, indent=None)) == tiny_tokenizer.hash
    # ... but any change of content does.
    obj["model"]["merges"] = obj["model"]["merges"][:-1]
    assert canonical_hash(json.dumps(obj)) != tiny_tokenizer.hash
    assert not list((tmp_path / "copy").glob("*.tmp")), "temporary files left behind"


def test_training_is_deterministic(tmp_path: Path, tiny_tokenizer: CodeTokenizer, tiny_corpus: tuple) -> None:
    train_tokenizer(tiny_corpus[0], tiny_corpus[1], tmp_path, show_progress=False)
    assert load_tokenizer(tmp_path).hash == tiny_tokenizer.hash


def test_train_reads_dirs_globs_and_jsonl_and_counts_skips(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.py").write_text("def alpha():\n    return 1\n" * 50)
    (src / "b.py").write_bytes(b"\xff\xfe not utf-8 \x80")
    (src / "c.py").write_bytes(b"binary\x00data")
    (tmp_path / "more.py").write_text("beta_gamma = [1, 2, 3]\n" * 50)
    docs = tmp_path / "docs.jsonl"
    docs.write_text("\n".join(json.dumps({"text": f"value_{i} = {i}\n"}) for i in range(20)) + "\n")
    out = tmp_path / "tok"
    train_tokenizer([src, str(tmp_path / "m*.py"), docs], 300, out, show_progress=False)
    report = json.loads((out / "train_report.json").read_text())
    assert (report["documents"], report["binary"], report["non_utf8"]) == (1 + 1 + 20, 1, 1)
    tok = load_tokenizer(out)
    assert tok.decode(tok.encode("beta_gamma")) == "beta_gamma"


def test_embedded_corpus_holds_out_the_given_modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The tokenizer, like data prepare, does not train on the modules the repo suite is mined from."""
    from smallcode import corpus

    root = tmp_path / "stdlib"  # a small stand-in for the embedded corpus
    for i, rel in enumerate(["textwrap.py", "json/__init__.py", "json/decoder.py", "glob.py"]):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(f"value_{i} = {i}\n" * 20)
    monkeypatch.setattr(corpus, "default_corpus", lambda: [root])
    held = frozenset({"textwrap", "json.decoder"})
    train_tokenizer(None, 300, tmp_path / "a", show_progress=False, held_out_modules=held)
    report = json.loads((tmp_path / "a" / "train_report.json").read_text())
    assert (report["documents"], report["held_out"]) == (2, 2)
    train_tokenizer(None, 300, tmp_path / "b", show_progress=False, held_out_modules=frozenset())
    report = json.loads((tmp_path / "b" / "train_report.json").read_text())
    assert (report["documents"], report["held_out"]) == (4, 0)


def test_bad_inputs_name_the_file(tmp_path: Path, tiny_corpus: tuple) -> None:
    with pytest.raises(ValueError, match="too small"):
        train_tokenizer(tiny_corpus[0], 100, tmp_path / "x", show_progress=False)
    with pytest.raises(TokenizerError, match="no tokenizer file"):
        load_tokenizer(tmp_path)
    bad = tmp_path / "tokenizer.json"
    bad.write_text("{not json")
    with pytest.raises(TokenizerError, match=str(bad)):
        load_tokenizer(tmp_path)
    bad_jsonl = tmp_path / "bad.jsonl"
    bad_jsonl.write_text('{"text": "ok"}\n[1, 2]\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: expected a JSON object"):
        train_tokenizer([bad_jsonl], 300, tmp_path / "y", show_progress=False)


def test_foreign_tokenizer_without_our_specials_is_refused(shared_data: Path) -> None:
    with pytest.raises(TokenizerError, match=r"special token <\|pad\|> missing"):
        load_tokenizer(shared_data / "tokenizers" / "gpt2")


def test_pre_tokenizer_schemes() -> None:
    pieces = [
        p for p, _ in build_pre_tokenizer("code").pre_tokenize_str("x.append(foo_bar)\n    return 1234")
    ]
    # Byte-level alphabet: space is shown as "Ġ", newline as "Ċ".
    assert pieces == ["x", ".append", "(foo_bar", ")", "ĊĠĠĠĠ", "return", "Ġ123", "4"]
    for scheme in SCHEMES:
        text = "a\r\n\tb  =  'c'\n\n"
        joined = "".join(p for p, _ in build_pre_tokenizer(scheme).pre_tokenize_str(text))
        assert len(joined) == len(text.encode())  # nothing dropped
    with pytest.raises(ValueError, match="unknown pre-tokenisation scheme"):
        build_pre_tokenizer("nope")


def test_restyle_is_deterministic_and_only_changes_layout() -> None:
    text = "def f():\n    if x:\n        return 1\n"
    assert restyle(text, {"crlf": 1.0, "tabs": 1.0}) == "def f():\r\n\tif x:\r\n\t\treturn 1\r\n"
    assert restyle(text, {"two_spaces": 1.0}) == "def f():\n  if x:\n    return 1\n"
    assert restyle(text, {}) == text
    assert restyle(text) == restyle(text)


def test_context_files_come_first_with_the_file_separator(tiny_tokenizer: CodeTokenizer) -> None:
    t = tiny_tokenizer
    assert t.file_sep_id == specials.SPECIAL_TOKENS.index(specials.FILE_SEP)
    files = [("pkg/util.py", "def helper():\n    return 1\n"), ("README", "notes")]
    head = t.context_ids(files)
    assert head == [t.file_sep_id, *t.encode("pkg/util.py\ndef helper():\n    return 1\n"),
                    t.file_sep_id, *t.encode("README\nnotes")]
    for mode in ("psm", "spm"):
        prompt = t.fim_prompt("x = ", "\n", mode=mode, files=files)  # type: ignore[arg-type]
        assert prompt == head + t.fim_prompt("x = ", "\n", mode=mode)  # type: ignore[arg-type]
    # A literal separator inside a file stays text: it cannot fake a file boundary.
    assert t.context_ids([("a", "<|file_sep|>b\n")]).count(t.file_sep_id) == 1


def test_tokenizer_trained_before_file_sep_still_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Old tokenizers lack <|file_sep|>: they load, and lay context files out as commented plain text."""
    old = tuple(t for t in specials.SPECIAL_TOKENS if t != specials.FILE_SEP)
    monkeypatch.setattr(specials, "SPECIAL_TOKENS", old)
    # Its own training on purpose: a tokenizer made without <|file_sep|> (one small module is enough).
    train_tokenizer([STDLIB / "string.py"], 400, tmp_path, show_progress=False)
    monkeypatch.undo()
    tok = load_tokenizer(tmp_path)
    assert tok.file_sep_id is None and specials.FILE_SEP not in tok.special_ids
    assert [tok.special_ids[n] for n in old] == list(range(len(old)))  # the older ids did not move
    files = [("src/a.py", "x = 1"), ("lib/b.rs", "fn main() {}\n")]
    assert tok.decode(tok.context_ids(files)) == "# src/a.py\nx = 1\n// lib/b.rs\nfn main() {}\n"
    assert specials.FILE_SEP not in tok.hf_config()["additional_special_tokens"]
    prompt = tok.fim_prompt("def f(", ")", mode="spm", files=files)
    assert prompt[: len(tok.context_ids(files))] == tok.context_ids(files)
