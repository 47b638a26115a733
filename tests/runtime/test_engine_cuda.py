"""The KV cache and the engine on a CUDA GPU (the full forward pass there runs compiled FlexAttention).

CI has no GPU, so these skip there; they ran on a lent H200.
"""

from __future__ import annotations

import pytest
import torch

from factories import make_model  # type: ignore[import-not-found]
from smallcode.model import ModelConfig, SmallCodeLM
from smallcode.runtime import Engine, SamplingParams
from smallcode.tokenizer import CodeTokenizer

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.parametrize(("n_global", "window", "T", "prefill"), [(0, 16, 12, 5), (2, 16, 90, 40), (4, 8, 70, 8)])
def test_cached_decoding_on_cuda_equals_the_full_forward(n_global: int, window: int, T: int, prefill: int) -> None:
    torch.manual_seed(0)
    model = SmallCodeLM(ModelConfig.preset("tiny", n_global=n_global, window=window)).cuda().eval()
    ids = torch.randint(0, 256, (2, T), device="cuda")
    with torch.no_grad():
        cache = model.new_cache(2)
        outs = [model(ids[:, :prefill], cache).logits]
        outs += [model(ids[:, t : t + 1], cache).logits for t in range(prefill, T)]
        full = model(ids).logits
    torch.testing.assert_close(torch.cat(outs, dim=1), full, atol=1e-4, rtol=1e-4)


def test_engine_on_cuda_matches_the_cpu_engine(infer_tokenizer: CodeTokenizer) -> None:
    prompts = ["def add(a, b):\n    return", "import json\n", "class Decoder:\n    def __init__(self"]
    params = SamplingParams(max_tokens=20)
    cpu = Engine(make_model(window=8, n_global=2), infer_tokenizer)
    gpu = Engine(make_model(window=8, n_global=2).cuda(), infer_tokenizer)
    want = [c.token_ids for c in cpu.generate(prompts, params)]
    assert [c.token_ids for c in gpu.generate(prompts, params)] == want
    assert [gpu.generate(p, params)[0].token_ids for p in prompts] == want  # batched equals one by one
