"""A Hugging Face causal LM behind the server's ``Scheduler`` interface.

``open_hf(path, device=..., max_batch=..., max_queue=..., metrics=...)`` loads a transformers model
directory (``AutoModelForCausalLM`` and ``AutoTokenizer``, local files only) and returns an
``HFScheduler`` and the tokenizer's ``PromptFormat`` (``smallcode.runtime.formats.hf_prompt_format``).

``HFScheduler`` is ``smallcode.runtime.scheduler.Scheduler`` with another model step: its queue,
handles, events, cancellation, time limits, logprobs and metrics are the scheduler's own, and so are
token choice (``sampling.choose``) and stops, end-of-sequence, ``max_tokens`` and the streaming
hold-back (``Row.push``). Only the model work differs: one request at a time, its whole prompt in one
forward pass, then one token per step over transformers' key/value cache. A request's tokens are
therefore what ``model.generate`` gives for the same settings (greedy: the same ids).

Not here: batching several requests, a prompt cache across requests, or quantisation; the
smallcode engine does the first two. ``max_batch`` is accepted for the common signature and ignored.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from smallcode.runtime.engine import Engine
from smallcode.runtime.formats import HFFormat, hf_prompt_format
from smallcode.runtime.metrics import Metrics
from smallcode.runtime.sampling import choose
from smallcode.runtime.scheduler import Scheduler, _Request

# Context length assumed when a model's config does not say (transformers' own common default).
DEFAULT_CONTEXT = 2048


class _TokenizerView:
    """What ``Row.push`` and the scheduler ask of a tokenizer (``stop_ids``, ``decode``), over a
    transformers tokenizer.

    ``decode`` gives a continuation's text as it reads after the prompt: the ids are decoded after
    an anchor token whose text is then cut off, because a SentencePiece tokenizer drops the leading
    space of the first token it decodes ("▁world" alone is "world", after "a" it is " world")."""

    def __init__(self, tokenizer: Any, stop_ids: Sequence[int]) -> None:
        self.tokenizer = tokenizer
        self.stop_ids = frozenset(stop_ids)
        self._anchor = tokenizer.encode("a", add_special_tokens=False)
        self._anchor_chars = len(self._decode(self._anchor))

    def _decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def decode(self, ids: Sequence[int]) -> str:
        return self._decode([*self._anchor, *ids])[self._anchor_chars:]


class _HFEngine:
    """The parts of ``Engine`` the scheduler uses outside the model step: ``check``, ``device``,
    ``max_context``, ``tokenizer``."""

    # Engine.check only reads ``max_context`` and ``config.vocab_size``, which this class has too.
    check = Engine.check

    def __init__(self, model: Any, tokenizer: _TokenizerView, max_context: int) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.max_context = max_context
        self.config = model.config

    @property
    def device(self) -> torch.device:
        return self.model.device


class HFScheduler(Scheduler):
    """The ``Scheduler`` interface on a transformers causal LM, one request at a time (see the module docstring)."""

    def __init__(self, model: Any, prompt_format: HFFormat, *, max_queue: int = 64,
                 metrics: Metrics | None = None, max_context: int | None = None) -> None:
        if not prompt_format.stop_ids:
            raise ValueError("the model's tokenizer names no end-of-sequence token: nothing would end a completion")
        view = _TokenizerView(prompt_format.tokenizer, prompt_format.stop_ids)
        context = max_context or getattr(model.config, "max_position_embeddings", None) or DEFAULT_CONTEXT
        self.model = model.eval()
        # transformers 5 renamed ``past_key_values`` to ``cache`` (argument and output); 4.x knows the old name.
        forward_args = inspect.signature(model.forward).parameters
        self._cache_arg = "cache" if "cache" in forward_args else "past_key_values"
        self._keep_last = {"logits_to_keep": 1} if "logits_to_keep" in forward_args else {}
        self._past: Any = None
        """The running request's key/value cache."""
        super().__init__(_HFEngine(model, view, context), max_batch=1, max_queue=max_queue,  # type: ignore[arg-type]
                         prompt_cache_mb=0, batching=False, metrics=metrics)

    def _step(self) -> None:
        now = time.monotonic()
        self._prefilling = [r for r in self._prefilling if not self._end_if_over(r, now)]
        if self._decoding and self._end_if_over(self._decoding[0], now):
            self._decoding = []
        if self._prefilling:  # max_batch is 1: nothing is decoding
            request = self._prefilling[0]
            self.metrics.prompt_tokens.inc(len(request.ids))
            self.metrics.cache_misses.inc()
            self.metrics.prefill_steps.inc()
            # It stays in _prefilling until the pass is done, so that a failure ends it with "error".
            self._past = None
            running = self._forward(request, request.ids)
            self._prefilling.pop(0)
        elif self._decoding:
            self.metrics.decode_steps.inc()
            request = self._decoding[0]
            running = self._forward(request, [request.next_token])
        else:
            return
        self._decoding = [request] if running else []

    def _forward(self, request: _Request, ids: list[int]) -> bool:
        """Feed ``ids`` after the request's cache, choose its next token and hand it on; False once
        the request has finished."""
        x = torch.tensor([ids], device=self.model.device)
        out = self.model(input_ids=x, use_cache=True, **{self._cache_arg: self._past}, **self._keep_last)
        self._past = getattr(out, self._cache_arg)
        tokens, logp = choose(out.logits[:, -1].float(), [request.params], [request.generator],
                              logprobs=request.logprobs > 0)
        token = int(tokens[0])
        request.next_token = token
        return not self._take(request, token, None if logp is None else logp[0])


def open_hf(path: str | Path, *, device: str = "cpu", max_batch: int = 1, max_queue: int = 64,
            metrics: Metrics | None = None) -> tuple[HFScheduler, HFFormat]:
    """Load the transformers model in ``path`` and serve it: the scheduler and its prompt format."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from smallcode.export.hf import trusted_remote_code

    path = Path(path)
    trust = trusted_remote_code(path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=trust)
        # Half precision is slow on a CPU; elsewhere keep the dtype the weights were saved in.
        model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, trust_remote_code=trust,
                                                     dtype=torch.float32 if device == "cpu" else "auto")
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: cannot load a Hugging Face causal LM ({e})") from e
    model.to(device)
    eos = model.generation_config.eos_token_id
    extra = [eos] if isinstance(eos, int) else list(eos or [])
    fmt = hf_prompt_format(tokenizer, extra_stop_ids=extra)
    return HFScheduler(model, fmt, max_queue=max_queue, metrics=metrics), fmt
