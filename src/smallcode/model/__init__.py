"""The smallcode model: a decoder-only MoE transformer with sliding-window + global-token attention.

``ModelConfig`` knows its own size; ``SmallCodeLM`` is the network; ``checkpoint`` saves and loads it.
"""

from smallcode.model.config import PRESETS, ModelConfig
from smallcode.model.transformer import LMOutput, SmallCodeLM

__all__ = ["PRESETS", "LMOutput", "ModelConfig", "SmallCodeLM"]
