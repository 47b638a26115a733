"""Prompt formats: exact token layouts of FIM, context files and chat, ours and each Hugging Face family."""

from __future__ import annotations

import pytest
import torch

from hf_tokenizers import codellama_like, family_tokenizer  # type: ignore[import-not-found]
from smallcode.runtime.formats import FormatError, hf_prompt_format, prompt_format
from smallcode.runtime.scheduler import RequestHandle
from smallcode.tokenizer import CodeTokenizer

PREFIX = "def area(r):\n    return "
SUFFIX = " * r\n\nprint(area(2))\n"
EXTRA = [("geometry/consts.py", "PI = 3.14159\n"), ("README", "circles")]


@pytest.fixture(scope="module")
def ours(tiny_tokenizer: CodeTokenizer) -> CodeTokenizer:
    return tiny_tokenizer


# ------------------------------------------------------------------------------------ smallcode
def test_ours_is_suffix_prefix_middle_after_the_context_files(ours: CodeTokenizer) -> None:
    fmt = prompt_format(ours)
    assert fmt.name == "smallcode"
    assert fmt.fim(PREFIX, SUFFIX) == [ours.fim_prefix_id, ours.fim_suffix_id, *ours.encode(SUFFIX),
                                       ours.fim_middle_id, *ours.encode(PREFIX)]
    files = [ours.file_sep_id, *ours.encode("geometry/consts.py\nPI = 3.14159\n"),
             ours.file_sep_id, *ours.encode("README\ncircles")]
    assert fmt.fim(PREFIX, SUFFIX, EXTRA) == [*files, *fmt.fim(PREFIX, SUFFIX)]


def test_ours_typing_at_the_cursor_changes_only_the_end(ours: CodeTokenizer) -> None:
    fmt = prompt_format(ours)
    before, after = fmt.fim(PREFIX, SUFFIX, EXTRA), fmt.fim(PREFIX + "3.14 if r else 0", SUFFIX, EXTRA)
    fixed = len(fmt.fim("", SUFFIX, EXTRA))  # files, suffix and the middle token
    assert after[:fixed] == before[:fixed]
    assert ours.decode(after[fixed:]) == PREFIX + "3.14 if r else 0"


def test_ours_stops_chat_and_plain_text(ours: CodeTokenizer) -> None:
    fmt = prompt_format(ours)
    assert fmt.stop_ids == [ours.eot_id, ours.end_of_turn_id]
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "sum of a list?"}]
    ids = fmt.chat(messages)
    assert ids == ours.chat_ids(messages) + [ours.role_ids["assistant"]]
    assert fmt.decode(fmt.encode("x = <|endoftext|>")) == "x = <|endoftext|>"
    assert ours.eot_id not in fmt.encode("x = <|endoftext|>")  # a literal in the text stays text


@pytest.mark.parametrize("messages, match", [
    ([], "empty"),
    ([{"role": "tool", "content": "x"}], "role 'tool'"),
    ([{"role": "user", "content": None}], "content must be a string"),
    (["hello"], "not an object"),
])
def test_bad_messages_are_value_errors(ours: CodeTokenizer, messages: list, match: str) -> None:
    for fmt in (prompt_format(ours), hf_prompt_format(family_tokenizer("qwen2.5-coder"))):
        with pytest.raises(ValueError, match=match):
            fmt.chat(messages)


def test_prompt_format_refuses_a_transformers_tokenizer() -> None:
    with pytest.raises(TypeError, match="hf_prompt_format"):
        prompt_format(family_tokenizer("qwen2.5-coder"))  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------ Hugging Face
# The expected prompts as text; the byte-level test tokenizers have no merges, so the expected ids
# are exactly the encoding of this text (special tokens matched).
LAYOUTS = {
    "qwen2.5-coder": (
        f"<|fim_prefix|>{PREFIX}<|fim_suffix|>{SUFFIX}<|fim_middle|>",
        f"<|file_sep|>geometry/consts.py\nPI = 3.14159\n<|file_sep|>README\ncircles"
        f"<|file_sep|><|fim_prefix|>{PREFIX}<|fim_suffix|>{SUFFIX}<|fim_middle|>"),
    "starcoder": (
        f"<fim_prefix>{PREFIX}<fim_suffix>{SUFFIX}<fim_middle>",
        f"<file_sep>geometry/consts.py\nPI = 3.14159\n<file_sep>README\ncircles"
        f"<file_sep><fim_prefix>{PREFIX}<fim_suffix>{SUFFIX}<fim_middle>"),
    "deepseek-coder": (
        f"<｜begin▁of▁sentence｜><｜fim▁begin｜>{PREFIX}<｜fim▁hole｜>{SUFFIX}<｜fim▁end｜>",
        f"<｜begin▁of▁sentence｜><｜fim▁begin｜># geometry/consts.py\nPI = 3.14159\n# README\ncircles\n"
        f"{PREFIX}<｜fim▁hole｜>{SUFFIX}<｜fim▁end｜>"),
}
STOPS = {
    "qwen2.5-coder": {"<|endoftext|>", "<|fim_pad|>", "<|file_sep|>", "<|repo_name|>", "<|im_end|>"},
    "starcoder": {"<|endoftext|>", "<file_sep>"},
    "deepseek-coder": {"<｜end▁of▁sentence｜>", "<|EOT|>"},
}


@pytest.mark.parametrize("family", sorted(LAYOUTS))
def test_hf_family_fim_layout(family: str) -> None:
    tok = family_tokenizer(family)
    fmt = hf_prompt_format(tok)
    assert fmt.name == family
    plain, with_files = LAYOUTS[family]
    for ids, text in ((fmt.fim(PREFIX, SUFFIX), plain), (fmt.fim(PREFIX, SUFFIX, EXTRA), with_files)):
        assert tok.decode(ids) == text
        assert ids == tok.encode(text, add_special_tokens=False)
    assert STOPS[family] <= set(tok.convert_ids_to_tokens(fmt.stop_ids))
    assert tok.eos_token_id in fmt.stop_ids


def test_codellama_layout_has_no_space_before_the_suffix() -> None:
    tok = codellama_like()
    fmt = hf_prompt_format(tok)
    assert fmt.name == "codellama"
    ids = fmt.fim("def f(x):", "return x\n")
    # <PRE> {prefix} <SUF>{suffix} <MID>: the prefix gets the tokenizer's leading "▁", the suffix none.
    assert tok.convert_ids_to_tokens(ids) == [
        "<s>", "▁<PRE>", "▁", *"def", "▁", *"f(x):", "▁<SUF>", *"return", "▁", "x", "\n", "▁<MID>"]
    with_files = tok.convert_ids_to_tokens(fmt.fim("def f(x):", "return x\n", [("a.py", "A=1")]))
    assert with_files[:10] == ["<s>", "▁<PRE>", "▁", "#", "▁", *"a.py", "\n"]
    assert {"▁<EOT>", "</s>"} <= set(tok.convert_ids_to_tokens(fmt.stop_ids))


def test_unknown_family_refuses_fim_but_encodes_plain_prompts() -> None:
    tok = family_tokenizer("plain")
    fmt = hf_prompt_format(tok)
    with pytest.raises(FormatError, match="no fill-in-the-middle tokens.*qwen2.5-coder"):
        fmt.fim("a", "b")
    assert fmt.decode(fmt.encode("x = 1\n")) == "x = 1\n"
    assert fmt.stop_ids == [tok.eos_token_id]


def test_hf_chat_goes_through_the_tokenizers_template() -> None:
    tok = family_tokenizer("qwen2.5-coder")
    ids = hf_prompt_format(tok).chat([{"role": "user", "content": "hi"}])
    assert tok.decode(ids) == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert ids[0] == tok.convert_tokens_to_ids("<|im_start|>")
    # A template that writes begin-of-sequence itself gets it once, not twice.
    deepseek = family_tokenizer("deepseek-coder")
    ids = hf_prompt_format(deepseek).chat([{"role": "user", "content": "hi"}])
    assert ids.count(deepseek.bos_token_id) == 1


def test_hf_chat_errors_are_value_errors() -> None:
    with pytest.raises(ValueError, match="no chat template"):
        hf_prompt_format(family_tokenizer("starcoder")).chat([{"role": "user", "content": "hi"}])
    with pytest.raises(ValueError, match="roles must alternate"):
        hf_prompt_format(family_tokenizer("deepseek-coder")).chat([{"role": "assistant", "content": "hi"}])


def test_generation_config_stop_ids_are_added_once() -> None:
    tok = family_tokenizer("qwen2.5-coder")
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    fmt = hf_prompt_format(tok, extra_stop_ids=[im_end, 7])
    assert fmt.stop_ids.count(im_end) == 1 and 7 in fmt.stop_ids


def test_ours_through_the_app_reuses_the_prompt_as_the_user_types(ours: CodeTokenizer) -> None:
    from fastapi.testclient import TestClient

    from smallcode.model import ModelConfig, SmallCodeLM
    from smallcode.runtime import Engine
    from smallcode.runtime.scheduler import Scheduler
    from smallcode.serve.app import create_app

    torch.manual_seed(0)
    engine = Engine(SmallCodeLM(ModelConfig.preset("tiny", vocab_size=512)), ours)
    scheduler = Scheduler(engine, max_batch=2, prefill_chunk=16)
    fmt = prompt_format(ours)
    seen: list[tuple[list[int], RequestHandle]] = []
    submit = scheduler.submit

    def spy(ids: list[int], *args: object, **kwargs: object) -> RequestHandle:
        handle = submit(ids, *args, **kwargs)  # type: ignore[arg-type]
        seen.append((list(ids), handle))
        return handle

    scheduler.submit = spy  # type: ignore[method-assign]
    try:
        client = TestClient(create_app(scheduler, fmt, model_name="tiny"))
        extra = [{"filename": name, "text": text} for name, text in EXTRA]
        for typed in ("", "3.1"):
            r = client.post("/infill", json={"input_prefix": PREFIX + typed, "input_suffix": SUFFIX,
                                             "input_extra": extra, "n_predict": 2})
            assert r.status_code == 200, r.text
    finally:
        scheduler.close()
    (first, _), (second, handle) = seen
    assert first == fmt.fim(PREFIX, SUFFIX, EXTRA) and second == fmt.fim(PREFIX + "3.1", SUFFIX, EXTRA)
    # All but the last few tokens of the second prompt come from the first one's cache.
    assert handle.cached_tokens >= len(first) - 8
