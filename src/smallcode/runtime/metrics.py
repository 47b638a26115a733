"""Prometheus metrics of the serving loop, in a registry of their own.

``Metrics`` owns prometheus-client objects registered in the ``CollectorRegistry`` it is given (a
fresh one by default, so two schedulers in one process, or two tests, never share counters):
requests by outcome, prompt and completion tokens, time to first token and per-token latency
histograms, queue depth, running batch size, prompt-cache hits, misses and reused tokens,
cancellations, the model work done (prefill pieces, decode steps), and speculative decoding's
proposed and accepted tokens. ``render()`` is the text a
``GET /metrics`` route returns. The scheduler updates these; nothing here knows HTTP.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# Latency buckets in seconds: from a cached keystroke (milliseconds) to a long prompt on a CPU.
_TTFT_BUCKETS = (0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_TOKEN_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0)

OUTCOMES = ("stop", "length", "eos", "cancelled", "timeout", "error", "rejected")
"""Values of the ``outcome`` label of ``smallcode_requests_total``."""


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.requests = Counter("smallcode_requests", "Requests finished, by outcome (finish reason, "
                                "error, or rejected because the queue was full).", ["outcome"], registry=r)
        self.prompt_tokens = Counter("smallcode_prompt_tokens", "Prompt tokens of started requests.", registry=r)
        self.completion_tokens = Counter("smallcode_completion_tokens", "Tokens generated.", registry=r)
        self.time_to_first_token = Histogram(
            "smallcode_time_to_first_token_seconds", "From submission to the first generated token.",
            buckets=_TTFT_BUCKETS, registry=r)
        self.time_per_token = Histogram(
            "smallcode_time_per_output_token_seconds", "Between consecutive generated tokens of a request.",
            buckets=_TOKEN_BUCKETS, registry=r)
        self.queue_depth = Gauge("smallcode_queue_depth", "Requests waiting for a row.", registry=r)
        self.batch_size = Gauge("smallcode_running_rows", "Requests decoding or prefilling.", registry=r)
        self.cache_hits = Counter("smallcode_prompt_cache_hits", "Requests that reused a cached prompt prefix.",
                                  registry=r)
        self.cache_misses = Counter("smallcode_prompt_cache_misses", "Requests prefilled from scratch.",
                                    registry=r)
        self.cached_tokens = Counter("smallcode_prompt_cache_reused_tokens",
                                     "Prompt tokens taken from the prompt cache instead of being prefilled.",
                                     registry=r)
        self.cache_bytes = Gauge("smallcode_prompt_cache_bytes", "Memory held by the prompt cache.", registry=r)
        self.cancellations = Counter("smallcode_cancellations", "Requests cancelled by their client.", registry=r)
        self.prefill_steps = Counter("smallcode_prefill_steps", "Prompt pieces fed to the model.", registry=r)
        self.decode_steps = Counter("smallcode_decode_steps", "Batched decode steps run (speculative ones "
                                    "included).", registry=r)
        self.spec_proposed = Counter("smallcode_speculative_proposed_tokens",
                                     "Tokens proposed by speculative decoding (prompt lookup or a draft model).",
                                     registry=r)
        self.spec_accepted = Counter("smallcode_speculative_accepted_tokens",
                                     "Proposed tokens the model accepted.", registry=r)
        for outcome in OUTCOMES:  # present from the start, so rates are defined before the first request
            self.requests.labels(outcome=outcome)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric here."""
        return generate_latest(self.registry)

    def value(self, name: str, **labels: str) -> float:
        """One sample's current value (0 when absent), e.g. ``value("smallcode_decode_steps_total")``."""
        got = self.registry.get_sample_value(name, labels or None)
        return 0.0 if got is None else got
