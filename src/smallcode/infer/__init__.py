"""Generation: the engine (prefill, batched decode, streaming, FIM), sampling, and the CPU decode
modules the engine swaps into its model (``cpu_decode``)."""

from smallcode.infer.engine import Completion, Engine
from smallcode.infer.sampling import SamplingParams

__all__ = ["Completion", "Engine", "SamplingParams"]
