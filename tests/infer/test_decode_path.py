"""The decode-only speed-ups change no result: the compiled few-row kernels, and where they are not
built, column-major weights and the prepacked output head."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
import torch.nn.functional as F

from smallcode.model import ModelConfig, SmallCodeLM, cpu_kernels
from smallcode.model.checkpoint import Checkpoint, save_checkpoint
from smallcode.model.transformer import PackedLinear


def decode_logits(model: SmallCodeLM, ids: torch.Tensor, prefill: int) -> torch.Tensor:
    cache = model.new_cache(ids.shape[0])
    outs = [model(ids[:, :prefill], cache).logits]
    for t in range(prefill, ids.shape[1]):
        outs.append(model(ids[:, t:t + 1], cache).logits)
    return torch.cat(outs, dim=1)


def test_column_major_weights_keep_values_state_dict_and_logits(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(cpu_kernels, "_library", lambda: None)  # the layout used without a C compiler
    torch.manual_seed(0)
    model = SmallCodeLM(ModelConfig.preset("tiny")).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ids = torch.randint(0, 256, (3, 30))
    with torch.inference_mode():
        ref = decode_logits(model, ids, 6)
    model.prepare_for_decoding()
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
def test_packed_head_matches_the_head_and_follows_weight_updates(monkeypatch) -> None:
    monkeypatch.setattr(cpu_kernels, "_library", lambda: None)
    torch.manual_seed(1)
    model = SmallCodeLM(ModelConfig.preset("tiny")).eval()
    x = torch.randn(5, 64)
    with torch.inference_mode():
        packed = PackedLinear(model.lm_head.weight)
        torch.testing.assert_close(packed(x), F.linear(x, model.lm_head.weight), atol=1e-5, rtol=1e-5)
        ids = torch.randint(0, 256, (4, 12))
        cache = model.new_cache(4)
        model(ids[:, :-2], cache)
        model(ids[:, -2:-1], cache)  # a batched decode step packs the head
        assert model._packed_head is not None and model._packed_head.current(model.lm_head.weight)
    with torch.no_grad():
        model.lm_head.weight.mul_(-2.0)  # an in-place update, as an optimizer step makes
    assert not model._packed_head.current(model.lm_head.weight)
    with torch.inference_mode():
        got = model(ids[:, -1:], cache).logits[:, -1]
        want = model(ids).logits[:, -1]
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    # the packed copy has no storage: copies of the model drop it and repack when they decode
    assert copy.deepcopy(model)._packed_head is None
    assert pickle.loads(pickle.dumps(model))._packed_head is None


@pytest.mark.skipif(not cpu_kernels.available(), reason="no C compiler: the few-row kernel is not built")
@pytest.mark.parametrize(("n_global", "window", "B"), [(0, 16, 1), (2, 8, 5), (4, 64, 3)])
def test_kernel_decoding_equals_the_full_forward_and_the_torch_path(n_global: int, window: int, B: int,
                                                                    monkeypatch) -> None:
    torch.manual_seed(2)
    model = SmallCodeLM(ModelConfig.preset("tiny", n_global=n_global, window=window)).eval()
    model.prepare_for_decoding()
    assert all(p.is_contiguous() for p in model.parameters())  # the kernel reads the usual row-major layout
    ids = torch.randint(0, 256, (B, 40))
    with torch.no_grad():
        full = model(ids).logits
    with torch.inference_mode():
        kernel = decode_logits(model, ids, 3)
    monkeypatch.setattr(cpu_kernels, "_library", lambda: None)
    with torch.inference_mode():
        plain = decode_logits(model, ids, 3)
    torch.testing.assert_close(kernel, full, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(kernel, plain, atol=1e-5, rtol=1e-5)
