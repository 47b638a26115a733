"""What the model sees for one completion: the text around the cursor and snippets of other files.

``build_context(text, offset, ...)`` cuts a document at the cursor into a ``FimContext``:

* the **prefix**: whole lines before the cursor's line, as many as the prefix budget allows, then the
  cursor's line up to the cursor. It opens with one comment line naming the file and its language
  (``# src/app.py (python)``, the comment marker chosen by the file's extension as for context files),
  so a model that saw repository files in training knows what it is writing. The first line kept is
  rounded to a multiple of ``LINE_STEP``: while the user types, the prompt's start stays put and the
  server's prompt cache (the suffix-prefix-middle layout puts the prefix last) keeps matching it.
* the **suffix**: the rest of the cursor's line and whole lines after it, within a smaller budget
  (the budget is prefix-biased: what was written before the cursor says more about what comes next);
* the **extra files**: ``(path, text)`` pairs for the server's file-separator layout (``input_extra``
  of ``/infill``, ``PromptFormat.fim``'s ``extra``): first what was retrieved from the repository
  (``retrieved``, from ``smallcode.retrieval``: definitions of the names used near the cursor and
  similar chunks, sized by ``retrieval_budget``), then one window of lines per other open document,
  around where it was last edited, the most recently edited document last (nearest the cursor's
  file). Retrieved text counts against ``extra_tokens``; the open documents share what it leaves.

Budgets are in tokens, turned into characters with ``chars_per_token``: counting tokens line by line
with the tokenizer would cost more than the model's prompt-cache hit on every keystroke, and an
endpoint's tokenizer is not known here.

Not here: laying the pieces out as tokens (``smallcode.runtime.formats``), cleaning up what the model
returns (``smallcode.lsp.postprocess``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from smallcode.retrieval import RetrievalBudget
from smallcode.tokenizer.code_tokenizer import plain_file_block

LINE_STEP = 32
"""The prefix window starts on a line number that is a multiple of this (prompt-cache stability)."""


@dataclass(frozen=True)
class Budget:
    """How much context one request carries."""

    prefix_tokens: int = 1024
    """Tokens before the cursor (the file header included)."""
    suffix_tokens: int = 256
    """Tokens after the cursor."""
    extra_tokens: int = 512
    """Tokens of other files, all together."""
    extra_files: int = 4
    """Most other files sent."""
    chars_per_token: float = 3.0
    """Characters per token assumed for code (our tokenizer gives 3-4 on source files)."""

    def chars(self, tokens: int) -> int:
        return int(tokens * self.chars_per_token)


@dataclass(frozen=True)
class OtherFile:
    """A document other than the one being completed, as the server last saw it."""

    path: str
    text: str
    edited_line: int | None = None
    """The line of its last edit (None: never edited since it was opened)."""
    edited_at: float = 0.0
    """When it was opened or last edited (monotonic seconds): the order of the extra files."""


@dataclass(frozen=True)
class FimContext:
    prefix: str
    suffix: str
    extra: list[tuple[str, str]] = field(default_factory=list)
    line_prefix: str = ""
    """The cursor's line up to the cursor."""
    line_suffix: str = ""
    """The cursor's line after the cursor (no line ending)."""
    after: str = ""
    """The document after the cursor's line, untrimmed by any budget (what a completion must not repeat)."""


def file_header(path: str, language_id: str) -> str:
    """One comment line naming the file and its language, in the file's own comment syntax."""
    marker = plain_file_block(path, "").split(" ", 1)[0]
    language = f" ({language_id})" if language_id else ""
    return f"{marker} {path}{language}\n"


def _lines_back(lines: list[str], end: int, limit: int) -> int:
    """The first index i such that lines[i:end] fits in ``limit`` characters."""
    used, start = 0, end
    while start > 0 and used + len(lines[start - 1]) <= limit:
        start -= 1
        used += len(lines[start])
    return start


def _lines_forward(lines: list[str], start: int, limit: int) -> int:
    used, end = 0, start
    while end < len(lines) and used + len(lines[end]) <= limit:
        used += len(lines[end])
        end += 1
    return end


def retrieval_budget(budget: Budget, open_files: int) -> RetrievalBudget:
    """What repository retrieval may add to a prompt of ``budget``: all of the extra files' share when no
    other document is open, half of it when ``open_files`` documents share it."""
    chars = budget.chars(budget.extra_tokens)
    return RetrievalBudget(chars=chars // 2 if open_files else chars, files=budget.extra_files)


def build_context(text: str, offset: int, *, path: str, language_id: str = "",
                  others: Sequence[OtherFile] = (), budget: Budget | None = None,
                  retrieved: Sequence[tuple[str, str]] = ()) -> FimContext:
    """The FIM pieces for a cursor at character ``offset`` of ``text`` (see the module docstring);
    ``retrieved``: ``(path, text)`` context files from the repository, laid out before ``others``."""
    budget = budget or Budget()
    if not 0 <= offset <= len(text):
        raise ValueError(f"offset {offset} is outside the document (0..{len(text)})")
    line_start = text.rfind("\n", 0, offset) + 1
    line_end = text.find("\n", offset)
    line_end = len(text) if line_end == -1 else line_end
    line_prefix, line_suffix = text[line_start:offset], text[offset:line_end]

    header = file_header(path, language_id)
    before = text[:line_start].splitlines(keepends=True)
    room = budget.chars(budget.prefix_tokens) - len(header) - len(line_prefix)
    first = _lines_back(before, len(before), max(0, room))
    if first > 0:  # rounded up, so that it moves in steps of LINE_STEP lines as the prefix grows
        first = min(len(before), -(-first // LINE_STEP) * LINE_STEP)
    prefix = header + "".join(before[first:]) + line_prefix

    after_text = text[line_end:]
    after = after_text.splitlines(keepends=True)
    room = budget.chars(budget.suffix_tokens) - len(line_suffix)
    suffix = line_suffix + "".join(after[:_lines_forward(after, 0, max(0, room))])

    room = budget.chars(budget.extra_tokens) - sum(len(t) for _, t in retrieved)
    extra = [(p, t) for p, t in retrieved if t] + _extra_files(others, budget, max(0, room))
    return FimContext(prefix, suffix, extra, line_prefix, line_suffix, after_text)


def _extra_files(others: Sequence[OtherFile], budget: Budget, room: int) -> list[tuple[str, str]]:
    chosen = sorted(others, key=lambda o: o.edited_at)[-budget.extra_files:] if budget.extra_files else []
    if not chosen:
        return []
    each = room // len(chosen)
    out = []
    for other in chosen:
        lines = other.text.splitlines(keepends=True)
        if not lines:
            continue
        # A window centred on the last edit (or the top of a file never edited), grown to fill the share.
        centre = min(other.edited_line or 0, len(lines) - 1)
        start = end = centre
        used = 0
        while True:
            grew = False
            if end < len(lines) and used + len(lines[end]) <= each:
                used += len(lines[end])
                end += 1
                grew = True
            if start > 0 and used + len(lines[start - 1]) <= each:
                start -= 1
                used += len(lines[start])
                grew = True
            if not grew:
                break
        if end > start:
            out.append((other.path, "".join(lines[start:end])))
    return out
