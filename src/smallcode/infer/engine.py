"""The generation engine: prefill, batched decoding, stop sequences, streaming, fill-in-the-middle.

``Engine.from_checkpoint(dir)`` loads a model and its tokenizer in one call. Each distinct prompt is
prefilled once (in window-sized chunks, through the model's KV cache) and fanned out to its ``n``
samples; all rows then decode together, one token per step, and leave the batch as soon as they
finish (end-of-text, a stop sequence, or ``max_tokens``). Stop sequences are matched on decoded
text, so they are found even when a token boundary splits them; streaming holds back text that
could still turn into a stop sequence or that ends inside an unfinished UTF-8 character.

Scheduling is static (no requests joining mid-flight) and there is no speculative decoding: a
caller that needs continuous batching builds it on ``step``-level pieces of its own.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from smallcode.infer.cpu_decode import prepare_for_decoding
from smallcode.infer.sampling import SamplingParams, sample
from smallcode.model.checkpoint import Checkpoint
from smallcode.model.kv_cache import KVCache
from smallcode.model.transformer import SmallCodeLM

FinishReason = Literal["stop", "length", "eos"]


@dataclass
class Completion:
    text: str
    token_ids: list[int]
    finish_reason: FinishReason
    prompt_tokens: int


class GenerationError(ValueError):
    """A request the engine refuses before doing any work; the message says why."""


@dataclass
class _Row:
    prompt_tokens: int
    ids: list[int]
    text: str = ""
    emitted: int = 0  # characters of ``text`` already streamed
    finish: FinishReason | None = None


class Engine:
    """Generation on one model. The model is put in eval mode and the decode modules of
    ``cpu_decode.prepare_for_decoding`` are swapped into it, in place: the same function, the same
    parameters and state dict."""

    def __init__(self, model: SmallCodeLM, tokenizer: object, max_context: int | None = None) -> None:
        from smallcode.tokenizer import CodeTokenizer

        if not isinstance(tokenizer, CodeTokenizer):
            raise TypeError("tokenizer must be a smallcode CodeTokenizer")
        cfg = model.config
        if tokenizer.vocab_size > cfg.vocab_size:
            raise GenerationError(
                f"tokenizer has {tokenizer.vocab_size} tokens but the model only {cfg.vocab_size}: "
                "they do not belong together")
        self.model = prepare_for_decoding(model.eval())
        self.tokenizer = tokenizer
        self.config = cfg
        # A windowed model's memory does not grow with context; a full-attention one stops at what it was trained on.
        self.max_context = max_context or (32768 if cfg.window < cfg.max_seq_len else cfg.max_seq_len)

    @classmethod
    def from_checkpoint(cls, directory: str | Path, device: str = "cpu", max_context: int | None = None) -> Engine:
        checkpoint = Checkpoint.open(directory)
        return cls(checkpoint.load_model(device=device), checkpoint.load_tokenizer(), max_context)

    # ------------------------------------------------------------------ public API
    def generate(self, prompts: list[str] | str, params: SamplingParams | None = None, n: int = 1) -> list[Completion]:
        """``n`` completions per prompt, prompt-major (prompt 0's samples first)."""
        prompts = [prompts] if isinstance(prompts, str) else prompts
        ids = [self._encode(p) for p in prompts]
        return self.generate_ids(ids, params or SamplingParams(), n)

    def complete(self, prefix: str, suffix: str = "", params: SamplingParams | None = None, n: int = 1
                 ) -> list[Completion]:
        """Fill in the middle between ``prefix`` and ``suffix`` (the tokenizer's FIM tokens)."""
        if not prefix and not suffix:
            raise GenerationError("empty prompt: give a prefix, a suffix or both")
        return self.generate_ids([self.tokenizer.fim_prompt(prefix, suffix)], params or SamplingParams(), n)

    def stream(self, prompt: str, params: SamplingParams | None = None) -> Iterator[str]:
        """Text deltas of one completion as they are decided."""
        for deltas in self._run([self._encode(prompt)], params or SamplingParams(), 1, stream=True):
            if deltas[0]:
                yield deltas[0]

    def generate_ids(self, prompt_ids: list[list[int]], params: SamplingParams, n: int = 1) -> list[Completion]:
        rows: list[_Row] = []
        for _ in self._run(prompt_ids, params, n, rows_out=rows):
            pass
        return [Completion(r.text, r.ids, r.finish or "length", r.prompt_tokens) for r in rows]

    # ------------------------------------------------------------------ the loop
    def _encode(self, prompt: str) -> list[int]:
        if not isinstance(prompt, str) or not prompt:
            raise GenerationError("empty prompt: there is nothing to continue")
        return self.tokenizer.encode(prompt)

    def _check(self, prompt_ids: list[list[int]], params: SamplingParams, n: int) -> None:
        if n < 1:
            raise GenerationError(f"n must be >= 1, got {n}")
        for i, ids in enumerate(prompt_ids):
            if not ids:
                raise GenerationError(f"prompt {i} is empty")
            if len(ids) + params.max_tokens > self.max_context:
                raise GenerationError(
                    f"prompt {i} has {len(ids)} tokens; with max_tokens={params.max_tokens} it needs "
                    f"{len(ids) + params.max_tokens} positions but this engine allows {self.max_context}")
            bad = [t for t in ids if not 0 <= t < self.config.vocab_size]
            if bad:
                raise GenerationError(f"prompt {i} has token ids outside the vocabulary: {bad[:5]}")

    @torch.inference_mode()
    def _run(self, prompt_ids: list[list[int]], params: SamplingParams, n: int, stream: bool = False,
             rows_out: list[_Row] | None = None) -> Iterator[list[str]]:
        self._check(prompt_ids, params, n)
        model, device = self.model, self.model.lm_head.weight.device
        seed = params.seed if params.seed is not None else random.randrange(2**31)
        rows = [_Row(len(ids), []) for ids in prompt_ids for _ in range(n)]
        if rows_out is not None:
            rows_out.extend(rows)
        gens = [torch.Generator(device=device).manual_seed(seed + r) for r in range(len(rows))]
        caches, logits = [], []
        for ids in prompt_ids:  # one prefill per distinct prompt, shared by its n samples
            cache = model.new_cache(1, initial_slots=len(ids) + params.max_tokens)
            out = model(torch.tensor([ids], device=device), cache, last_only=True)
            caches.append(cache.select([0] * n))
            logits.append(out.logits[:, -1].expand(n, -1))
        cache = KVCache.stack(caches)
        next_logits = torch.cat(logits)
        active = list(range(len(rows)))
        watch_text = stream or bool(params.stop)  # otherwise the text is decoded once, at the end
        for step in range(params.max_tokens):
            tokens = sample(next_logits, params, [gens[r] for r in active]).tolist()
            deltas = [""] * len(rows)
            keep: list[int] = []
            for slot, (r, tok) in enumerate(zip(active, tokens, strict=True)):
                row = rows[r]
                if tok == self.tokenizer.eot_id and not params.ignore_eos:
                    row.finish = "eos"
                else:
                    row.ids.append(tok)
                    if watch_text:
                        row.text = self.tokenizer.decode(row.ids)
                        cut = _first_stop(row.text, params.stop)
                        if cut is not None:
                            row.text, row.finish = row.text[:cut], "stop"
                    if row.finish is None and step == params.max_tokens - 1:
                        row.finish = "length"
                if stream:
                    safe = len(row.text) if row.finish else _safe_length(row.text, params.stop)
                    deltas[r], row.emitted = row.text[row.emitted:safe], max(row.emitted, safe)
                if row.finish is None:
                    keep.append(slot)
            if stream:
                yield deltas
            if not keep:
                break
            if len(keep) < len(active):
                cache = cache.select(keep)
                active = [active[s] for s in keep]
                tokens = [tokens[s] for s in keep]
            next_logits = model(torch.tensor(tokens, device=device)[:, None], cache).logits[:, -1]
        if not watch_text:
            for row in rows:
                row.text = self.tokenizer.decode(row.ids)
        if not stream:
            yield []


def _first_stop(text: str, stops: list[str]) -> int | None:
    """Index of the earliest stop sequence in ``text`` (or None). The whole text is searched because
    a character completed by a later byte token can change what came before."""
    hits = [i for s in stops if (i := text.find(s)) != -1]
    return min(hits) if hits else None


def _safe_length(text: str, stops: list[str]) -> int:
    """How much of ``text`` can be shown: not a trailing partial character, nor a tail that a stop
    sequence may still claim."""
    end = len(text)
    while end and text[end - 1] == "\ufffd":  # the rest of a multi-byte character is still to come
        end -= 1
    for k in range(min(end, max((len(s) for s in stops), default=0)), 0, -1):
        if any(s.startswith(text[end - k:end]) for s in stops):
            return end - k
    return end
