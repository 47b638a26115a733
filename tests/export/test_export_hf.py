"""``export_hf`` / ``smallcode export hf``: the directory transformers loads computes our function.

Four tiny models (window 16), with and without global tokens, MoE and dense, are saved as
checkpoints with a tokenizer trained here, exported, and loaded back through ``AutoModelForCausalLM``
and ``AutoTokenizer``. The references are ours: ``SmallCodeLM``'s logits, the engine's greedy tokens
and ``CodeTokenizer``'s ids.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from export_helpers import WINDOW, make_model  # type: ignore[import-not-found]

import factories  # type: ignore[import-not-found]
from smallcode.cli.main import main as cli_main
from smallcode.export.hf import REMOTE_DIR, REMOTE_FILES, export_hf
from smallcode.fileio import umask
from smallcode.model.checkpoint import save_checkpoint
from smallcode.runtime import Completion, Engine, SamplingParams
from smallcode.tokenizer import CodeTokenizer, load_tokenizer

transformers = pytest.importorskip("transformers")

KINDS = {  # name: (ModelConfig overrides, the transformers class it loads as)
    "moe-global": ({}, "SmallCodeForCausalLM"),
    "dense-global": ({"n_experts": 1, "top_k": 1}, "SmallCodeForCausalLM"),
    "moe-no-global": ({"n_global": 0}, "MixtralForCausalLM"),
    "dense-no-global": ({"n_global": 0, "n_experts": 1, "top_k": 1}, "MistralForCausalLM"),
    # the options of imported models (random biases: see with_random_biases)
    "qwen2-linear": ({"n_global": 0, "n_experts": 1, "top_k": 1, "qkv_bias": True, "tie_embeddings": True,
                      "rope_scaling": "linear", "rope_factor": 2.5}, "Qwen2ForCausalLM"),
    "llama3-attention-bias": ({"n_global": 0, "n_experts": 1, "top_k": 1, "window": 128, "qkv_bias": True,
                               "out_bias": True, "rope_scaling": "llama3", "rope_factor": 8.0,
                               "rope_original_max_len": 32}, "LlamaForCausalLM"),
    "global-llama3-biases": ({"qkv_bias": True, "out_bias": True, "rope_scaling": "llama3", "rope_factor": 8.0,
                              "rope_original_max_len": 32}, "SmallCodeForCausalLM"),
}
CODE = 'import json\n\n\ndef load(path):\n    """Read one JSON file."""\n    with open(path) as f:\n' \
       '        return json.load(f)\n'






@pytest.fixture(scope="module")
def tokenizer(tiny_tokenizer_dir: Path) -> CodeTokenizer:
    return load_tokenizer(tiny_tokenizer_dir)




@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory, tiny_tokenizer_dir: Path) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ckpt")
    tokenizer_file = tiny_tokenizer_dir / "tokenizer.json"
    return {name: save_checkpoint(with_random_biases(factories.make_model(**{"window": WINDOW, **overrides})),
                                  root / name, tokenizer_file=tokenizer_file)
            for name, (overrides, _) in KINDS.items()}


def with_random_biases(model: torch.nn.Module) -> torch.nn.Module:
    """The initialisation's zero biases would hide an export that drops them."""
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for key, p in model.named_parameters():
            if key.endswith(".bias"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return model


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory, checkpoints: dict[str, Path]) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hf")
    return {name: export_hf(ckpt, root / name) for name, ckpt in checkpoints.items()}


@pytest.fixture(scope="module")
def hf_models(exports: dict[str, Path]) -> dict[str, torch.nn.Module]:
    return {name: transformers.AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True).eval()
            for name, out in exports.items()}


@pytest.mark.parametrize("kind", KINDS)
def test_loads_as_the_expected_class(kind: str, exports: dict[str, Path], hf_models: dict) -> None:
    assert type(hf_models[kind]).__name__ == KINDS[kind][1]
    shipped = sorted(p.name for p in exports[kind].glob("*.py"))
    if KINDS[kind][1] == "SmallCodeForCausalLM":
        assert shipped == sorted(REMOTE_FILES)
        for name in shipped:  # the files users read are the package's, byte for byte
            assert (exports[kind] / name).read_bytes() == (REMOTE_DIR / name).read_bytes()
    else:
        assert shipped == []


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("T", [7, 3 * WINDOW + 5])  # shorter than the window and several windows long
def test_logits_match_ours(kind: str, T: int, checkpoints: dict, hf_models: dict) -> None:
    from smallcode.model.checkpoint import Checkpoint

    ours = Checkpoint.open(checkpoints[kind]).load_model().eval()
    ids = torch.randint(0, 512, (2, T))
    with torch.no_grad():
        torch.testing.assert_close(hf_models[kind](ids).logits, ours(ids).logits, atol=1e-5, rtol=1e-5)


def test_tied_embeddings_and_wide_heads(tmp_path: Path, tiny_tokenizer_dir: Path) -> None:
    model = make_model(tie_embeddings=True, head_dim=32, n_global=3)
    ckpt = save_checkpoint(model, tmp_path / "ck", tokenizer_file=tiny_tokenizer_dir / "tokenizer.json")
    hf = transformers.AutoModelForCausalLM.from_pretrained(export_hf(ckpt, tmp_path / "hf"), trust_remote_code=True)
    assert hf.lm_head.weight.data_ptr() == hf.embed.weight.data_ptr()  # tied again on load
    ids = torch.randint(0, 512, (1, 2 * WINDOW + 3))
    with torch.no_grad():
        torch.testing.assert_close(hf(ids).logits, model(ids).logits, atol=1e-5, rtol=1e-5)


def _until_eos(ids: list[int], eos: int) -> list[int]:
    return ids[:ids.index(eos) + 1] if eos in ids else ids


def _as_generated(completion: Completion, eos: int) -> list[int]:
    """The engine leaves end-of-text out of its tokens; ``generate`` keeps it (and pads after it)."""
    return completion.token_ids + ([eos] if completion.finish_reason == "eos" else [])


@pytest.mark.parametrize("kind", KINDS)
def test_greedy_generate_matches_the_engine(kind: str, checkpoints: dict, exports: dict, hf_models: dict) -> None:
    max_new = 2 * WINDOW + 8  # prompt and generation together run several windows past the start
    prompts = ["import json\n", "def dumps(obj, *, skipkeys=False, ensure_ascii=True, indent=None):\n    "]
    engine = Engine.from_checkpoint(checkpoints[kind])
    ours = engine.generate(prompts, SamplingParams(max_tokens=max_new))
    tok = transformers.AutoTokenizer.from_pretrained(exports[kind], trust_remote_code=True)
    tok.padding_side = "left"  # rows of different lengths in one batch
    batch = tok(prompts, return_tensors="pt", padding=True)
    assert batch["attention_mask"].min() == 0  # the batch really is padded
    out = hf_models[kind].generate(**batch, max_new_tokens=max_new, do_sample=False,
                                   return_dict_in_generate=True)
    eot = engine.tokenizer.eot_id
    for row, completion in zip(out.sequences[:, batch["input_ids"].shape[1]:].tolist(), ours, strict=True):
        assert _until_eos(row, eot) == _as_generated(completion, eot)
    if KINDS[kind][1] == "SmallCodeForCausalLM":
        # one row alone, no padding: the cache ends holding the globals and the latest window - 1 keys
        one = tok(prompts[1], return_tensors="pt")
        out = hf_models[kind].generate(**one, max_new_tokens=max_new, do_sample=False, return_dict_in_generate=True)
        assert _until_eos(out.sequences[0, one["input_ids"].shape[1]:].tolist(), eot) == _as_generated(ours[1], eot)
        cfg = hf_models[kind].config
        assert [layer.keys.shape[-2] for layer in out.cache.layers] == [cfg.n_global + cfg.window - 1] * cfg.n_layers


@pytest.mark.parametrize("kind", ["moe-global", "dense-no-global"])
def test_tokenizer_gives_our_ids(kind: str, exports: dict, tokenizer: CodeTokenizer) -> None:
    tok = transformers.AutoTokenizer.from_pretrained(exports[kind], trust_remote_code=True)
    assert tok(CODE)["input_ids"] == tokenizer.encode(CODE)
    # every special token is one id, the same as ours, and known as special (never split, skippable)
    for name, tid in tokenizer.special_ids.items():
        assert tok.convert_tokens_to_ids(name) == tid and name in tok.all_special_tokens, name
    assert tok.eos_token_id == tokenizer.eot_id and tok.pad_token_id == tokenizer.pad_id
    prefix, suffix = "def load(path):\n    with open(path) as f:\n", "\n    return data\n"
    fim = tok(f"<|fim_prefix|>{prefix}<|fim_suffix|>{suffix}<|fim_middle|>")["input_ids"]
    assert fim == tokenizer.fim_prompt(prefix, suffix)
    if getattr(tokenizer, "file_sep_id", None) is not None:  # a tokenizer with <|file_sep|>: files as context
        files = [("util.py", "def helper():\n    return 1\n")]
        text = f"<|file_sep|>util.py\n{files[0][1]}<|fim_prefix|>{prefix}<|fim_suffix|>{suffix}<|fim_middle|>"
        assert tok(text)["input_ids"] == tokenizer.fim_prompt(prefix, suffix, files=files)
    messages = [{"role": "system", "content": "You write Python."},
                {"role": "user", "content": "Read a JSON file."}]
    chat = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)
    assert chat == tokenizer.chat_ids(messages, add_generation_prompt=True)


@pytest.mark.parametrize("kind", ["moe-global", "moe-no-global"])  # our safetensors writer; save_pretrained
def test_the_exports_files_are_readable_by_others(kind: str, exports: dict[str, Path]) -> None:
    files = [f for f in exports[kind].iterdir() if f.is_file()]
    assert any(f.suffix == ".safetensors" for f in files)
    for f in files:  # the test run's umask (usually 022) keeps what the group and the others may read
        assert f.stat().st_mode & 0o044 == 0o044 & ~umask(), f.name


def test_cli_writes_the_directory_and_refuses_bad_input(checkpoints: dict, tmp_path: Path, capsys) -> None:
    ckpt, out = checkpoints["dense-global"], tmp_path / "out"
    assert cli_main(["export", "hf", str(ckpt), str(out)]) == 0
    assert "SmallCodeForCausalLM" in capsys.readouterr().out
    assert (out / "config.json").is_file() and (out / "model.safetensors").is_file()
    assert transformers.AutoConfig.from_pretrained(out, trust_remote_code=True).n_global == 2

    assert cli_main(["export", "hf", str(ckpt), str(out)]) == 1  # OUT exists and is not empty
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "not empty" in err and "--force" in err and "Traceback" not in err
    (out / "stale").write_text("left from an earlier export")
    assert cli_main(["export", "hf", str(ckpt), str(out), "--force"]) == 0
    assert not (out / "stale").exists()  # replaced, not merged

    for bad in (tmp_path / "missing", out):  # nothing there; a Hugging Face directory, not a checkpoint
        assert cli_main(["export", "hf", str(bad), str(tmp_path / "other")]) == 1
        err = capsys.readouterr().err
        assert "not a smallcode checkpoint" in err and "Traceback" not in err
    assert not (tmp_path / "other").exists()
    assert cli_main(["export", "hf", str(ckpt), str(ckpt), "--force"]) == 1  # never over the checkpoint
    assert "checkpoint itself" in capsys.readouterr().err and (ckpt / "config.json").is_file()


def test_a_corrupt_config_is_named_with_what_is_wrong(checkpoints: dict, tmp_path: Path, capsys) -> None:
    import json
    import shutil

    ckpt = shutil.copytree(checkpoints["dense-global"], tmp_path / "ckpt")
    good = json.loads((ckpt / "config.json").read_text())
    cases = [("{\"format_version\": 1, \"mod", "config.json: not valid JSON"),
             (json.dumps({"format_version": 1}), "config.json: neither a smallcode checkpoint config nor a Hugging "
                                                  "Face config (no model, model_type; "),
             (json.dumps([1, 2]), "a JSON list, not an object"),
             (json.dumps({**good, "model": {**good["model"], "n_headz": 3}}),
              "invalid model config (ModelConfig: unknown field(s) ['n_headz']")]
    for text, problem in cases:
        (ckpt / "config.json").write_text(text)
        assert cli_main(["export", "hf", str(ckpt), str(tmp_path / "out")]) == 1
        err = capsys.readouterr().err
        assert err.startswith("error: not a smallcode checkpoint: ") and problem in err, err
        assert err.count("\n") == 1 and not (tmp_path / "out").exists()


def test_our_loaders_run_an_export_of_ours_and_no_other_code(checkpoints: dict, exports: dict,
                                                            tmp_path: Path) -> None:
    """The server and the eval's Hugging Face backend load a global-token export (its code is ours,
    byte for byte) and answer as our engine does; the same directory with its code changed is refused."""
    import shutil

    from smallcode.backends.choose import open_backend
    from smallcode.export.hf import trusted_remote_code
    from smallcode.runtime.hf import open_hf

    kind = "moe-global"
    prompt = "def dumps(obj, *, skipkeys=False):\n    "
    ours = Engine.from_checkpoint(checkpoints[kind]).generate(prompt, SamplingParams(max_tokens=12))[0].text
    assert trusted_remote_code(exports[kind]) and not trusted_remote_code(exports["moe-no-global"])
    backend = open_backend(exports[kind], kinds={"huggingface"}, device="cpu")
    assert backend.generate([prompt], 1, 0.0, 1.0, 12, [])[0][0] == ours
    scheduler, fmt = open_hf(exports[kind])
    try:
        events = list(scheduler.submit(fmt.encode(prompt), SamplingParams(max_tokens=12, temperature=0)))
        assert "".join(e.text for e in events) == ours
    finally:
        scheduler.close()

    changed = tmp_path / "changed"
    shutil.copytree(exports[kind], changed)
    with open(changed / "modeling_smallcode.py", "a") as f:
        f.write("\nprint('this must never run')\n")
    assert not trusted_remote_code(changed)
    with pytest.raises(ValueError, match="trust_remote_code"):
        open_hf(changed)
