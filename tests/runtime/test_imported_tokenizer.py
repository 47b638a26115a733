"""An imported model keeps its own tokenizer everywhere: a smallcode checkpoint holding a Hugging Face
tokenizer's files (as ``smallcode import hf`` writes one, built here by hand from a tiny model) is served
by our engine with token ids equal to ``AutoTokenizer``'s and the family's layouts and stops; its files
survive saving, upcycling and the ONNX export (data preparation: tests/data/test_foreign_shards.py); and
a Hugging Face directory of an importable family opens on our engine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import PreTrainedTokenizerFast

from factories import make_model
from hf_tokenizers import FAMILY_SPECIALS, byte_level, codellama_like, tiny_llama_dir  # type: ignore[import-not-found]
from smallcode.model.checkpoint import HF_TOKENIZER_FILES, Checkpoint, CheckpointError, save_checkpoint
from smallcode.model.transformer import SmallCodeLM
from smallcode.runtime import load
from smallcode.runtime.engine import Engine
from smallcode.runtime.formats import FormatError, HFTokenizer
from smallcode.runtime.hf import HFStep
from smallcode.runtime.sampling import SamplingParams

FAMILIES = ("qwen2.5-coder", "starcoder", "deepseek-coder", "codellama", "plain")
PREFIX, SUFFIX = "def add(a, b):\n    ", "\n    return c\n"


def hf_tokenizer(family: str) -> PreTrainedTokenizerFast:
    """The family's test tokenizer; DeepSeek-Coder's with the <pad> its real vocabulary has."""
    if family == "codellama":
        return codellama_like()
    spec = dict(FAMILY_SPECIALS[family])
    if family == "deepseek-coder":
        spec["specials"] = [*spec["specials"], "<pad>"]
    return byte_level(**spec)


def imported(root: Path, family: str, generation_eos: list[int] | None = None,
             **model: object) -> tuple[Path, PreTrainedTokenizerFast]:
    """An imported checkpoint by hand: a tiny full-attention model whose vocabulary is the tokenizer's,
    our files, the tokenizer's files unchanged, ``tokenizer_kind`` recorded."""
    tok = hf_tokenizer(family)
    tok_dir = root / f"{family}-tokenizer"
    tok.save_pretrained(tok_dir)
    if generation_eos is not None:
        (tok_dir / "generation_config.json").write_text(json.dumps({"eos_token_id": generation_eos}))
    model = make_model(**{"vocab_size": len(tok), "window": 512, "max_seq_len": 512, "n_global": 0, **model})
    ckpt = save_checkpoint(model, root / family, tokenizer_file=tok_dir / "tokenizer.json",
                           extra={"tokenizer_kind": "huggingface"})
    return ckpt, tok


def fim_text(family: str, prefix: str, suffix: str) -> str:
    """The family's FIM prompt as its model card writes it."""
    return {
        "qwen2.5-coder": f"<|fim_prefix|>{prefix}<|fim_suffix|>{suffix}<|fim_middle|>",
        "starcoder": f"<fim_prefix>{prefix}<fim_suffix>{suffix}<fim_middle>",
        "deepseek-coder": f"<｜fim▁begin｜>{prefix}<｜fim▁hole｜>{suffix}<｜fim▁end｜>",
    }[family]


@pytest.mark.parametrize("family", FAMILIES)
def test_engine_token_ids_equal_autotokenizers(family: str, tmp_path: Path) -> None:
    ckpt, hf = imported(tmp_path, family)
    engine = Engine.from_checkpoint(ckpt)
    assert isinstance(engine.model, SmallCodeLM)  # our model step: batching, prompt reuse
    assert isinstance(engine.tokenizer, HFTokenizer) and engine.prompt_format.name == family
    text = "import os\nprint(os.sep)  <|endoftext|>"
    assert engine.tokenizer.encode(text) == hf.encode(text)  # transformers' defaults: BOS where the family has one
    if family in ("qwen2.5-coder", "starcoder", "deepseek-coder"):
        assert engine.prompt_format.fim(PREFIX, SUFFIX) == hf.encode(fim_text(family, PREFIX, SUFFIX))
    if hf.chat_template:
        messages = [{"role": "user", "content": "add two numbers"}]
        want = hf.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        assert engine.prompt_format.chat(messages) == list(getattr(want, "input_ids", want))
    out = engine.generate(PREFIX, SamplingParams(max_tokens=4, temperature=0.0, ignore_eos=True))[0]
    assert len(out.token_ids) == 4 and out.text == engine.tokenizer.decode(out.token_ids)


def force_next_token(engine: Engine, token: int) -> None:
    """Make the model's every next-token choice ``token`` (its head's output replaced)."""
    def hook(_module: torch.nn.Module, _inputs: object, logits: torch.Tensor) -> torch.Tensor:
        forced = torch.full_like(logits, -10.0)
        forced[..., token] = 10.0
        return forced

    engine.model.lm_head.register_forward_hook(hook)  # type: ignore[union-attr]


@pytest.mark.parametrize(("token", "stops"), [("<|endoftext|>", True), ("<|im_end|>", True), ("<|file_sep|>", True),
                                              ("Z", True), ("Q", False)])
def test_generation_stops_at_the_familys_end_tokens(token: str, stops: bool, tmp_path: Path) -> None:
    hf = hf_tokenizer("qwen2.5-coder")
    z = hf.convert_tokens_to_ids("Z")  # named an end token by the generation config below
    ckpt, hf = imported(tmp_path, "qwen2.5-coder", generation_eos=[hf.eos_token_id, z])
    engine = Engine.from_checkpoint(ckpt)
    force_next_token(engine, hf.convert_tokens_to_ids(token))
    out = engine.generate(PREFIX, SamplingParams(max_tokens=5, temperature=0.0))[0]
    assert (out.finish_reason, len(out.token_ids)) == (("eos", 0) if stops else ("length", 5))


def test_fim_on_a_model_without_fim_tokens_is_one_line_and_a_400(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from smallcode.runtime.scheduler import Scheduler
    from smallcode.serve.app import create_app

    ckpt, _ = imported(tmp_path, "plain")
    engine = Engine.from_checkpoint(ckpt)
    with pytest.raises(FormatError, match="no fill-in-the-middle tokens") as info:
        engine.complete(PREFIX, SUFFIX)
    assert "\n" not in str(info.value)
    scheduler = Scheduler(engine)
    try:
        client = TestClient(create_app(scheduler, engine.prompt_format, model_name="plain"))
        r = client.post("/v1/completions", json={"model": "plain", "prompt": PREFIX, "suffix": SUFFIX,
                                                 "max_tokens": 2})
        assert r.status_code == 400 and "no fill-in-the-middle tokens" in r.text
        r = client.post("/v1/completions", json={"model": "plain", "prompt": PREFIX, "max_tokens": 2})
        assert r.status_code == 200, r.text
    finally:
        scheduler.close()


def test_saving_upcycling_and_the_onnx_export_keep_the_tokenizer_files(tmp_path: Path) -> None:
    from smallcode.export.onnx import export_onnx
    from smallcode.runtime.onnx import OnnxModel, load_export_tokenizer
    from smallcode.train.upcycle import upcycle_checkpoint

    ckpt, hf = imported(tmp_path, "qwen2.5-coder", generation_eos=[0], n_experts=1, top_k=1)
    sidecars = {n: (ckpt / n).read_bytes() for n in HF_TOKENIZER_FILES if (ckpt / n).is_file()}
    assert set(sidecars) == {"tokenizer_config.json", "generation_config.json", "chat_template.jinja"}
    parent = Checkpoint.open(ckpt)
    again = save_checkpoint(parent.load_model(), tmp_path / "again", tokenizer_file=parent.tokenizer_file)
    moe = upcycle_checkpoint(ckpt, tmp_path / "moe", n_experts=2, top_k=1)
    for directory in (again, moe):
        assert {n: (directory / n).read_bytes() for n in sidecars} == sidecars
        assert not Checkpoint.open(directory).load_tokenizer().native
    export = export_onnx(ckpt, tmp_path / "onnx")
    assert {n: (export / n).read_bytes() for n in sidecars if n != "generation_config.json"} == \
        {n: v for n, v in sidecars.items() if n != "generation_config.json"}
    tokenizer = load_export_tokenizer(export, OnnxModel(export).tokenizer_hash)
    assert isinstance(tokenizer, HFTokenizer) and tokenizer.encode(PREFIX) == hf.encode(PREFIX)
    assert tokenizer.format.fim(PREFIX, SUFFIX) == hf.encode(fim_text("qwen2.5-coder", PREFIX, SUFFIX))


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random transformers Llama with a StarCoder-style tokenizer: a directory a user brings."""
    return tiny_llama_dir(tmp_path_factory.mktemp("hf-llama"), hf_tokenizer("starcoder"))


def test_open_engine_imports_an_importable_hugging_face_directory(llama_dir: Path) -> None:
    from transformers import GenerationConfig, LlamaForCausalLM

    hf = hf_tokenizer("starcoder")
    assert load.runtime_of(llama_dir) == "torch"  # our engine opens it
    engine = load.open_engine(llama_dir)
    assert isinstance(engine.model, SmallCodeLM) and isinstance(engine.tokenizer, HFTokenizer)
    fim = engine.prompt_format.fim(PREFIX, SUFFIX)
    assert fim == hf.encode(fim_text("starcoder", PREFIX, SUFFIX))
    got = engine.generate_ids([fim], SamplingParams(max_tokens=16, temperature=0.0, ignore_eos=True))[0]
    reference = LlamaForCausalLM.from_pretrained(llama_dir, dtype=torch.float32)
    out = reference.generate(torch.tensor([fim]), attention_mask=torch.ones(1, len(fim), dtype=torch.long),
                             generation_config=GenerationConfig(max_new_tokens=16, do_sample=False,
                                                                eos_token_id=None, pad_token_id=0))
    assert got.token_ids == out[0, len(fim):].tolist()
    assert isinstance(load.open_engine(llama_dir, runtime="hf").model, HFStep)  # transformers, when asked


def test_serve_runs_an_importable_directory_on_our_batching_scheduler(llama_dir: Path, tmp_path: Path) -> None:
    from prometheus_client import CollectorRegistry

    from smallcode.cli.serve import load as serve_load

    scheduler, fmt = serve_load(llama_dir, device="cpu", max_batch=4, max_queue=4, registry=CollectorRegistry())
    try:
        assert scheduler.max_batch == 4 and isinstance(scheduler.engine.model, SmallCodeLM)
        assert fmt.name == "starcoder"
    finally:
        scheduler.close()
    scheduler, _ = serve_load(llama_dir, device="cpu", max_batch=4, max_queue=4, registry=CollectorRegistry(),
                              runtime="hf")
    try:
        assert scheduler.max_batch == 1  # transformers: one request at a time
    finally:
        scheduler.close()
    other = tmp_path / "gpt2"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]}))
    assert load.runtime_of(other) == "hf"  # a family smallcode does not import keeps transformers


def test_an_engine_refuses_the_foreign_tokenizer_in_our_layouts(tmp_path: Path) -> None:
    ckpt, _ = imported(tmp_path, "qwen2.5-coder")
    checkpoint = Checkpoint.open(ckpt)
    with pytest.raises(TypeError, match="load_hf_tokenizer"):
        Engine(checkpoint.load_model(), checkpoint.load_tokenizer())


def test_a_checkpoints_foreign_tokenizer_is_checked_against_its_recorded_hash(tmp_path: Path) -> None:
    ckpt, _ = imported(tmp_path, "starcoder")
    meta = json.loads((ckpt / "config.json").read_text())
    meta["tokenizer_hash"] = "0" * 64
    (ckpt / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="differs from the"):
        Engine.from_checkpoint(ckpt)


def test_the_lsp_and_agent_transport_opens_an_imported_checkpoint_in_its_familys_layout(tmp_path: Path) -> None:
    from smallcode.client.base import Chat, Fim
    from smallcode.client.local import open_local

    ckpt, hf = imported(tmp_path, "qwen2.5-coder")
    client = open_local(ckpt)  # what `smallcode lsp --model` and `smallcode agent --model` open
    try:
        assert isinstance(client.engine.model, SmallCodeLM)
        assert client.encode(Fim(PREFIX, SUFFIX)) == hf.encode(fim_text("qwen2.5-coder", PREFIX, SUFFIX))
        messages = [{"role": "user", "content": "fix it"}]
        want = hf.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        assert client.encode(Chat(messages)) == list(getattr(want, "input_ids", want))
    finally:
        client.close()


def test_smallcode_import_hf_checkpoint_serves_as_the_directory_does(llama_dir: Path, tmp_path: Path) -> None:
    from smallcode.export.hf_import import import_hf

    ckpt = import_hf(llama_dir, tmp_path / "imported", progress=False)
    engine, direct = Engine.from_checkpoint(ckpt), load.open_engine(llama_dir)
    assert isinstance(engine.tokenizer, HFTokenizer) and engine.prompt_format.name == "starcoder"
    ids = engine.prompt_format.fim(PREFIX, SUFFIX, [("a.py", "X = 1\n")])
    assert ids == direct.prompt_format.fim(PREFIX, SUFFIX, [("a.py", "X = 1\n")])
    params = SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True)
    assert engine.generate_ids([ids], params)[0].token_ids == direct.generate_ids([ids], params)[0].token_ids


def test_padded_embedding_rows_are_never_sampled(tmp_path: Path) -> None:
    """An embedding with more rows than the tokenizer has tokens (as Qwen pads its vocabulary): at a
    temperature that makes every id likely, the engine never picks one the tokenizer cannot decode."""
    n = len(hf_tokenizer("qwen2.5-coder"))
    ckpt, _ = imported(tmp_path, "qwen2.5-coder", vocab_size=n + 64)
    engine = Engine.from_checkpoint(ckpt)
    params = SamplingParams(max_tokens=200, temperature=50.0, seed=0, ignore_eos=True)
    ids = [t for c in engine.generate_ids([engine.tokenizer.encode("def f(x):")] * 2, params) for t in c.token_ids]
    assert len(ids) == 400 and max(ids) < n
