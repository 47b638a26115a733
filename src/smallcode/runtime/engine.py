"""The generation engine: prefill, batched decoding, stop sequences, streaming, fill-in-the-middle.

``Engine.from_checkpoint(dir)`` loads a model and its tokenizer in one call (an imported model's: its
Hugging Face tokenizer, ``formats.load_hf_tokenizer``). Each distinct prompt is
prefilled once (in window-sized chunks, through the model's KV cache) and fanned out to its ``n``
samples; all rows then decode together, one token per step, and leave the batch as soon as they
finish (end-of-text, a stop sequence, or ``max_tokens``). Stop sequences are matched on decoded
text, so they are found even when a token boundary splits them; streaming holds back text that
could still turn into a stop sequence or that ends inside an unfinished UTF-8 character.

The loop is built from step-level pieces that ``smallcode.runtime.scheduler`` shares for continuous
batching: ``Prefill`` (a prompt into a cache, piece by piece, reusing a ``PromptCache``),
``Engine.decode_step`` (one token for every row of a cache), ``sampling.choose`` (per-row
parameters) and ``Row.push`` (end-of-text, stop sequences, ``max_tokens``, the streaming hold-back).
``generate``/``stream`` schedule statically (no request joins mid-flight). With ``speculation`` (a
``speculative.Speculation``: prompt lookup or a draft model), ``Engine.advance`` verifies several
guessed tokens per row in one model call where a row has a guess (``speculative.Speculator``); the
scheduler calls the same ``advance``.

The model is any ``smallcode.runtime.step.ModelStep`` (our torch model, ``OnnxModel``, ``HFStep``)
and the tokenizer any ``step.Tokenizer``; the engine respects the step's ``StepLimits`` (a step that
takes one row at a time decodes the rows of a call one after another). ``complete`` lays a
fill-in-the-middle prompt out as the server and the LSP do: the tokenizer's ``PromptFormat.fim``.
"""

from __future__ import annotations

import random
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from smallcode.errors import UserError
from smallcode.model.checkpoint import Checkpoint
from smallcode.model.transformer import SmallCodeLM
from smallcode.runtime.cpu_decode import prepare_for_decoding
from smallcode.runtime.formats import HFTokenizer, load_hf_tokenizer, prompt_format
from smallcode.runtime.sampling import SamplingParams, choose, sample
from smallcode.runtime.speculative import (
    Advance,
    DraftedStep,
    SpecRow,
    SpecStats,
    Speculation,
    SpeculationError,
    Speculator,
    check_draft,
)
from smallcode.runtime.step import ModelStep, StepCache, Tokenizer, stack_caches, step_limits

FinishReason = Literal["stop", "length", "eos"]


@dataclass
class Completion:
    text: str
    token_ids: list[int]
    finish_reason: FinishReason
    prompt_tokens: int


class GenerationError(UserError, ValueError):
    """A request the engine refuses before doing any work; the message says why."""


@dataclass
class Row:
    """One completion being decoded: its tokens and text so far, how much of the text has been
    shown, and why it finished. ``push`` is the one place a sampled token is taken in: end-of-text,
    stop sequences, ``max_tokens`` and the streaming hold-back are decided there."""

    prompt_tokens: int
    params: SamplingParams
    watch_text: bool = True
    """Decode the text at every token (streaming, stop sequences); otherwise once, at the end."""
    ids: list[int] = field(default_factory=list)
    text: str = ""
    emitted: int = 0
    """Characters of ``text`` already shown."""
    finish: FinishReason | None = None

    def push(self, token: int, tokenizer: Tokenizer) -> str:
        """Take the next sampled token and return the text that may be shown now."""
        params = self.params
        if token in tokenizer.stop_ids and not params.ignore_eos:
            self.finish = "eos"
        else:
            self.ids.append(token)
            if self.watch_text:
                self.text = tokenizer.decode(self.ids)
                cut = _first_stop(self.text, params.stop)
                if cut is None and params.stop_loops:
                    cut = loop_cut(self.text)
                if cut is not None:
                    self.text, self.finish = self.text[:cut], "stop"
            if self.finish is None and len(self.ids) >= params.max_tokens:
                self.finish = "length"
        return self.release() if self.watch_text else ""

    def release(self, everything: bool = False) -> str:
        """Text not shown yet that may be shown: all of it once finished (or when asked), else up to
        a tail that a stop sequence may still claim or that ends inside a character."""
        safe = len(self.text) if self.finish or everything else _safe_length(self.text, self.params.stop)
        if self.params.stop_loops and not (self.finish or everything):
            safe = min(safe, loop_hold(self.text))
        delta, self.emitted = self.text[self.emitted:safe], max(self.emitted, safe)
        return delta


class PromptCache:
    """KV caches of recent prompts, within ``max_bytes``, the least recently used dropped first.

    An entry is a prompt's token ids with the cache after them (and, for a whole prompt, the logits
    of its last position). ``lookup`` finds the entry that saves the most prefill for a new prompt:
    one the prompt extends, or one it shares a start with when the cache can go back to that length
    (``StepCache.can_truncate``). The cache after a prefix does not depend on what follows it, so a
    reused cache is the one a cold prefill would build, up to float summation order.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.nbytes = 0
        self._entries: OrderedDict[tuple[int, ...], _CacheEntry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def put(self, ids: list[int], cache: StepCache, logits: torch.Tensor | None = None) -> None:
        """Keep a copy of ``cache`` (one row, after ``ids``)."""
        key = tuple(ids)
        old = self._entries.get(key)
        if old is not None and (old.logits is not None or logits is None):
            self._entries.move_to_end(key)
            return
        size = cache.nbytes() + (logits.nelement() * logits.element_size() if logits is not None else 0)
        if size > self.max_bytes:
            return
        if old is not None:
            self._drop(key)
        while self._entries and self.nbytes + size > self.max_bytes:
            self._drop(next(iter(self._entries)))
        ids_t = torch.tensor(ids, dtype=torch.long)
        self._entries[key] = _CacheEntry(ids_t, cache.clone(), None if logits is None else logits.clone(), size)
        self.nbytes += size

    def lookup(self, ids: list[int]) -> tuple[StepCache, int, torch.Tensor | None] | None:
        """The best reuse for ``ids``: a fresh copy of a cache holding the first ``k`` positions, ``k``,
        and the last logits when ``k == len(ids)`` (nothing left to prefill); None when nothing helps."""
        best = self._best(ids)
        if best is None:
            return None
        usable, key = best
        entry = self._entries[key]
        self._entries.move_to_end(key)
        if usable == len(key):
            return entry.cache.clone(), usable, (entry.logits.clone() if usable == len(ids) else None)
        return entry.cache.truncate(usable), usable, None

    def reusable(self, ids: list[int]) -> int:
        """How many of ``ids`` a ``lookup`` now would take from here (copies nothing, touches no entry)."""
        best = self._best(ids)
        return 0 if best is None else best[0]

    def _best(self, ids: list[int]) -> tuple[int, tuple[int, ...]] | None:
        query = torch.tensor(ids, dtype=torch.long)
        best: tuple[int, tuple[int, ...]] | None = None
        # Longest possible overlap first, so that once an entry gives k, every entry that cannot beat
        # k is skipped: a typing session leaves hundreds of entries, most of them shorter than k.
        for key in sorted(self._entries, key=lambda k: -min(len(k), len(ids))):
            n = min(len(key), len(ids))
            if best is not None and n <= best[0]:
                break
            entry = self._entries[key]
            diff = (entry.ids[:n] != query[:n]).nonzero()
            common = int(diff[0]) if len(diff) else n
            if common == len(key) == len(ids) and entry.logits is not None:
                usable = common
            else:  # at least the last prompt token must be fed to get its logits
                usable = min(common, len(ids) - 1)
                if usable < len(key) and not entry.cache.can_truncate(usable):
                    continue
            if usable > 0 and (best is None or usable > best[0]):
                best = (usable, key)
        return best

    def _drop(self, key: tuple[int, ...]) -> None:
        self.nbytes -= self._entries.pop(key).nbytes


@dataclass
class _CacheEntry:
    ids: torch.Tensor
    cache: StepCache
    logits: torch.Tensor | None
    nbytes: int


class Prefill:
    """One prompt fed into a KV cache (one row), a piece per ``step()``, so that a scheduler can run
    decode steps for other requests in between and stop between pieces.

    With a ``PromptCache`` it starts from the longest reusable cache and stores snapshots as it
    goes: at multiples of ``chunk`` (prompts that share a start), ``tail`` tokens before the end and
    at the end. Its cache then keeps ``tail`` spare ring slots, so that a later prompt differing
    only in its last few tokens (one more keystroke at the cursor re-tokenizes the word being typed
    and moves the FIM middle token) can truncate this one even after the ring has wrapped; the tail
    snapshot covers larger changes. Without ``chunk`` the whole prompt is one step (the model
    splits it into window-sized pieces itself).
    """

    def __init__(self, engine: Engine, ids: list[int], *, extra_slots: int = 0, chunk: int | None = None,
                 prompt_cache: PromptCache | None = None, tail: int = 8) -> None:
        self.engine, self.ids, self.prompt_cache = engine, ids, prompt_cache
        self.logits: torch.Tensor | None = None
        """(1, V) next-token logits after the whole prompt, once ``done``."""
        hit = prompt_cache.lookup(ids) if prompt_cache is not None else None
        if hit is not None:
            self.cache, self.pos, self.logits = hit
        else:
            self.cache = engine.model.new_cache(1, initial_slots=len(ids) + extra_slots,
                                                spare=max(tail if prompt_cache is not None else 0, engine.spare))
            self.pos = 0
        self.cached_tokens = self.pos
        """Prompt tokens taken from the prompt cache instead of being fed."""
        self.steps = 0
        """Pieces fed so far."""
        stops = {len(ids)}
        if chunk is not None:
            stops |= set(range(chunk, len(ids), chunk))
            if prompt_cache is not None and len(ids) > tail:
                stops.add(len(ids) - tail)
        self._stops = sorted(p for p in stops if p > self.pos)

    @property
    def done(self) -> bool:
        return self.logits is not None

    def step(self) -> bool:
        """Feed the next piece; True once the whole prompt is in."""
        if self.done:
            return True
        end = self._stops.pop(0)
        piece = torch.tensor([self.ids[self.pos:end]], device=self.engine.device)
        out = self.engine.model(piece, self.cache, last_only=True)
        self.pos, self.steps = end, self.steps + 1
        if end == len(self.ids):
            self.logits = self.engine.only_decodable(out.logits[:, -1])
        if self.prompt_cache is not None:
            self.prompt_cache.put(self.ids[:end], self.cache, self.logits)
        return self.done

    def run(self) -> tuple[StepCache, torch.Tensor]:
        """Feed what is left; the cache after the prompt and the logits of its last position."""
        while not self.step():
            pass
        assert self.logits is not None
        return self.cache, self.logits


class Engine:
    """Generation on one model step. A ``SmallCodeLM`` is put in eval mode and the decode modules of
    ``cpu_decode.prepare_for_decoding`` are swapped into it, in place: the same function, the same
    parameters and state dict. Any other step is used as it is. The tokenizer is a ``CodeTokenizer``
    or an ``HFTokenizer``: its ``prompt_format`` lays out ``complete``'s prompt. ``speculate`` turns
    speculative decoding on."""

    def __init__(self, model: ModelStep, tokenizer: Tokenizer, max_context: int | None = None) -> None:
        self.prompt_format = prompt_format(tokenizer)  # type: ignore[arg-type]
        """How ``complete`` lays out a fill-in-the-middle prompt (the server's and the LSP's layout)."""
        cfg = model.config
        if tokenizer.vocab_size > cfg.vocab_size:
            raise GenerationError(
                f"tokenizer has {tokenizer.vocab_size} tokens but the model only {cfg.vocab_size}: "
                "they do not belong together")
        self.model: ModelStep = prepare_for_decoding(model.eval()) if isinstance(model, SmallCodeLM) else model
        self.limits = step_limits(model)
        self.tokenizer = tokenizer
        self.config = cfg
        # A Hugging Face model's embedding may have more rows than its tokenizer has tokens (Qwen pads
        # 151,665 to 151,936): those ids decode to nothing and are never chosen. Our own tokenizer (also
        # when transformers loads an export of ours) is left alone: a checkpoint is trained with its
        # tokenizer's exact vocabulary.
        foreign = isinstance(tokenizer, HFTokenizer) and tokenizer.format.native is None
        self._decodable = tokenizer.vocab_size if foreign else cfg.vocab_size
        # A windowed model's memory does not grow with context; a full-attention one stops at what it was trained on.
        self.max_context = max_context or (32768 if cfg.window < cfg.max_seq_len else cfg.max_seq_len)
        self.speculator: Speculator | None = None
        self.spec_stats = SpecStats()
        """Tokens proposed and accepted since the engine started (or ``reset``); zeros without speculation."""
        self.spare = 0
        """Ring slots every cache keeps past the window: speculation rewinds by up to ``k``."""

    def speculate(self, settings: Speculation, draft: Engine | None = None) -> Engine:
        """Turn speculative decoding on (``speculative``), before the first request; method ``draft``
        needs ``draft``, the engine on the draft model (same tokenizer, same device). Returns self."""
        if self.speculator is not None:
            raise SpeculationError("this engine already speculates")
        if not self.limits.speculation:
            raise SpeculationError("this model's runtime cannot go back past rejected tokens (transformers' "
                                   "one-row step): speculative decoding needs runtime torch or onnx")
        draft_step = None
        if settings.method == "draft":
            if draft is None:
                raise SpeculationError("speculation with a draft model needs the draft (--speculate draft:DIR)")
            name = settings.draft or "draft"
            check_draft(self.model, self.tokenizer, draft.model, draft.tokenizer, name)
            if draft.max_context < self.max_context:
                raise SpeculationError(f"{name}: the draft covers {draft.max_context} positions, the model "
                                       f"{self.max_context}: a draft must follow the whole context")
            draft_step = draft.model
        elif draft is not None:
            raise SpeculationError(f"a draft model is only used with method 'draft', not {settings.method!r}")
        self.speculator = Speculator(settings, self.model, draft_step, self.only_decodable, self.spec_stats)
        if draft_step is not None:
            self.model = DraftedStep(self.model, draft_step)
        self.spare = settings.k + 1
        return self

    @classmethod
    def from_checkpoint(cls, directory: str | Path, device: str = "cpu", max_context: int | None = None) -> Engine:
        """The engine on a smallcode checkpoint and its tokenizer. An imported model's checkpoint (its
        tokenizer a Hugging Face model's, ``CodeTokenizer.native`` False) is served with that tokenizer
        as transformers loads it (``formats.load_hf_tokenizer``): the family's prompt layouts, chat
        template and stops, token ids equal to ``AutoTokenizer``'s; the model step is still ours."""
        checkpoint = Checkpoint.open(directory)
        ours = checkpoint.load_tokenizer()  # checks the file against the recorded hash
        tokenizer = ours if ours.native else load_hf_tokenizer(checkpoint.directory)
        return cls(checkpoint.load_model(device=device), tokenizer, max_context)

    # ------------------------------------------------------------------ public API
    def generate(self, prompts: list[str] | str, params: SamplingParams | None = None, n: int = 1) -> list[Completion]:
        """``n`` completions per prompt, prompt-major (prompt 0's samples first)."""
        prompts = [prompts] if isinstance(prompts, str) else prompts
        ids = [self._encode(p) for p in prompts]
        return self.generate_ids(ids, params or SamplingParams(), n)

    def complete(self, prefix: str, suffix: str = "", params: SamplingParams | None = None, n: int = 1
                 ) -> list[Completion]:
        """Fill in the middle between ``prefix`` and ``suffix``, laid out by ``prompt_format.fim``
        (ours: suffix-prefix-middle, as the server and the LSP send it)."""
        if not prefix and not suffix:
            raise GenerationError("empty prompt: give a prefix, a suffix or both")
        return self.generate_ids([self.prompt_format.fim(prefix, suffix)], params or SamplingParams(), n)

    def stream(self, prompt: str, params: SamplingParams | None = None) -> Iterator[str]:
        """Text deltas of one completion as they are decided."""
        for deltas in self._run([self._encode(prompt)], params or SamplingParams(), 1, stream=True):
            if deltas[0]:
                yield deltas[0]

    def generate_ids(self, prompt_ids: list[list[int]], params: SamplingParams, n: int = 1) -> list[Completion]:
        rows: list[Row] = []
        for _ in self._run(prompt_ids, params, n, rows_out=rows):
            pass
        return [Completion(r.text, r.ids, r.finish or "length", r.prompt_tokens) for r in rows]

    # ------------------------------------------------------------------ step-level pieces
    @property
    def device(self) -> torch.device:
        return self.model.device

    def check(self, prompt_ids: list[list[int]], params: SamplingParams, n: int = 1) -> None:
        """Raise ``GenerationError`` for a request this engine refuses (before any model work)."""
        if n < 1:
            raise GenerationError(f"n must be >= 1, got {n}")
        for i, ids in enumerate(prompt_ids):
            if not ids:
                raise GenerationError(f"prompt {i} is empty")
            if len(ids) + params.max_tokens > self.max_context:
                raise GenerationError(
                    f"prompt {i} has {len(ids)} tokens; with max_tokens={params.max_tokens} it needs "
                    f"{len(ids) + params.max_tokens} positions but this engine allows {self.max_context}")
            bad = [t for t in ids if not (isinstance(t, int) and 0 <= t < self.config.vocab_size)]
            if bad:
                raise GenerationError(f"prompt {i} has token ids outside the vocabulary: {bad[:5]}")

    def decode_step(self, cache: StepCache, tokens: list[int]) -> torch.Tensor:
        """Feed one token per row of ``cache``; the (B, V) logits of the next one."""
        return self.only_decodable(self.model(torch.tensor(tokens, device=self.device)[:, None], cache).logits[:, -1])

    def spec_row(self, prompt_ids: list[int], params: SamplingParams) -> SpecRow | None:
        """A row's speculation state (None when this engine does not speculate), to pass to ``advance``
        after the row's first token (``SpecRow.extend``)."""
        return None if self.speculator is None else self.speculator.row(prompt_ids, params)

    def advance(self, cache: StepCache, last: list[int], params: list[SamplingParams],
                generators: list[torch.Generator], specs: list[SpecRow | None] | None = None,
                logprobs: bool = False) -> list[Advance]:
        """One step for every row of ``cache``: feed ``last`` (a token per row) and choose what follows.
        With speculation (``specs``: every row's ``SpecRow``) a row may get several tokens; otherwise
        one. Each ``Advance``'s last token is the one to feed next."""
        if self.speculator is not None and specs is not None and all(s is not None for s in specs):
            rows = [s for s in specs if s is not None]
            out = self.speculator.step(cache, last, params, generators, rows, logprobs)
            if out is not None:
                return out
        tokens, logp = choose(self.decode_step(cache, last), params, generators, logprobs=logprobs)
        out = [Advance([t], None if logp is None else logp[i:i + 1]) for i, t in enumerate(tokens.tolist())]
        for spec, a in zip(specs or [], out, strict=False):
            if spec is not None:
                spec.extend(a.tokens)
        return out

    def only_decodable(self, logits: torch.Tensor) -> torch.Tensor:
        """``logits`` (..., V) with the ids the tokenizer cannot decode (padded embedding rows) set to -inf."""
        if self._decodable < logits.shape[-1]:
            logits = logits.clone()
            logits[..., self._decodable:] = float("-inf")
        return logits

    # ------------------------------------------------------------------ the loop
    def _encode(self, prompt: str) -> list[int]:
        if not isinstance(prompt, str) or not prompt:
            raise GenerationError("empty prompt: there is nothing to continue")
        return self.tokenizer.encode(prompt)

    @torch.inference_mode()
    def _run(self, prompt_ids: list[list[int]], params: SamplingParams, n: int, stream: bool = False,
             rows_out: list[Row] | None = None) -> Iterator[list[str]]:
        self.check(prompt_ids, params, n)
        seed = params.seed if params.seed is not None else random.randrange(2**31)
        watch_text = stream or bool(params.stop) or params.stop_loops  # otherwise decoded once, at the end
        rows = [Row(len(ids), params, watch_text) for ids in prompt_ids for _ in range(n)]
        if rows_out is not None:
            rows_out.extend(rows)
        gens = [torch.Generator(device=self.device).manual_seed(seed + r) for r in range(len(rows))]
        # Rows are prompt-major (row r is a sample of prompt r // n); a step that holds fewer rows
        # than asked for decodes them in consecutive groups, each seeded as it would be in one batch.
        group = self.limits.max_rows or len(rows)
        for start in range(0, len(rows), group):
            yield from self._decode_rows(prompt_ids, n, rows, gens, range(start, min(start + group, len(rows))),
                                         stream)
        if not watch_text:
            for row in rows:
                row.text = self.tokenizer.decode(row.ids)
        if not stream:
            yield []

    def _decode_rows(self, prompt_ids: list[list[int]], n: int, rows: list[Row], gens: list[torch.Generator],
                     group: range, stream: bool) -> Iterator[list[str]]:
        """Decode the rows in ``group`` together until each has finished; with ``stream``, the text
        deltas of every row (empty outside the group) after each token."""
        params = rows[group.start].params
        caches, logits = [], []
        for p in range(group.start // n, (group.stop - 1) // n + 1):  # one prefill per distinct prompt
            samples = min(group.stop, (p + 1) * n) - max(group.start, p * n)  # its rows in this group
            cache, last = Prefill(self, prompt_ids[p], extra_slots=params.max_tokens).run()
            caches.append(cache.select([0] * samples))
            logits.append(last.expand(samples, -1))
        cache = stack_caches(caches)
        active = list(group)
        first = sample(torch.cat(logits), params, [gens[r] for r in active]).tolist()
        steps = [Advance([t]) for t in first]
        specs: list[SpecRow | None] | None = None
        if self.speculator is not None:
            specs = [self.spec_row(prompt_ids[r // n], params) for r in active]
            for spec, t in zip(specs, first, strict=True):
                spec.extend([t])  # type: ignore[union-attr]
        while True:
            deltas = [""] * len(rows)
            keep: list[int] = []
            for slot, (r, step) in enumerate(zip(active, steps, strict=True)):
                for tok in step.tokens:
                    deltas[r] += rows[r].push(tok, self.tokenizer)
                    if rows[r].finish is not None:
                        break
                else:
                    keep.append(slot)
            if stream:
                yield deltas
            if not keep:
                break
            last = [steps[s].tokens[-1] for s in keep]
            if len(keep) < len(active):
                cache = cache.select(keep)
                active = [active[s] for s in keep]
                specs = None if specs is None else [specs[s] for s in keep]
            steps = self.advance(cache, last, [params] * len(active), [gens[r] for r in active], specs)


def _first_stop(text: str, stops: list[str]) -> int | None:
    """Index of the earliest stop sequence in ``text`` (or None). The whole text is searched because
    a character completed by a later byte token can change what came before."""
    hits = [i for s in stops if (i := text.find(s)) != -1]
    return min(hits) if hits else None


LOOP_COPIES = 3
"""Copies of a block of lines that make a loop (``SamplingParams.stop_loops``)."""
LOOP_MAX_LINES = 4
"""Longest block of lines a loop repeats."""
LOOP_LINE_CHARS = 64
"""A run inside one line is a loop once its copies cover this many characters (and four copies)."""


def loop_cut(text: str) -> int | None:
    """Where to end ``text`` if it has started repeating itself, keeping one copy; None if it has not.

    Two kinds, both how a small model's greedy decoding loops. Right after a line ends: the last
    ``LOOP_COPIES`` blocks of 1 to ``LOOP_MAX_LINES`` whole lines are equal and not blank (cut after the
    first block, before its newline). Inside a line: it ends in four or more copies of a 2-32 character
    unit of at least two distinct characters, the copies covering ``LOOP_LINE_CHARS`` characters (cut
    after the first copy; a run of one character, such as a ``# ====`` rule, is not a loop)."""
    end = text.rfind("\n")
    line = text[end + 1:]
    if end != -1 and not line.strip():  # a line has just ended (the next one may have its indentation)
        lines = text[:end].split("\n")
        for p in range(1, LOOP_MAX_LINES + 1):
            if len(lines) < LOOP_COPIES * p:
                break
            block = lines[-p:]
            if all(not ln.strip() for ln in block):
                continue
            if all(lines[len(lines) - (c + 1) * p:len(lines) - c * p] == block for c in range(1, LOOP_COPIES)):
                return len("\n".join(lines[:len(lines) - (LOOP_COPIES - 1) * p]))
        return None
    if len(line) < LOOP_LINE_CHARS:
        return None
    for size in range(2, 33):
        unit = line[-size:]
        if len(set(unit)) < 2:
            continue
        copies = 1
        while (copies + 1) * size <= len(line) and line.endswith(unit * (copies + 1)):
            copies += 1
        if copies >= 4 and copies * size >= LOOP_LINE_CHARS:
            return len(text) - (copies - 1) * size
    return None


def loop_hold(text: str) -> int:
    """How much of ``text`` a stream may show when loops are stopped: not the lines that repeat the
    block of lines before them (a third copy would make ``loop_cut`` take them back), nor a line being
    written that so far repeats the line before it, nor the line break before those."""
    end = text.rfind("\n")
    lines = text[:end].split("\n") if end != -1 else []  # whole lines; the one being written is after them
    hold = len(text)
    partial = text[end + 1:]
    if lines and lines[-1].strip() and lines[-1].startswith(partial):
        hold = end
    for p in range(1, LOOP_MAX_LINES + 1):
        if len(lines) < 2 * p:
            break
        block = lines[-p:]
        if any(ln.strip() for ln in block) and lines[-2 * p:-p] == block:
            hold = min(hold, len("\n".join(lines[:-p])))
    return hold


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
