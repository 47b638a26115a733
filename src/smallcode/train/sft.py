"""Task fine-tuning data: instruction/completion examples, completion-only labels, a resumable loader.

Examples come from JSONL, one object a line, in either of two forms::

    {"prompt": "...", "completion": "..."}
    {"messages": [{"role": "system" | "user" | "assistant", "content": "..."}, ...]}

Other keys (``task_id``, a source name) are kept and ignored. ``read_jsonl`` rejects a malformed
line with ``SFTDataError`` naming the file, the line number and what is wrong; ``write_jsonl``
writes examples atomically (the recipe dumps MBPP's pairs with it).

Tokenisation (``tokenize_example``) gives the token ids and, for each, whether it is a target:

* prompt/completion: ``encode(prompt) + encode(completion) + [eot]``; the targets are the
  completion's tokens and the eot. Prompt and completion are encoded separately because that is
  what inference does: the engine encodes the prompt alone and generates from there.
* chat: the tokenizer's ``chat_ids`` layout, ``<|role|> content <|end|>`` per turn; the targets are
  each assistant turn's content and its ``<|end|>``. The role token itself is not a target: at
  inference it is part of the prompt (``add_generation_prompt``). System and user turns teach nothing.

An example longer than a row (``seq_len + 1`` tokens, as a row of ``seq_len`` inputs predicts
``seq_len`` next tokens) is either dropped or truncated, by ``tokenize_examples(overflow=...)``:
truncation keeps the first ``seq_len + 1`` tokens, so the completion loses its tail and its eot; an
example left with no target at all is dropped either way. ``SFTStats`` reports the counts.

``SFTLoader`` puts one example per row, padded at the end: the model has no document mask, so two
examples packed into one row would attend to each other. Padding sits after every real token and
the attention is causal, so it changes no logit a label looks at; its labels are -100. Which
examples a step and a rank take is the shard loader's ``smallcode.data.loader.BatchSchedule`` (see
its docstring), with examples as the samples.

``load_mbpp_train`` / ``load_mbpp_validation`` turn MBPP's train (task ids 601-974) and validation
(511-600) splits into prompt/completion pairs whose prompt is the very prompt the evaluation gives
the model (``smallcode.tasks.mbpp``: a docstring holding the problem text and the task's asserts)
and whose completion is the reference code, so fine-tuning and evaluation agree. MBPP ships with
the package; a data directory is an optional override.

The matching objective is ``smallcode.train.objectives.next_token_objective``: its labels already
carry -100 wherever no loss is taken. This module does not run training, pack rows, or template prompts
beyond the two forms above.

Shape legend: B batch, T row length (``seq_len``), D width.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from smallcode.data.loader import BatchSchedule
from smallcode.errors import UserError
from smallcode.fileio import JsonlError, atomic_write_text, numbered_jsonl
from smallcode.tokenizer import CodeTokenizer, check_messages

IGNORE_INDEX = -100
Overflow = Literal["drop", "truncate"]


class SFTDataError(UserError, ValueError):
    """Fine-tuning data that cannot be used (a bad example, too few examples); the message says where."""


# ----------------------------------------------------------------------------- examples
def check_example(obj: Any, where: str) -> dict:
    """``obj`` if it is a valid example, else ``SFTDataError`` starting with ``where``."""
    if not isinstance(obj, dict):
        raise SFTDataError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    if "messages" in obj:
        if "prompt" in obj or "completion" in obj:
            raise SFTDataError(f"{where}: has both 'messages' and 'prompt'/'completion'; use one form")
        try:
            messages = check_messages(obj["messages"])
        except ValueError as e:
            raise SFTDataError(f"{where}: {e}") from e
        if not any(m["role"] == "assistant" for m in messages):
            raise SFTDataError(f"{where}: no assistant message, so nothing to learn")
        return obj
    for key in ("prompt", "completion"):
        if key not in obj:
            raise SFTDataError(f"{where}: missing {key!r} (an example is prompt + completion, or messages)")
        if not isinstance(obj[key], str):
            raise SFTDataError(f"{where}: {key!r} must be a string, got {type(obj[key]).__name__}")
    return obj


def read_jsonl(path: str | Path) -> list[dict]:
    """Examples from a JSONL file, read under :mod:`smallcode.fileio`'s JSONL policy; an example that
    is malformed is an ``SFTDataError`` naming its file and line."""
    path = Path(path)
    try:
        rows = numbered_jsonl(path)
    except JsonlError as e:
        raise SFTDataError(str(e)) from e
    return [check_example(obj, f"{path}:{lineno}") for lineno, obj in rows]


def write_jsonl(examples: Sequence[dict], path: str | Path) -> Path:
    """Write ``examples`` (checked first) to ``path`` as JSONL, atomically."""
    path = Path(path)
    lines = [json.dumps(check_example(ex, f"example {i}"), ensure_ascii=False) for i, ex in enumerate(examples)]
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, "".join(line + "\n" for line in lines))
    return path


# ----------------------------------------------------------------------------- tokenisation
@dataclass(frozen=True)
class TokenizedExample:
    ids: tuple[int, ...]
    """The whole example, prompt and completion."""
    target: tuple[bool, ...]
    """Per token: does the model learn to predict it (completion, eot, assistant turns)."""

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def n_targets(self) -> int:
        return sum(self.target)


def tokenize_example(example: dict, tokenizer: CodeTokenizer) -> TokenizedExample:
    """Token ids and target flags of one example (see the module docstring for what is a target)."""
    if "messages" in example:
        ids: list[int] = []
        target: list[bool] = []
        for m in example["messages"]:
            turn = tokenizer.chat_ids([m])  # role token, content, end token
            ids += turn
            learn = m["role"] == "assistant"
            target += [False] + [learn] * (len(turn) - 1)
        return TokenizedExample(tuple(ids), tuple(target))
    prompt = tokenizer.encode(example["prompt"])
    completion = tokenizer.encode(example["completion"]) + [tokenizer.eot_id]
    return TokenizedExample(tuple(prompt + completion), (False,) * len(prompt) + (True,) * len(completion))


@dataclass
class SFTStats:
    """What ``tokenize_examples`` did with the examples it was given."""

    examples: int = 0
    """Examples given."""
    kept: int = 0
    """Examples returned (whole or truncated)."""
    truncated: int = 0
    """Kept examples cut to ``seq_len + 1`` tokens."""
    dropped: int = 0
    """Examples left out: too long under ``overflow="drop"``, or with no target that a row can predict."""
    target_tokens: int = 0
    """Target tokens in the kept examples (the tokens the loss averages over, per epoch)."""
    longest: int = 0
    """Tokens in the longest example given, before any truncation."""


def tokenize_examples(examples: Sequence[dict], tokenizer: CodeTokenizer, seq_len: int,
                      overflow: Overflow = "drop") -> tuple[list[TokenizedExample], SFTStats]:
    """Tokenise ``examples`` for rows of ``seq_len`` inputs; too long ones are dropped or truncated."""
    if overflow not in ("drop", "truncate"):
        raise ValueError(f"overflow must be 'drop' or 'truncate', got {overflow!r}")
    if seq_len < 1:
        raise ValueError(f"seq_len must be >= 1, got {seq_len}")
    out: list[TokenizedExample] = []
    stats = SFTStats(examples=len(examples))
    for ex in examples:
        t = tokenize_example(ex, tokenizer)
        stats.longest = max(stats.longest, len(t))
        cut = len(t) > seq_len + 1
        if cut and overflow == "drop":
            stats.dropped += 1
            continue
        if cut:
            t = TokenizedExample(t.ids[: seq_len + 1], t.target[: seq_len + 1])
        # the first token is never predicted (no input before it), so a target there counts for nothing
        if not any(t.target[1:]):
            stats.dropped += 1
            continue
        stats.truncated += int(cut)
        out.append(t)
        stats.kept += 1
        stats.target_tokens += sum(t.target[1:])
    return out, stats


def make_row(example: TokenizedExample, seq_len: int, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """(input_ids, labels), each ``seq_len`` long: labels[i] is the target after input i, or -100."""
    n = len(example) - 1  # input positions that predict a token of the example
    if n > seq_len:
        raise ValueError(f"example of {len(example)} tokens does not fit a row of {seq_len} (+1) tokens")
    ids = np.asarray(example.ids, dtype=np.int64)
    input_ids = np.full(seq_len, pad_id, dtype=np.int64)
    labels = np.full(seq_len, IGNORE_INDEX, dtype=np.int64)
    input_ids[:n] = ids[:-1]
    labels[:n] = np.where(np.asarray(example.target[1:], dtype=bool), ids[1:], IGNORE_INDEX)
    return input_ids, labels


# ----------------------------------------------------------------------------- loader
class SFTLoader:
    """Padded rows of one example each; ``batch(step)`` is a pure function (see the module docstring)."""

    def __init__(self, examples: Sequence[TokenizedExample], batch_size: int, seq_len: int, seed: int,
                 rank: int = 0, world_size: int = 1, pad_id: int = 1,
                 validation: Sequence[TokenizedExample] = ()) -> None:
        if batch_size < 1 or seq_len < 1:
            raise ValueError(f"batch_size and seq_len must be >= 1, got {batch_size} and {seq_len}")
        for name, split in (("training", examples), ("validation", validation)):
            for i, ex in enumerate(split):
                if len(ex) > seq_len + 1:
                    raise ValueError(f"{name} example {i} has {len(ex)} tokens, more than seq_len + 1 = "
                                     f"{seq_len + 1}; tokenize_examples(..., seq_len) drops or truncates it")
        self.examples, self.validation_examples = list(examples), list(validation)
        self.batch_size, self.seq_len, self.seed = batch_size, seq_len, seed
        self.rank, self.world_size, self.pad_id = rank, world_size, pad_id
        self.schedule = BatchSchedule(len(self.examples), batch_size, seed, rank, world_size)
        self.global_batch, self.steps_per_epoch = self.schedule.global_batch, self.schedule.steps_per_epoch
        if self.steps_per_epoch == 0:
            raise SFTDataError(f"{len(self.examples)} training examples are fewer than one global batch "
                             f"({batch_size} x {world_size} ranks)")

    def epoch(self, step: int) -> int:
        return self.schedule.epoch(step)

    def sample_indices(self, step: int) -> np.ndarray:
        """Indices (into the training examples) of this rank's rows at ``step``."""
        return self.schedule.sample_indices(step)

    def _rows(self, examples: Sequence[TokenizedExample]) -> dict[str, torch.Tensor]:
        rows = [make_row(ex, self.seq_len, self.pad_id) for ex in examples]
        return {"input_ids": torch.from_numpy(np.stack([r[0] for r in rows])),
                "labels": torch.from_numpy(np.stack([r[1] for r in rows]))}

    def batch(self, step: int) -> dict[str, torch.Tensor]:
        """``{"input_ids": (B, T), "labels": (B, T)}`` for ``step`` on this rank."""
        return self._rows([self.examples[int(i)] for i in self.sample_indices(step)])

    def validation(self, batch_size: int | None = None) -> Iterator[dict[str, torch.Tensor]]:
        """The validation examples in order, ``batch_size`` a batch (the last may be smaller).

        Batch ``j`` goes to rank ``j % world_size``, so the ranks together see every example once.
        """
        b = batch_size or self.batch_size
        for j, start in enumerate(range(0, len(self.validation_examples), b)):
            if j % self.world_size == self.rank:
                yield self._rows(self.validation_examples[start : start + b])


# ----------------------------------------------------------------------------- MBPP
def _mbpp_pairs(data_dir: str | Path | None, split: Literal["train", "validation"]) -> list[dict]:
    from smallcode.tasks.mbpp import load_mbpp

    # An empty path (a config that names none) means the package's copy, as None does.
    return [{"task_id": t.task_id, "prompt": t.prompt, "completion": t.reference}
            for t in load_mbpp(Path(data_dir) if data_dir else None, split)]


def load_mbpp_train(data_dir: str | Path | None = None) -> list[dict]:
    """MBPP's training split (task ids 601-974, 374 tasks) as prompt/completion pairs.

    ``prompt`` is the evaluation's MBPP prompt: a triple-quoted docstring holding the problem text
    and then the task's asserts, one a line, followed by a newline. ``completion`` is the reference
    code with Windows line ends made plain newlines, ending in one. The data are the package's copy
    of ``mbpp.jsonl``, or ``data_dir/mbpp/mbpp.jsonl`` when given (checked against the pinned sha256
    either way). Each pair also carries its ``task_id``.
    Note: 104 of the 374 references hold one of the evaluation's default stop sequences (all of
    them ``"\\ndef"``: a helper function before or after the one asked for); ``without_stops`` is how
    the fine-tuning stage leaves them out.
    """
    return _mbpp_pairs(data_dir, "train")


def without_stops(examples: list[dict], stops: Sequence[str]) -> tuple[list[dict], list[dict]]:
    """(kept, dropped): ``dropped`` are the examples whose completion holds one of ``stops``.

    The evaluation cuts a generation at the first stop sequence, so a reference that holds one
    (MBPP's two-function solutions hold ``"\\ndef"``) is a program the evaluation could never
    receive whole: training on it teaches the model to write past the stop, and what is cut there
    fails. Such examples are left out of fine-tuning rather than cut (a cut reference is a wrong
    program) or rewritten (no mechanical rewrite keeps every one correct).
    """
    kept, dropped = [], []
    for ex in examples:
        body = ex["completion"].rstrip("\n")
        (dropped if any(s in body for s in stops) else kept).append(ex)
    return kept, dropped


def end_at_code(examples: list[dict]) -> list[dict]:
    """The examples with the whitespace at the end of each completion removed: the eot follows code.

    MBPP's references end in a newline, so a completion ``code + "\n" + eot`` teaches that a line
    end is often the end of the text (one eot per ~60 tokens, against one per file in the corpus).
    Prompts also end in a line end, and a model fine-tuned that way gives up at once: measured on the
    nano recipe, the final model's first-token P(eot) after the fixed sample prompts went from
    0.004-0.18 before fine-tuning to 0.05-0.72 after it, and most sampled completions were empty.
    The evaluation runs a completion with or without its final newline alike.
    """
    return [{**ex, "completion": ex["completion"].rstrip()} for ex in examples]


def load_mbpp_validation(data_dir: str | Path | None = None) -> list[dict]:
    """MBPP's validation split (task ids 511-600, 90 tasks), in the form of ``load_mbpp_train``."""
    return _mbpp_pairs(data_dir, "validation")
