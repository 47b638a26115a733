"""What both export test files build: the shared tiny model (peaked logits) with a small window."""

from __future__ import annotations

import factories
from smallcode.model import SmallCodeLM

WINDOW = 16


def make_model(**overrides: object) -> SmallCodeLM:
    return factories.make_model(window=WINDOW, **overrides)
