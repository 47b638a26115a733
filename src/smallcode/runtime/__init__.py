"""Generation: the engine (prefill, batched decode, streaming, FIM), sampling, and the CPU decode
modules the engine swaps into its model (``cpu_decode``)."""

from smallcode.runtime.engine import Completion, Engine
from smallcode.runtime.sampling import SamplingParams

__all__ = ["Completion", "Engine", "SamplingParams"]
