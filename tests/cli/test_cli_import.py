"""``smallcode import hf DIR OUT``: writes the checkpoint with the model's tokenizer files, says what it wrote,
keeps an existing directory unless ``--force``, writes ``--dtype``, and refuses bad input in one line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from smallcode.cli.main import main as cli_main
from smallcode.model.checkpoint import Checkpoint

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory: pytest.TempPathFactory, tiny_tokenizer_dir: Path) -> Path:
    """A tiny Mistral (window 8) with a tokenizer of 400 ids and the files transformers keeps beside it."""
    torch.manual_seed(0)
    config = transformers.MistralConfig(vocab_size=512, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, sliding_window=8,
                                        max_position_embeddings=256)
    out = tmp_path_factory.mktemp("hf") / "mistral"
    transformers.MistralForCausalLM(config).save_pretrained(out)
    shutil.copyfile(tiny_tokenizer_dir / "tokenizer.json", out / "tokenizer.json")
    (out / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|endoftext|>", "model_max_length": 256}))
    (out / "special_tokens_map.json").write_text(json.dumps({"eos_token": "<|endoftext|>"}))
    (out / "chat_template.jinja").write_text("{% for m in messages %}{{ m.content }}{% endfor %}")
    return out


def test_import_writes_a_checkpoint_and_keeps_what_is_there(hf_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "ckpt"
    assert cli_main(["import", "hf", str(hf_dir), str(out), "--no-progress"]) == 0
    said = capsys.readouterr().out
    assert said.startswith(f"wrote {out}: MistralForCausalLM as smallcode") and "window 8" in said and "dense" in said
    ckpt = Checkpoint.open(out)
    assert ckpt.config.window == 8 and ckpt.extra["tokenizer_kind"] == "huggingface"
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json",
                 "chat_template.jinja"):  # transformers 5 writes the chat template to its own file
        assert (out / name).read_bytes() == (hf_dir / name).read_bytes(), name
    ckpt.load_model()
    from smallcode.fileio import umask

    for f in out.iterdir():  # written with open()'s mode, not safetensors' private 0600: others may read
        assert f.stat().st_mode & 0o777 == 0o666 & ~umask(), f.name

    assert cli_main(["import", "hf", str(hf_dir), str(out), "--no-progress"]) == 1  # OUT is not empty
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "not empty" in err and "--force" in err and err.count("\n") == 1
    (out / "stale").write_text("from before")
    assert cli_main(["import", "hf", str(hf_dir), str(out), "--force", "--dtype", "bfloat16", "--no-progress"]) == 0
    assert not (out / "stale").exists()  # replaced, not merged
    assert Checkpoint.open(out).weights()["embed.weight"].dtype == torch.bfloat16


def test_bad_input_is_one_line(hf_dir: Path, tmp_path: Path, capsys) -> None:
    star = tmp_path / "star"
    star.mkdir()
    (star / "config.json").write_text(json.dumps({"architectures": ["Starcoder2ForCausalLM"],
                                                  "model_type": "starcoder2"}))
    for src, problem in ((star, "Starcoder2ForCausalLM is not supported"), (tmp_path / "missing", "not a directory")):
        assert cli_main(["import", "hf", str(src), str(tmp_path / "out")]) == 1
        err = capsys.readouterr().err
        assert err.startswith("error: ") and problem in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "out").exists()
    assert cli_main(["import", "hf", str(hf_dir), str(tmp_path / "out"), "--dtype", "int8"]) == 2  # click's usage
    assert "int8" in capsys.readouterr().err


def test_the_verb_is_listed(capsys) -> None:
    assert cli_main(["--help"]) == 0
    assert "import" in capsys.readouterr().out
    assert cli_main(["import", "--help"]) == 0
    assert "hf" in capsys.readouterr().out
