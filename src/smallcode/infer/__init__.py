"""Generation: the engine (prefill, batched decode, streaming, FIM) and sampling."""

from smallcode.infer.engine import Completion, Engine
from smallcode.infer.sampling import SamplingParams

__all__ = ["Completion", "Engine", "SamplingParams"]
