"""Speculative decoding: cheap guesses of a row's next tokens, checked by the model in one call.

A plain decode step feeds each row its last token and gets one token back; at batch 1 on a CPU that
step is bound by reading the weights, so feeding a few more positions in the same call costs little
more. Speculation uses that: a proposer guesses the next ``k`` tokens, the model is fed the row's last
token followed by the guesses (``k + 1`` positions), which gives its distribution after each of them,
and guesses are accepted from the left while the model agrees. The first disagreement is replaced by
the model's own choice; when all ``k`` are accepted, the model's token after them comes free. The
rows' caches then forget the rejected positions (``StepCache.rewind``): in the window ring and the
global slots alike, which is exact because the ring keeps ``spare`` slots past the window
(``Engine`` sizes it ``k + 1``), so a rewound position never lost what its window sees.

Two proposers:

* **prompt lookup** (``ngram``): the longest of the row's last ``ngram_max`` .. ``ngram_min`` tokens
  that occurred earlier in its prompt or output proposes what followed its latest occurrence (prompt
  lookup decoding, Saxena 2023; vLLM's ``ngram``, llama.cpp's lookup). Code repeats itself (an edit
  copies lines of the prompt, a completion repeats a name of the suffix), and the guess costs nothing.
* **a draft model** (``draft``): a smaller model with the same tokenizer proposes by decoding ``k``
  tokens itself (Leviathan et al. 2023; Chen et al. 2023). It runs beside the model in one
  ``DraftedStep``: every prompt piece and every token goes into both caches, so the prompt cache
  keeps the draft's prefill too.

The output keeps the model's own distribution (the rule of both papers): a guess ``x`` drawn from the
proposer's distribution ``q`` is accepted with probability ``min(1, p(x) / q(x))``, where ``p`` is the
distribution plain decoding would draw from (``sampling.probabilities``: temperature, top-k, top-p);
a rejection draws from ``max(p - q, 0)`` renormalised. Prompt lookup's ``q`` is one-hot on its guess; a
greedy row's ``p`` is one-hot on the best logit, so greedy output is token for token plain decoding's
(up to float summation order, which the tests check over hundreds of tokens past the window).

Per row, ``k`` adapts as transformers' assisted generation does: two more after a round where every
guess was accepted, one fewer otherwise. A row whose acceptance rate (a moving average) falls below
``min_rate`` stops proposing for a pause (16 tokens, doubling each time, at most 512), then tries
again. A step where no row proposes is a plain decode step. Rows of a batch propose different numbers
of tokens; the verification call feeds every row the longest, the extra positions are rewound.

A draft model's cache follows every token whether its row proposes or not (a paused row still pays
for the draft's step); prompt lookup costs nothing when it has no guess.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from smallcode.config import Config, ConfigError
from smallcode.errors import UserError
from smallcode.runtime.formats import vocabulary
from smallcode.runtime.sampling import SamplingParams, is_greedy, probabilities
from smallcode.runtime.step import ModelStep, StepCache, Tokenizer, step_limits

MAX_K = 16
"""Most tokens a row may propose in one step."""
FIRST_PAUSE, MAX_PAUSE = 16, 512
"""Tokens a row goes without proposing after its acceptance rate fell below ``min_rate``: the first
time, and at most (the pause doubles each time)."""


class SpeculationError(UserError, ValueError):
    """Speculative decoding asked for in a way that cannot work (a draft with another tokenizer, a model
    step that cannot go back); the message says why."""


@dataclass
class Speculation(Config):
    """How to speculate (``smallcode serve --speculate ngram|draft:DIR``)."""

    method: Literal["ngram", "draft"] = "ngram"
    """``ngram``: prompt lookup; ``draft``: a draft model (``draft``)."""
    draft: str | None = None
    """The draft model's directory (a smallcode checkpoint or ONNX export, with the model's tokenizer)."""
    k: int = 8
    """Most tokens a row proposes in one step, 1 .. 16 (each row adapts below it)."""
    ngram_max: int = 4
    """Prompt lookup: the longest run of last tokens matched."""
    ngram_min: int = 2
    """Prompt lookup: the shortest run of last tokens matched."""
    min_rate: float = 0.3
    """A row whose acceptance rate falls below this stops proposing for a while."""

    def __post_init__(self) -> None:
        if not 1 <= self.k <= MAX_K:
            raise ConfigError(f"speculation k must be an integer in [1, {MAX_K}], got {self.k!r}")
        if not 1 <= self.ngram_min <= self.ngram_max:
            raise ConfigError(f"ngram_min and ngram_max must satisfy 1 <= ngram_min <= ngram_max, got "
                              f"{self.ngram_min!r} and {self.ngram_max!r}")
        if not 0 <= self.min_rate < 1:
            raise ConfigError(f"min_rate must be in [0, 1), got {self.min_rate!r}")
        if (self.method == "draft") != (self.draft is not None):
            raise ConfigError("a draft model directory goes with method 'draft' and only with it "
                              "(--speculate draft:DIR)")

    @classmethod
    def parse(cls, text: str, **fields: Any) -> Speculation:
        """``ngram`` or ``draft:DIR`` (what ``--speculate`` takes), with other fields such as ``k``."""
        if text == "ngram":
            return cls(method="ngram", **fields)
        if text.startswith("draft:") and len(text) > len("draft:"):
            return cls(method="draft", draft=text[len("draft:"):], **fields)
        raise ConfigError(f"--speculate takes 'ngram' or 'draft:DIR', got {text!r}")


@dataclass
class SpecStats:
    """Counters of one engine's speculation, from its start or the last ``reset``."""

    proposed: int = 0
    """Tokens proposed."""
    accepted: int = 0
    """Proposed tokens the model accepted."""
    steps: int = 0
    """Verification calls (each one forward of the model over several positions)."""

    @property
    def rate(self) -> float:
        return self.accepted / self.proposed if self.proposed else 0.0

    def reset(self) -> None:
        self.proposed = self.accepted = self.steps = 0


@dataclass
class Advance:
    """What one decode step gave a row: its new tokens in order (the last one not yet fed to the model)."""

    tokens: list[int]
    logprobs: torch.Tensor | None = None
    """(len(tokens), V) the model's log-probabilities before each token, when asked for."""
    proposed: int = 0
    accepted: int = 0


class PromptLookup:
    """Where each recent run of ``n`` tokens last occurred in a row's tokens, for ``ngram_min <= n <=
    ngram_max``: built once from the prompt, then one entry per ``n`` for each new token."""

    def __init__(self, ngram_min: int, ngram_max: int) -> None:
        self.sizes = range(ngram_max, ngram_min - 1, -1)  # longest match first
        self._after: dict[tuple[int, ...], int] = {}
        """A run of tokens -> the position just after its latest occurrence that has a token there."""
        self._indexed = 0

    def index(self, tokens: Sequence[int]) -> None:
        """Take in ``tokens[indexed:]`` (``tokens`` is the row's whole history, growing)."""
        after = self._after
        for i in range(max(self._indexed, 1), len(tokens)):
            for n in self.sizes:
                if i >= n:
                    after[tuple(tokens[i - n:i])] = i
        self._indexed = len(tokens)

    def propose(self, tokens: Sequence[int], k: int) -> list[int]:
        """Up to ``k`` tokens that followed the latest earlier occurrence of the longest matching tail."""
        self.index(tokens)
        for n in self.sizes:
            if len(tokens) > n:
                at = self._after.get(tuple(tokens[-n:]))
                if at is not None:
                    return list(tokens[at:at + k])
        return []


class SpecRow:
    """One row's speculation: its tokens so far (prompt and output), its ``k`` and its acceptance rate."""

    def __init__(self, settings: Speculation, prompt: Sequence[int], max_tokens: int) -> None:
        self.settings = settings
        self.tokens = list(prompt)
        self.left = max_tokens
        """Tokens it may still generate."""
        self.k = max(1, settings.k // 2)
        self.rate = 0.5
        self.pause = 0
        """Tokens to go before proposing again."""
        self._next_pause = FIRST_PAUSE
        self.lookup = PromptLookup(settings.ngram_min, settings.ngram_max) if settings.method == "ngram" else None

    def wanted(self) -> int:
        """How many tokens it may propose now: 0 while paused, and never past ``max_tokens``."""
        return 0 if self.pause > 0 else max(0, min(self.k, self.left - 1))

    def propose(self) -> list[int]:
        """Prompt lookup's guess (empty when nothing matches or while paused)."""
        assert self.lookup is not None
        want = self.wanted()
        return self.lookup.propose(self.tokens, want) if want else []

    def extend(self, tokens: list[int]) -> None:
        self.tokens.extend(tokens)
        self.left -= len(tokens)
        self.pause = max(0, self.pause - len(tokens))

    def record(self, proposed: int, accepted: int) -> None:
        """Adapt ``k`` and the rate to one round's outcome; pause when guesses stop paying."""
        if not proposed:
            return
        self.k = min(self.settings.k, self.k + 2) if accepted == proposed else max(1, self.k - 1)
        self.rate = 0.7 * self.rate + 0.3 * accepted / proposed
        if self.rate < self.settings.min_rate:
            self.pause, self._next_pause = self._next_pause, min(MAX_PAUSE, 2 * self._next_pause)
            self.rate, self.k = 0.5, 1  # after the pause it starts small and gets a few rounds


class DraftedCache:
    """The caches of a model and of its draft, rows in step: every ``StepCache`` operation on both."""

    def __init__(self, target: Any, draft: Any) -> None:
        self.target, self.draft = target, draft

    @property
    def batch(self) -> int:
        return self.target.batch  # type: ignore[no-any-return]

    def select(self, rows: torch.Tensor | list[int]) -> DraftedCache:
        return DraftedCache(self.target.select(rows), self.draft.select(rows))

    def clone(self) -> DraftedCache:
        return DraftedCache(self.target.clone(), self.draft.clone())

    def can_truncate(self, length: int) -> bool:
        return bool(self.target.can_truncate(length) and self.draft.can_truncate(length))

    def truncate(self, length: int) -> DraftedCache:
        return DraftedCache(self.target.truncate(length), self.draft.truncate(length))

    def rewind(self, drop: list[int]) -> None:
        self.target.rewind(drop)
        self.draft.rewind(drop)

    def nbytes(self) -> int:
        return self.target.nbytes() + self.draft.nbytes()  # type: ignore[no-any-return]

    @staticmethod
    def stack(caches: list[DraftedCache]) -> DraftedCache:
        first = caches[0]
        return DraftedCache(first.target.stack([c.target for c in caches]),
                            first.draft.stack([c.draft for c in caches]))


class DraftedStep:
    """A model step that feeds every prompt piece and token to a model and to its draft alike, and
    answers with the model's logits: prefill, the prompt cache and plain decode steps keep the
    draft's cache in step without knowing it is there."""

    def __init__(self, target: ModelStep, draft: ModelStep) -> None:
        self.target, self.draft = target, draft
        self.limits = step_limits(target)

    @property
    def config(self) -> Any:
        return self.target.config

    @property
    def device(self) -> torch.device:
        return self.target.device

    def eval(self) -> DraftedStep:
        return self

    def new_cache(self, batch: int, initial_slots: int = 256, spare: int = 0) -> DraftedCache:
        return DraftedCache(self.target.new_cache(batch, initial_slots=initial_slots, spare=spare),
                            self.draft.new_cache(batch, initial_slots=initial_slots, spare=spare))

    def __call__(self, input_ids: torch.Tensor, cache: DraftedCache | None = None, last_only: bool = False) -> Any:
        if cache is None:
            cache = self.new_cache(input_ids.shape[0], initial_slots=input_ids.shape[1])
        self.draft(input_ids, cache.draft, last_only=True)
        return self.target(input_ids, cache.target, last_only=last_only)


def check_draft(target: ModelStep, target_tokenizer: Tokenizer, draft: ModelStep, draft_tokenizer: Tokenizer,
                name: str) -> None:
    """Refuse a draft that cannot propose for this model: another vocabulary, or a step that cannot rewind."""
    if not step_limits(draft).speculation:
        raise SpeculationError(f"draft model {name}: its runtime cannot go back past rejected tokens; give a "
                               "smallcode checkpoint, an ONNX export or an importable Hugging Face model")
    if not same_vocabulary(target_tokenizer, draft_tokenizer):
        raise SpeculationError(f"{name}: the draft has another tokenizer than the model ({draft_tokenizer.vocab_size} "
                               f"vs {target_tokenizer.vocab_size} tokens, or other ids); a draft must share its "
                               "model's tokenizer")
    if draft.device != target.device:
        raise SpeculationError(f"draft model {name} is on {draft.device}, the model on {target.device}")


def same_vocabulary(a: Tokenizer, b: Tokenizer) -> bool:
    """Whether two tokenizers map the same strings to the same ids and stop on the same ones."""
    if a.vocab_size != b.vocab_size or set(a.stop_ids) != set(b.stop_ids):
        return False
    va, vb = vocabulary(a), vocabulary(b)
    if va is not None and vb is not None:
        return va == vb
    probe = "def f(x):\n    return {'a': x ** 2}  # é ✓\n"
    return a.encode(probe) == b.encode(probe) and all(a.decode([i]) == b.decode([i]) for i in range(a.vocab_size))


@dataclass
class Guesses:
    """One verification step's proposals: per row its guesses and, for a draft model's, their distributions."""

    guesses: list[list[int]]
    q: list[torch.Tensor] = field(default_factory=list)
    """Per guess position j, (B, V) the draft's distribution of guess j (draft model only)."""


class Speculator:
    """Proposes and verifies for the rows of a decode batch (see the module docstring); the engine
    owns one when speculation is on and calls ``step`` in place of a plain decode step."""

    def __init__(self, settings: Speculation, target: ModelStep, draft: ModelStep | None,
                 only_decodable: Callable[[torch.Tensor], torch.Tensor], stats: SpecStats | None = None) -> None:
        self.settings, self.target, self.draft = settings, target, draft
        self.only_decodable = only_decodable
        """The engine's: logits of ids the tokenizer cannot decode (a padded embedding's rows) to -inf."""
        self.stats = stats if stats is not None else SpecStats()

    def row(self, prompt: Sequence[int], params: SamplingParams) -> SpecRow:
        return SpecRow(self.settings, prompt, params.max_tokens)

    @torch.inference_mode()
    def step(self, cache: StepCache, last: list[int], params: Sequence[SamplingParams],
             generators: Sequence[torch.Generator], rows: Sequence[SpecRow], logprobs: bool = False
             ) -> list[Advance] | None:
        """One verification step for every row of ``cache`` (``last``: the tokens to feed next); None,
        with nothing done, when no row has a guess (the caller runs a plain decode step)."""
        wanted = [r.wanted() for r in rows]
        if not any(wanted):
            return None
        if self.draft is None:
            guesses = [r.propose() for r in rows]
            if not any(guesses):
                return None
            proposal = Guesses(guesses)
        else:
            proposal = self._draft(cache, last, params, generators, wanted)
        K = max(len(g) for g in proposal.guesses)
        feed = torch.tensor([[t, *g, *[t] * (K - len(g))] for t, g in zip(last, proposal.guesses, strict=True)],
                            device=self.target.device)
        target_cache = cache.target if isinstance(cache, DraftedCache) else cache
        logits = self.only_decodable(self.target(feed, target_cache).logits)  # (B, K + 1, V)
        out = [self.accept(logits[b], proposal, b, params[b], generators[b], logprobs) for b in range(len(rows))]
        cache.rewind([K - a.accepted for a in out])
        for row, a in zip(rows, out, strict=True):
            row.extend(a.tokens)
            row.record(a.proposed, a.accepted)
            self.stats.proposed += a.proposed
            self.stats.accepted += a.accepted
        self.stats.steps += 1
        return out

    def _draft(self, cache: StepCache, last: list[int], params: Sequence[SamplingParams],
               generators: Sequence[torch.Generator], wanted: list[int]) -> Guesses:
        """The draft decodes ``max(wanted)`` tokens for every row (a row keeps its ``wanted`` first),
        then takes in its last guess too, so that its cache holds every position the model is fed."""
        assert isinstance(cache, DraftedCache) and self.draft is not None
        K = max(wanted)
        tokens = torch.tensor(last, device=self.target.device)
        guesses, q = [], []
        greedy = all(is_greedy(p) for p in params)
        V = self.target.config.vocab_size
        for _ in range(K):
            logits = self.only_decodable(self.draft(tokens[:, None], cache.draft).logits[:, -1])
            if greedy:  # one-hot q; the accept rule only needs the guess
                tokens = logits.argmax(-1)
            else:
                probs = probabilities(logits, params)
                if probs.shape[-1] != V:  # the draft's embedding may be padded otherwise than the model's
                    probs = torch.nn.functional.pad(probs, (0, V - probs.shape[-1])) if probs.shape[-1] < V \
                        else probs[:, :V].contiguous()
                tokens = torch.stack([torch.multinomial(probs[b], 1, generator=g)[0]
                                      for b, g in enumerate(generators)])
                q.append(probs)
            guesses.append(tokens)
        self.draft(tokens[:, None], cache.draft, last_only=True)
        by_row = torch.stack(guesses, dim=1).tolist()
        return Guesses([g[:w] for g, w in zip(by_row, wanted, strict=True)], q)

    def accept(self, logits_TV: torch.Tensor, proposal: Guesses, b: int, params: SamplingParams,
                generator: torch.Generator, logprobs: bool) -> Advance:
        """The standard accept/resample rule over one row's guesses."""
        guesses = proposal.guesses[b]
        tokens: list[int] = []
        if is_greedy(params):
            best = logits_TV[:len(guesses) + 1].argmax(-1).tolist()
            for j, g in enumerate(guesses):
                if g != best[j]:
                    break
                tokens.append(g)
            tokens.append(best[len(tokens)])
        else:
            p = probabilities(logits_TV[:len(guesses) + 1], [params] * (len(guesses) + 1))
            for j, g in enumerate(guesses):
                q_j = proposal.q[j][b] if proposal.q else None
                q_g = 1.0 if q_j is None else float(q_j[g])
                if float(torch.rand((), generator=generator)) * q_g < float(p[j, g]):
                    tokens.append(g)
                    continue
                residual = p[j].clone()
                if q_j is None:
                    residual[g] = 0.0
                else:
                    residual = (residual - q_j).clamp_(min=0.0)
                if not float(residual.sum()) > 0:  # p and q equal up to rounding: any draw from p is right
                    residual = p[j]
                tokens.append(int(torch.multinomial(residual, 1, generator=generator)))
                break
            else:
                tokens.append(int(torch.multinomial(p[len(guesses)], 1, generator=generator)))
        accepted = len(tokens) - 1
        logp = logits_TV[:len(tokens)].float().log_softmax(-1) if logprobs else None
        return Advance(tokens, logp, len(guesses), accepted)
