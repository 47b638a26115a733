"""open_backend: each kind of spec opens its backend, anything else (or an unwanted kind) is a clear error."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from smallcode.backends import backend_kind, open_backend
from smallcode.backends.samples import Samples, SamplesError
from smallcode.client import ClientError
from smallcode.model import ModelConfig, SmallCodeLM
from smallcode.model.checkpoint import save_checkpoint
from smallcode.tokenizer import CodeTokenizer

SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.fixture(scope="module")
def tokenizer(tiny_tokenizer: CodeTokenizer) -> CodeTokenizer:
    return tiny_tokenizer


@pytest.fixture(scope="module")
def model() -> SmallCodeLM:
    torch.manual_seed(0)
    return SmallCodeLM(ModelConfig.preset("tiny", vocab_size=512, n_global=0))


def test_an_endpoint_opens_without_importing_torch() -> None:
    code = ("import json, sys; from smallcode.backends import open_backend; "
            "b = open_backend('http://127.0.0.1:9/v1', model_name='m', api='chat'); "
            "print(json.dumps([type(b).__name__, b.model, b.api, 'torch' in sys.modules, "
            "'transformers' in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(SRC)}).stdout
    assert json.loads(out) == ["OpenAIBackend", "m", "chat", False, False]


def test_a_smallcode_checkpoint_opens_the_engine(tmp_path: Path, tokenizer: CodeTokenizer,
                                                 model: SmallCodeLM) -> None:
    from smallcode.backends.local import LocalBackend

    ckpt = save_checkpoint(model, tmp_path / "ck", tokenizer_file=tokenizer.save(tmp_path / "tok"))
    assert backend_kind(ckpt) == "smallcode"
    backend = open_backend(ckpt, seed=3, device="cpu")
    assert isinstance(backend, LocalBackend) and backend.name == f"smallcode:{ckpt}"
    prompts = ["def f(x):\n", "import json\n"]
    assert backend.generate(prompts, 2, 0.8, 0.95, 6, []) == LocalBackend(ckpt, seed=3).generate(
        prompts, 2, 0.8, 0.95, 6, [])


def test_a_hugging_face_directory_opens_transformers(tmp_path: Path, tokenizer: CodeTokenizer,
                                                     model: SmallCodeLM) -> None:
    pytest.importorskip("transformers")
    from smallcode.backends.local import LocalBackend
    from smallcode.export.hf import to_hf_model

    to_hf_model(model).save_pretrained(tmp_path / "hf")
    tokenizer.save(tmp_path / "hf")
    assert backend_kind(tmp_path / "hf") == "huggingface"
    backend = open_backend(tmp_path / "hf", device="cpu")
    assert isinstance(backend, LocalBackend) and backend.name == f"hf:{tmp_path / 'hf'}"
    assert [len(c) for c in backend.generate(["def f(x):\n"], 2, 0.0, 1.0, 4, [])] == [2]


def test_a_file_is_read_as_samples(tmp_path: Path) -> None:
    path = tmp_path / "samples.jsonl"
    rows = [("HumanEval/0", "a"), ("HumanEval/0", "b"), ("HumanEval/1", "c")]
    path.write_text("".join(json.dumps({"task_id": t, "completion": c, "completion_id": i}) + "\n"
                            for i, (t, c) in enumerate(rows)))
    samples = open_backend(path, task_ids={"HumanEval/0", "HumanEval/1"})
    assert samples == Samples(f"samples:{path}", {"HumanEval/0": ["a", "b"], "HumanEval/1": ["c"]})
    assert samples.n == 2
    with pytest.raises(SamplesError, match="unknown task id 'HumanEval/1'"):
        open_backend(path, task_ids={"HumanEval/0"})


def test_what_is_not_a_backend_or_not_wanted(tmp_path: Path, model: SmallCodeLM) -> None:
    with pytest.raises(ClientError, match="no such file or directory, and not an http"):
        open_backend(tmp_path / "missing")
    with pytest.raises(ClientError, match="no such file or directory"):
        open_backend("ftp://example.org/model")
    with pytest.raises(ClientError, match=r"no config\.json \(a model is a smallcode checkpoint or a Hugging Face"):
        open_backend(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"hello": 1}))
    with pytest.raises(ClientError, match="neither a smallcode checkpoint config nor a Hugging Face config"):
        open_backend(tmp_path)
    ckpt = save_checkpoint(model, tmp_path / "ck")  # refused by kind before anything is loaded
    with pytest.raises(ClientError, match="a smallcode checkpoint directory, but a samples file .* is wanted"):
        open_backend(ckpt, kinds=("samples",))
    with pytest.raises(ClientError, match="an http.* endpoint, but a smallcode checkpoint directory or a Hugging"):
        open_backend("https://example.org/v1", kinds=("huggingface", "smallcode"))
