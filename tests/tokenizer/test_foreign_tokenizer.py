"""A Hugging Face model's own tokenizer.json (with its tokenizer_config.json beside it) loaded as a
``CodeTokenizer``: its end-of-sequence, pad, FIM tokens, file separator and stops found by family, its
plain encoding equal to transformers', and its FIM layout the one the server sends that family."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from transformers import PreTrainedTokenizerFast

from hf_tokenizers import FAMILY_SPECIALS, byte_level, codellama_like  # type: ignore[import-not-found]
from smallcode.runtime.formats import HFTokenizer, hf_prompt_format
from smallcode.tokenizer import CodeTokenizer, TokenizerError, canonical_hash, load_tokenizer

FAMILIES = ("qwen2.5-coder", "starcoder", "deepseek-coder", "codellama", "plain")
TEXT = "def f(x):\n    return x <|endoftext|> + '<fim_prefix>'  # ünïcode ☺\n"


def hf_tokenizer(family: str) -> PreTrainedTokenizerFast:
    """The family's test tokenizer, with the pad token its real vocabulary has where the tests' one lacks it
    (DeepSeek-Coder's <pad>), and a plain one whose config names its own pad token."""
    if family == "codellama":
        return codellama_like()
    spec = dict(FAMILY_SPECIALS[family])
    if family == "deepseek-coder":
        spec["specials"] = [*spec["specials"], "<pad>"]
    if family == "plain":
        spec["specials"] = [*spec["specials"], "<my_pad>"]
    tok = byte_level(**spec)
    if family == "plain":
        tok.pad_token = "<my_pad>"
    return tok


def saved(tok: PreTrainedTokenizerFast, directory: Path) -> Path:
    tok.save_pretrained(directory)
    return directory


# What each family's tokens are, written out by name (the families' model cards and vocabularies).
EXPECTED: dict[str, dict] = {
    "qwen2.5-coder": dict(pad="<|fim_pad|>", fim=("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"),
                          file_sep="<|file_sep|>",
                          stops={"<|endoftext|>", "<|fim_pad|>", "<|file_sep|>", "<|repo_name|>", "<|im_end|>",
                                 "<|im_start|>", "<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"}),
    "starcoder": dict(pad="<fim_pad>", fim=("<fim_prefix>", "<fim_suffix>", "<fim_middle>"), file_sep="<file_sep>",
                      stops={"<|endoftext|>", "<file_sep>", "<fim_prefix>", "<fim_suffix>", "<fim_middle>"}),
    "deepseek-coder": dict(pad="<pad>", fim=("<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>"), file_sep=None,
                           stops={"<｜end▁of▁sentence｜>", "<|EOT|>", "<｜fim▁begin｜>", "<｜fim▁hole｜>",
                                  "<｜fim▁end｜>"}),
    "codellama": dict(pad="<unk>", fim=("▁<PRE>", "▁<SUF>", "▁<MID>"), file_sep=None, stops={"</s>", "▁<EOT>"}),
    "plain": dict(pad="<my_pad>", fim=None, file_sep=None, stops={"<|endoftext|>"}),
}


@pytest.mark.parametrize("family", FAMILIES)
def test_special_ids_are_the_familys(family: str, tmp_path: Path) -> None:
    hf = hf_tokenizer(family)
    tok = load_tokenizer(saved(hf, tmp_path))
    want = EXPECTED[family]
    ids = hf.convert_tokens_to_ids
    assert not tok.native and tok.family == family
    assert tok.eot_id == hf.eos_token_id
    assert tok.pad_id == ids(want["pad"]) and tok.pad_id != tok.eot_id
    fim = (tok.fim_prefix_id, tok.fim_suffix_id, tok.fim_middle_id)
    assert fim == ((None,) * 3 if want["fim"] is None else tuple(ids(list(want["fim"]))))
    assert tok.file_sep_id == (None if want["file_sep"] is None else ids(want["file_sep"]))
    assert set(tok.stop_ids) == set(ids(sorted(want["stops"])))
    assert tok.role_ids == {} and tok.vocab_size == len(hf)
    assert tok.hash == canonical_hash((tmp_path / "tokenizer.json").read_text())


@pytest.mark.parametrize("family", FAMILIES)
def test_plain_text_encodes_as_transformers_does_without_special_tokens_or_bos(family: str, tmp_path: Path) -> None:
    hf = hf_tokenizer(family)
    tok = load_tokenizer(saved(hf, tmp_path))
    # What the data pipeline needs: no begin-of-sequence, special tokens in the text are plain text.
    want = hf.encode(TEXT, add_special_tokens=False, split_special_tokens=True)
    assert tok.encode(TEXT) == want
    assert tok.encode_batch([TEXT, "x"]) == [want, hf.encode("x", add_special_tokens=False)]
    assert hf.eos_token_id not in want
    if family != "codellama":  # byte-level: every string comes back (a SentencePiece one drops its first space)
        assert tok.decode(tok.encode(TEXT)) == TEXT


@pytest.mark.parametrize("family", ["qwen2.5-coder", "starcoder", "deepseek-coder", "codellama"])
def test_fim_layout_is_the_one_the_server_sends_the_family(family: str, tmp_path: Path) -> None:
    hf = hf_tokenizer(family)
    tok = load_tokenizer(saved(hf, tmp_path))
    served = hf_prompt_format(hf)
    prefix, suffix, files = "def f(x):\n    ", "\n    return y\n", [("a.py", "X = 1\n"), ("b/c.py", "Y = 2")]
    lead = len(served.encode("")) if family in ("deepseek-coder", "codellama") else 0  # the served BOS
    for extra in ([], files):
        assert tok.fim_prompt(prefix, suffix, "psm", files=extra) == served.fim(prefix, suffix, extra)[lead:]
    prompt = served.fim(prefix, suffix)[lead:]
    example = tok.fim_ids(prefix, "y = x", suffix, "psm")  # a training example: the prompt, then the middle
    assert example[: len(prompt)] == prompt
    # The middle continues the line: no SentencePiece space invented before it.
    assert HFTokenizer(served).decode(example[len(prompt):]) == "y = x"


def test_qwen_fim_with_files_written_out(tmp_path: Path) -> None:
    tok = load_tokenizer(saved(hf_tokenizer("qwen2.5-coder"), tmp_path))
    ids = tok.fim_ids("def f(", "x", "):\n", "psm", files=[("a.py", "X = 1\n")])
    assert tok.decode(ids) == ("<|file_sep|>a.py\nX = 1\n<|file_sep|>"
                               "<|fim_prefix|>def f(<|fim_suffix|>):\n<|fim_middle|>x")
    spm = tok.fim_ids("def f(", "x", "):\n", "spm")
    assert tok.decode(spm) == "<|fim_prefix|><|fim_suffix|>):\n<|fim_middle|>def f(x"


def test_deepseek_context_files_go_at_the_start_of_the_prefix(tmp_path: Path) -> None:
    tok = load_tokenizer(saved(hf_tokenizer("deepseek-coder"), tmp_path))
    ids = tok.fim_ids("def f(", "x", "):\n", "psm", files=[("a.py", "X = 1\n")])
    assert tok.decode(ids) == "<｜fim▁begin｜># a.py\nX = 1\ndef f(<｜fim▁hole｜>):\n<｜fim▁end｜>x"


def test_a_model_without_fim_tokens_says_so_and_has_no_chat_roles(tmp_path: Path) -> None:
    tok = load_tokenizer(saved(hf_tokenizer("plain"), tmp_path))
    for call in (lambda: tok.fim_ids("a", "b", "c"), lambda: tok.fim_prompt("a", "c")):
        with pytest.raises(TokenizerError, match="has no fill-in-the-middle tokens") as info:
            call()
        assert "\n" not in str(info.value)
    with pytest.raises(TokenizerError, match="chat template"):
        tok.chat_ids([{"role": "user", "content": "hi"}])


def test_pad_equal_to_eos_falls_back_to_the_familys_pad(tmp_path: Path) -> None:
    hf = hf_tokenizer("qwen2.5-coder")
    hf.pad_token = hf.eos_token  # as Qwen2.5-Coder's own config has it
    tok = load_tokenizer(saved(hf, tmp_path))
    assert tok.pad_id == hf.convert_tokens_to_ids("<|fim_pad|>")


def test_no_pad_token_is_named_when_a_pad_is_needed(tmp_path: Path) -> None:
    tok = load_tokenizer(saved(byte_level(**FAMILY_SPECIALS["deepseek-coder"]), tmp_path))  # no <pad>
    assert tok.eot_id is not None  # it loads: serving needs no pad
    with pytest.raises(TokenizerError, match="no pad token distinct from end-of-sequence") as info:
        _ = tok.pad_id
    assert "pad_token" in str(info.value) and "\n" not in str(info.value)


def test_generation_config_eos_ids_are_stops(tmp_path: Path) -> None:
    hf = hf_tokenizer("plain")
    saved(hf, tmp_path)
    extra = hf.convert_tokens_to_ids("Z")
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": [hf.eos_token_id, extra]}))
    assert load_tokenizer(tmp_path).stop_ids == (hf.eos_token_id, extra)


def test_a_foreign_file_without_its_config_is_refused_naming_the_config(tmp_path: Path) -> None:
    saved(hf_tokenizer("qwen2.5-coder"), tmp_path)
    (tmp_path / "tokenizer_config.json").unlink()
    with pytest.raises(TokenizerError, match="tokenizer_config.json"):
        load_tokenizer(tmp_path)


def test_save_writes_the_models_files_back_unchanged(tmp_path: Path) -> None:
    src = saved(hf_tokenizer("qwen2.5-coder"), tmp_path / "src")
    tok = load_tokenizer(src)
    assert set(tok.sidecars) == {"tokenizer_config.json", "chat_template.jinja"}
    tok.save(tmp_path / "out")
    for name in tok.sidecars:
        assert (tmp_path / "out" / name).read_bytes() == (src / name).read_bytes()
    again = load_tokenizer(tmp_path / "out")
    assert again.hash == tok.hash and not again.native and again.pad_id == tok.pad_id


def test_our_own_tokenizer_stays_native(tiny_tokenizer: CodeTokenizer, tiny_tokenizer_dir: Path) -> None:
    tok = load_tokenizer(tiny_tokenizer_dir)  # its tokenizer_config.json (ours) beside it
    assert tok.native and tok.family == "smallcode" and tok.sidecars == {}
    assert (tok.eot_id, tok.pad_id, tok.fim_prefix_id, tok.stop_ids) == (0, 1, 2, tiny_tokenizer.stop_ids)
    assert tok.chat_ids([{"role": "user", "content": "x"}])[0] == tok.role_ids["user"]
