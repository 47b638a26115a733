"""The decode modules the engine swaps in change no result: the compiled few-row kernels, and where
they are not built, column-major weights and the prepacked output head; the one-token expert path;
and a swapped model keeps its parameters, state dict, hooks and, with gradients on, its training path."""

from __future__ import annotations

import copy
import pickle
from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F

from factories import make_model  # type: ignore[import-not-found]
from smallcode.model import ModelConfig, SmallCodeLM
from smallcode.model.checkpoint import Checkpoint, save_checkpoint
from smallcode.model.moe import MoE
from smallcode.runtime import Engine, cpu_decode
from smallcode.runtime.cpu_decode import (
    DecodeExperts,
    DecodeHead,
    DecodeLinear,
    DecodeMoE,
    PackedLinear,
    prepare_for_decoding,
)
from smallcode.tokenizer import CodeTokenizer


def decode_logits(model: SmallCodeLM, ids: torch.Tensor, prefill: int) -> torch.Tensor:
    cache = model.new_cache(ids.shape[0])
    outs = [model(ids[:, :prefill], cache).logits]
    for t in range(prefill, ids.shape[1]):
        outs.append(model(ids[:, t:t + 1], cache).logits)
    return torch.cat(outs, dim=1)


@pytest.fixture
def no_kernel(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The switch that turns the compiled kernels off, as a user sets it."""
    monkeypatch.setenv("SMALLCODE_CPU_KERNELS", "0")
    cpu_decode.forget_kernel()
    yield
    cpu_decode.forget_kernel()


def test_column_major_weights_keep_values_state_dict_and_logits(tmp_path, no_kernel) -> None:
    torch.manual_seed(0)
    model = SmallCodeLM(ModelConfig.preset("tiny")).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ids = torch.randint(0, 256, (3, 30))
    with torch.inference_mode():
        ref = decode_logits(model, ids, 6)
    prepare_for_decoding(model)
    w = model.blocks[0].ffn.experts.w_gate_up
    assert w.stride(-2) == 1 and w.transpose(-2, -1).is_contiguous()  # (E, in, out) contiguous underneath
    assert model.lm_head.weight.stride() == (1, model.config.vocab_size)
    after = model.state_dict()
    assert after.keys() == before.keys()
    assert all(after[k].shape == before[k].shape and torch.equal(after[k], before[k]) for k in before)
    with torch.inference_mode():
        torch.testing.assert_close(decode_logits(model, ids, 6), ref, atol=1e-5, rtol=1e-5)
        full = model(ids).logits  # the training-shaped forward works on the new layout too
    torch.testing.assert_close(full, ref, atol=1e-5, rtol=1e-5)
    reloaded = Checkpoint.open(save_checkpoint(model, tmp_path / "ck")).load_model()
    assert all(torch.equal(reloaded.state_dict()[k], before[k]) for k in before)


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="needs oneDNN")
def test_packed_head_matches_the_head_and_follows_weight_updates(no_kernel) -> None:
    torch.manual_seed(1)
    model = prepare_for_decoding(SmallCodeLM(ModelConfig.preset("tiny")).eval())
    head = model.lm_head
    assert isinstance(head, DecodeHead)
    x = torch.randn(5, 64)
    with torch.inference_mode():
        packed = PackedLinear(head.weight)
        torch.testing.assert_close(packed(x), F.linear(x, head.weight), atol=1e-5, rtol=1e-5)
        ids = torch.randint(0, 256, (4, 12))
        cache = model.new_cache(4)
        model(ids[:, :-2], cache)
        model(ids[:, -2:-1], cache)  # a batched decode step packs the head
        assert head.packed is not None and head.packed.current(head.weight)
    with torch.no_grad():
        head.weight.mul_(-2.0)  # an in-place update, as an optimizer step makes
    assert not head.packed.current(head.weight)
    with torch.inference_mode():
        got = model(ids[:, -1:], cache).logits[:, -1]
        want = model(ids).logits[:, -1]
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    # the packed copy has no storage: copies of the model drop it and repack when they decode
    assert copy.deepcopy(model).lm_head.packed is None
    assert pickle.loads(pickle.dumps(model)).lm_head.packed is None


@pytest.mark.skipif(not cpu_decode.available(), reason="no C compiler: the few-row kernel is not built")
@pytest.mark.parametrize(("n_global", "window", "B"), [(0, 16, 1), (2, 8, 5), (4, 64, 3)])
def test_kernel_decoding_equals_the_full_forward_and_the_torch_path(n_global: int, window: int, B: int) -> None:
    torch.manual_seed(2)
    reference = SmallCodeLM(ModelConfig.preset("tiny", n_global=n_global, window=window)).eval()
    ids = torch.randint(0, 256, (B, 40))
    with torch.no_grad():
        full = reference(ids).logits
    with torch.inference_mode():
        plain = decode_logits(reference, ids, 3)  # the reference model's own cached path
    model = prepare_for_decoding(copy.deepcopy(reference))
    assert all(p.is_contiguous() for p in model.parameters())  # the kernel reads the usual row-major layout
    with torch.inference_mode():
        kernel = decode_logits(model, ids, 3)
    torch.testing.assert_close(kernel, full, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(kernel, plain, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kernels", ["built", "off"])
@pytest.mark.parametrize(("n_experts", "B"), [(4, 1), (4, 6), (1, 3)])
def test_swapped_decoding_equals_the_reference_full_forward(kernels: str, n_experts: int, B: int,
                                                            request: pytest.FixtureRequest) -> None:
    if kernels == "off":
        request.getfixturevalue("no_kernel")
    elif not cpu_decode.available():
        pytest.skip("no C compiler: the few-row kernel is not built")
    torch.manual_seed(3)
    reference = SmallCodeLM(ModelConfig.preset("tiny", n_experts=n_experts, top_k=min(2, n_experts))).eval()
    ids = torch.randint(0, 256, (B, 24))
    with torch.no_grad():
        full = reference(ids).logits
    model = prepare_for_decoding(copy.deepcopy(reference))
    with torch.inference_mode():
        torch.testing.assert_close(decode_logits(model, ids, 5), full, atol=1e-5, rtol=1e-5)


def test_the_swap_keeps_parameters_state_dict_and_hooks_and_is_idempotent() -> None:
    torch.manual_seed(4)
    model = SmallCodeLM(ModelConfig.preset("tiny", tie_embeddings=True)).eval()
    params = dict(model.named_parameters())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    seen: list[torch.Size] = []
    model.blocks[0].attn.wqkv.register_forward_hook(lambda m, args, out: seen.append(out.shape))
    assert prepare_for_decoding(model) is model
    prepare_for_decoding(model)
    block = model.blocks[0]
    assert type(block.attn.wqkv) is DecodeLinear and type(block.attn.wo) is DecodeLinear
    assert type(block.ffn) is DecodeMoE and type(block.ffn.experts) is DecodeExperts
    assert type(model.lm_head) is DecodeHead and model.lm_head.weight is model.embed.weight
    assert all(p is params[name] for name, p in model.named_parameters())
    after = model.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)
    with torch.inference_mode():
        model(torch.randint(0, 256, (2, 3)), model.new_cache(2))
    assert seen == [torch.Size([2, 3, block.attn.wqkv.out_features])]  # a hook on a swapped module still fires


def test_a_module_replaced_by_something_else_is_left_alone() -> None:
    class Quantised(MoE):
        pass

    model = SmallCodeLM(ModelConfig.preset("tiny"))
    model.blocks[0].ffn.__class__ = Quantised
    prepare_for_decoding(model)
    assert type(model.blocks[0].ffn) is Quantised and type(model.blocks[1].ffn) is DecodeMoE


def test_with_gradients_a_swapped_model_trains_as_the_reference() -> None:
    torch.manual_seed(5)
    reference = SmallCodeLM(ModelConfig.preset("tiny"))
    model = prepare_for_decoding(copy.deepcopy(reference))
    ids = torch.randint(0, 256, (2, 10))
    ref, got = reference(ids), model(ids)
    assert torch.equal(got.logits, ref.logits) and torch.equal(got.balance_loss, ref.balance_loss)
    assert torch.equal(got.z_loss, ref.z_loss) and torch.equal(got.expert_load, ref.expert_load)
    (ref.logits.square().mean() + ref.balance_loss).backward()
    (got.logits.square().mean() + got.balance_loss).backward()
    for (name, p), q in zip(reference.named_parameters(), model.parameters(), strict=True):
        assert torch.equal(q.grad, p.grad), name


def test_an_engines_model_saves_a_checkpoint_a_plain_model_loads(infer_tokenizer: CodeTokenizer, tmp_path) -> None:
    model = make_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    engine = Engine(model, infer_tokenizer)
    assert type(engine.model.lm_head) is DecodeHead
    reloaded = Checkpoint.open(save_checkpoint(engine.model, tmp_path / "ck")).load_model()
    assert type(reloaded.lm_head) is torch.nn.Linear and type(reloaded.blocks[0].ffn) is MoE
    assert reloaded.state_dict().keys() == before.keys()
    assert all(torch.equal(reloaded.state_dict()[k], before[k]) for k in before)


def make_moe(n_experts: int, top_k: int) -> DecodeMoE:
    moe = MoE(ModelConfig.preset("tiny", n_experts=n_experts, top_k=top_k))
    for p in moe.parameters():
        torch.nn.init.normal_(p, std=0.2)
    moe.__class__, moe.experts.__class__ = DecodeMoE, DecodeExperts
    return moe  # type: ignore[return-value]


@pytest.mark.parametrize(("E", "k"), [(4, 2), (8, 2), (4, 1), (4, 4)])
def test_one_token_path_matches_sorted_dispatch(E: int, k: int, no_kernel) -> None:
    """Decoding one sequence skips the sort; it must compute what the sorted dispatch computes."""
    moe = make_moe(E, k)
    for _ in range(5):
        x = torch.randn(1, 1, 64)
        with torch.no_grad():  # grad off but not inference mode: the sorted dispatch, with its stats
            sorted_out, stats = moe(x)
        with torch.inference_mode():
            fast_out, no_stats = moe(x)
        assert stats is not None and no_stats is None
        torch.testing.assert_close(fast_out, sorted_out, atol=1e-5, rtol=1e-5)
        x_D = x.view(64)
        probs = (moe.router.weight @ x_D).softmax(-1)
        top = probs.topk(k)
        want = sum(w / top.values.sum() * moe.experts.expert(x_D[None], e)[0]
                   for w, e in zip(top.values, top.indices.tolist(), strict=True))
        torch.testing.assert_close(fast_out.view(64), want, atol=1e-5, rtol=1e-5)


@pytest.mark.skipif(not cpu_decode.available(), reason="no C compiler: the few-row kernel is not built")
@pytest.mark.parametrize(("E", "k", "N"), [(8, 2, 1), (8, 2, 8), (4, 1, 5), (4, 4, 3)])
def test_compiled_decode_path_matches_sorted_dispatch(E: int, k: int, N: int) -> None:
    """A few tokens in inference mode on CPU go through the compiled kernel, routing included."""
    moe = make_moe(E, k)
    x = torch.randn(N, 1, 64)
    with torch.no_grad():
        sorted_out, _ = moe(x)
    with torch.inference_mode():
        fast_out, _ = moe(x)
    torch.testing.assert_close(fast_out, sorted_out, atol=1e-5, rtol=1e-5)
