"""Our own model exported to Hugging Face (``smallcode export hf``) keeps our prompt format when it is
served from the export: FIM suffix first, as the native server lays it out, not Qwen2.5-Coder's prefix
first (our FIM tokens are spelled as Qwen's). The same model then answers the same under both."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from factories import make_model  # type: ignore[import-not-found]
from smallcode.client import Fim, Sampling
from smallcode.client.local import LocalClient, open_local
from smallcode.export.hf import export_hf
from smallcode.model.checkpoint import save_checkpoint
from smallcode.runtime.formats import HFFormat, SmallcodeFormat, hf_prompt_format, prompt_format
from smallcode.runtime.load import open_engine
from smallcode.tokenizer import CodeTokenizer

transformers = pytest.importorskip("transformers")

PREFIX = "def area(r):\n    return "
SUFFIX = " * r\n\nprint(area(2))\n"
EXTRA = [("geometry/consts.py", "PI = 3.14159\n"), ("README", "circles")]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory, tiny_tokenizer_dir: Path) -> Path:
    # The tiny preset has global tokens: the export carries our modeling code, the default kind of ours.
    out = tmp_path_factory.mktemp("fmt-export")
    return save_checkpoint(make_model(), out / "ckpt", tokenizer_file=tiny_tokenizer_dir / "tokenizer.json")


@pytest.fixture(scope="module")
def exported(checkpoint: Path) -> Path:
    return export_hf(checkpoint, checkpoint.parent / "hf")


@pytest.fixture(scope="module")
def clients(checkpoint: Path, exported: Path) -> Iterator[tuple[LocalClient, LocalClient]]:
    native, hf = open_local(checkpoint, max_batch=1), open_local(exported, max_batch=1)
    yield native, hf
    native.close()
    hf.close()


def test_the_export_opens_with_our_fim_layout(exported: Path, tiny_tokenizer: CodeTokenizer) -> None:
    fmt = prompt_format(open_engine(exported).tokenizer)
    assert isinstance(fmt, HFFormat) and fmt.name == "smallcode"
    ours = SmallcodeFormat(tiny_tokenizer)
    for extra in ([], EXTRA):
        ids = fmt.fim(PREFIX, SUFFIX, extra)
        assert ids == ours.fim(PREFIX, SUFFIX, extra)
        i = ids.index(tiny_tokenizer.fim_prefix_id)
        assert ids[i + 1] == tiny_tokenizer.fim_suffix_id  # suffix first
    messages = [{"role": "user", "content": "sum of a list?"}]
    assert fmt.chat(messages) == ours.chat(messages)
    assert set(fmt.stop_ids) == set(ours.stop_ids)


def test_our_tokenizer_saved_again_by_transformers_is_still_ours(exported: Path, tmp_path: Path) -> None:
    transformers.AutoTokenizer.from_pretrained(exported).save_pretrained(tmp_path)
    fmt = hf_prompt_format(transformers.AutoTokenizer.from_pretrained(tmp_path))
    assert fmt.name == "smallcode" and fmt.fim(PREFIX, SUFFIX) == hf_prompt_format(
        transformers.AutoTokenizer.from_pretrained(exported)).fim(PREFIX, SUFFIX)


def test_a_transformers_tokenizer_that_is_not_ours_keeps_its_family(exported: Path) -> None:
    # The same vocabulary without our tokenizer_config's hash is any Qwen-like tokenizer: prefix first.
    tok = transformers.PreTrainedTokenizerFast(tokenizer_file=str(exported / "tokenizer.json"),
                                               eos_token="<|endoftext|>")
    fmt = hf_prompt_format(tok)
    assert fmt.name == "qwen2.5-coder" and fmt.native is None
    assert fmt.fim("a", "b")[0] == tok.convert_tokens_to_ids("<|fim_prefix|>")
    assert fmt.fim("a", "b")[1] != tok.convert_tokens_to_ids("<|fim_suffix|>")


def test_both_servers_formats_give_the_same_greedy_fim_text(clients: tuple[LocalClient, LocalClient]) -> None:
    native, hf = clients
    assert native.encode(Fim(PREFIX, SUFFIX, EXTRA)) == hf.encode(Fim(PREFIX, SUFFIX, EXTRA))
    sampling = Sampling(max_tokens=12, temperature=0.0)
    want = native.generate(Fim(PREFIX, SUFFIX, EXTRA), sampling)[0]
    got = hf.generate(Fim(PREFIX, SUFFIX, EXTRA), sampling)[0]
    assert want.text and (got.text, got.completion_tokens) == (want.text, want.completion_tokens)
