"""What a completion may show: the model's raw text cut to what fits at the cursor.

``shape(text, ctx)`` returns a ``Shaped`` (the text to show, and whether a rule cut it, so that a
streaming caller can stop the model there). The rules, in order:

1. **Mode.** Inside a line (non-blank text right of the cursor) a completion is one line; at the end
   of a line or on an empty one it may span lines (up to ``max_lines``).
2. **Block end.** A multi-line completion stops before the first line that dedents below the
   cursor's block, and before a line at the block's own indentation that follows a blank line (the
   next paragraph: another function, another statement group).
3. **Suffix repeats.** A line equal, indentation included, to one of the next ``REPEAT_LINES``
   non-blank lines after the cursor ends the completion there (the model has reached code that is
   already written); inside a line, text that ends with the rest of the line loses that copy.
4. **Nothing new.** Only whitespace, or only what already follows the cursor: nothing is shown.

``word_start(line_prefix)`` gives the column where the replaced text starts when the cursor is in or
just after a word: the item then replaces the typed part of the word with itself plus the
completion, so clients that filter items against the text in their range keep showing it.
"""

from __future__ import annotations

from dataclasses import dataclass

from smallcode.lsp.context import FimContext

MAX_LINES = 16
"""Most lines of one multi-line completion."""
REPEAT_LINES = 3
"""A completion line equal (indentation included) to one of this many code lines below the cursor ends it."""


@dataclass(frozen=True)
class Shaped:
    text: str
    """What to insert at the cursor ("" when nothing is worth showing)."""
    done: bool
    """A rule cut the text: more tokens from the model cannot change the result."""


def multiline(ctx: FimContext) -> bool:
    """Whether a completion at this cursor may span lines (end of a line, or an empty line)."""
    return not ctx.line_suffix.strip()


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" \t"))


def _next_code_lines(after: str, n: int = REPEAT_LINES) -> set[str]:
    """The first ``n`` non-blank lines after the cursor's line, indentation kept, trailing blanks not."""
    out: list[str] = []
    for line in after.splitlines():
        if line.strip():
            out.append(line.rstrip())
            if len(out) == n:
                break
    return set(out)


def shape(text: str, ctx: FimContext, *, final: bool = True, max_lines: int = MAX_LINES) -> Shaped:
    """The part of ``text`` (what the model wrote at the cursor) worth showing (see the module docstring).
    ``final=False`` while the model is still writing: its last line may grow, so it is not judged yet."""
    if not multiline(ctx):
        return _single_line(text, ctx, final)
    done = False
    lines = text.split("\n")
    # The indentation of the cursor's block: the cursor's own line, as it will read with the completion.
    block = _indent(ctx.line_prefix + lines[0]) if (ctx.line_prefix + lines[0]).strip() else len(ctx.line_prefix)
    repeat = _next_code_lines(ctx.after)
    kept: list[str] = []
    blank_before = False
    for i, line in enumerate(lines):
        last = i == len(lines) - 1 and not final  # may still grow: judged once it is complete
        if i > 0 and line.strip() and not last:
            if _indent(line) < block or (blank_before and _indent(line) <= block):
                done = True
                break
        if i > 0 and not last and line.rstrip() in repeat:
            done = True
            break
        if i == 0 and not last and not ctx.line_prefix.strip() and (ctx.line_prefix + line).rstrip() in repeat:
            return Shaped("", True)  # the whole first line is the code below
        if len(kept) == max_lines:
            done = True
            break
        kept.append(line)
        blank_before = not line.strip()
    out = "\n".join(kept)
    if done or final:
        out = out.rstrip()
    return _nothing_new(out, ctx, done, final)


def _single_line(text: str, ctx: FimContext, final: bool) -> Shaped:
    cut = text.find("\n")
    done = cut != -1
    line = text[:cut] if done else text
    rest = ctx.line_suffix.strip()
    if rest and line.rstrip().endswith(rest):
        line = line.rstrip()[: -len(rest)]
        done = True
    return _nothing_new(line.rstrip() if done or final else line, ctx, done, final)


def _nothing_new(text: str, ctx: FimContext, done: bool, final: bool) -> Shaped:
    if not text.strip():
        return Shaped("", done)
    following = (ctx.line_suffix + ctx.after).strip()
    if (done or final) and following.startswith(text.strip()):
        return Shaped("", True)
    return Shaped(text, done)


def word_start(line_prefix: str) -> int:
    """The column (in characters) where the identifier the cursor is in, or just after, starts."""
    i = len(line_prefix)
    while i > 0 and (line_prefix[i - 1].isalnum() or line_prefix[i - 1] == "_"):
        i -= 1
    return i
