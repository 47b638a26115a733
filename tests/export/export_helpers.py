"""What both export test files build: tiny models with a small window and peaked logits."""

from __future__ import annotations

import torch

from smallcode.model import ModelConfig, SmallCodeLM

WINDOW = 16


def make_model(**overrides: object) -> SmallCodeLM:
    torch.manual_seed(0)
    model = SmallCodeLM(ModelConfig.preset("tiny", vocab_size=512, window=WINDOW, **overrides))
    with torch.no_grad():  # larger weights than the init: peaked logits, so greedy choices are clear-cut
        for p in model.parameters():
            if p.dim() > 1:
                p.mul_(4)
    return model.eval()
