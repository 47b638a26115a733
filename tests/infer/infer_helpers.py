"""A tiny random model sized to the test tokenizer (vocabulary 512)."""

from __future__ import annotations

import torch

from smallcode.model import ModelConfig, SmallCodeLM


def make_model(**overrides: object) -> SmallCodeLM:
    torch.manual_seed(0)
    model = SmallCodeLM(ModelConfig.preset("tiny", **{"vocab_size": 512, **overrides}))
    with torch.no_grad():  # larger weights than the init so that random models have peaked logits
        for p in model.parameters():
            if p.dim() > 1:
                p.mul_(4)
    return model.eval()
