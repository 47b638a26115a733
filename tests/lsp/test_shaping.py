"""The prompt's pieces (``lsp.context``), what a completion may show (``lsp.postprocess``) and the
adaptive debounce (``lsp.debounce``), on plain text and made-up clocks."""

from __future__ import annotations

import pytest

from smallcode.lsp.context import LINE_STEP, Budget, OtherFile, build_context, file_header
from smallcode.lsp.debounce import Debounce
from smallcode.lsp.feedback import append, read, summarize
from smallcode.lsp.postprocess import multiline, shape, word_start

SOURCE = ("def area(w, h):\n    if w < 0:\n        raise ValueError(w)\n    result = w * h\n    return result\n\n\n"
          "def main():\n    print(area(2, 3))\n")


def ctx_at(marker: str, text: str = SOURCE, **kw: object):  # the cursor where ``marker`` ends
    return build_context(text, text.index(marker) + len(marker), path="geo.py", language_id="python", **kw)


def test_context_pieces_and_header() -> None:
    ctx = ctx_at("    result = ")
    assert ctx.prefix == "# geo.py (python)\n" + SOURCE[: SOURCE.index("    result = ") + len("    result = ")]
    assert ctx.suffix.startswith("w * h\n    return result\n") and ctx.line_prefix == "    result = "
    assert ctx.line_suffix == "w * h" and ctx.after.startswith("\n    return result")
    assert file_header("src/app.ts", "typescript") == "// src/app.ts (typescript)\n"


def test_context_budget_is_prefix_biased_whole_lines_and_steps() -> None:
    text = "".join(f"x{i} = {i}\n" for i in range(400))
    offset = text.index("x300 = ")
    ctx = build_context(text, offset, path="n.py", budget=Budget(prefix_tokens=100, suffix_tokens=20))
    body = ctx.prefix.split("\n", 1)[1]
    first = int(body.split(" ", 1)[0][1:])
    assert first % LINE_STEP == 0 and len(ctx.prefix) <= 300  # whole lines, window start on a step
    assert len(ctx.suffix) <= 60 and ctx.suffix.endswith("\n")  # whole lines after the cursor's line
    assert len(ctx.prefix) > len(ctx.suffix)
    # One more character typed: the prompt's start does not move.
    again = build_context(text[:offset] + "1" + text[offset:], offset + 1, path="n.py",
                          budget=Budget(prefix_tokens=100, suffix_tokens=20))
    assert again.prefix.startswith(ctx.prefix)


def test_extra_files_newest_last_around_the_edit() -> None:
    big = "".join(f"line{i}\n" for i in range(500))
    others = [OtherFile("b.py", big, edited_line=250, edited_at=2.0), OtherFile("a.py", "A = 1\n", edited_at=1.0)]
    ctx = ctx_at("return ", others=others, budget=Budget(extra_tokens=100))
    assert [p for p, _ in ctx.extra] == ["a.py", "b.py"]
    snippet = ctx.extra[1][1]
    assert "line250\n" in snippet and len(snippet) <= 150 and "line0\n" not in snippet


def test_inside_a_line_one_line_without_the_rest_of_the_line() -> None:
    ctx = ctx_at("raise ValueError(w")
    assert not multiline(ctx) and ctx.line_suffix == ")"
    assert shape(" * 2)\n    more", ctx).text == " * 2"  # ")" already follows the cursor
    assert shape("f'bad {w}'", ctx, final=False).done is False
    assert shape("only\nfirst", ctx).text == "only"
    assert shape(")", ctx).text == ""  # nothing but the suffix again


def test_end_of_line_block_by_indentation_and_no_suffix_repeat() -> None:
    ctx = ctx_at("    if w < 0:")
    assert multiline(ctx)
    text = "\n        w = -w\n        warn(w)\n    result = w * h\n    return result"
    out = shape(text, ctx)
    assert out.text == "\n        w = -w\n        warn(w)" and out.done  # "result = w * h" is already below
    braces = build_context("if (x) {\n}\n", len("if (x) {"), path="a.c")
    body = "\n  y();\n  if (z) {\n    w();\n  }"
    assert shape(body + "\n}\nmore();", braces).text == body  # the inner brace stays, the outer one is below
    dedent = ctx_at("    return result")
    assert shape("  # done\n\n\ndef other():\n    pass", dedent).text == "  # done"
    assert shape("   \n  ", dedent).text == ""


def test_multiline_paragraph_and_line_cap() -> None:
    empty = build_context("def f():\n    \n", len("def f():\n    "), path="f.py")
    out = shape("a = 1\n    b = 2\n\n    c = 3", empty)
    assert out.text == "a = 1\n    b = 2" and out.done
    many = shape("\n    ".join(f"x{i} = {i}" for i in range(40)), empty, max_lines=5)
    assert many.text.count("\n") == 4 and many.done
    partial = shape("a = 1\n    retu", empty, final=False)  # the last line may still grow
    assert not partial.done


def test_word_start() -> None:
    assert word_start("    return tot") == len("    return ")
    assert word_start("f(x, ") == 5 and word_start("") == 0 and word_start("a_b9") == 0


def test_debounce_waits_only_when_typing_outruns_the_model() -> None:
    d = Debounce(min_s=0.03, max_s=0.25)
    assert d.wait(0.0) == 0.0  # nothing typed yet
    for t in (0.0, 0.08, 0.16, 0.24):
        d.edited(t)
    d.answered(0.2)  # a slow model: the next key would supersede it
    wait = d.wait(0.24)
    assert wait == pytest.approx(1.5 * d.gap_s)
    assert d.wait(0.24 + wait) == 0.0  # a pause fires at once
    assert d.wait(0.24, invoked=True) == 0.0
    d.answered(0.01)
    d.answered(0.01)
    d.answered(0.01)
    d.answered(0.01)
    assert d.answer_s < d.gap_s and d.wait(0.24) == 0.0  # a fast model: no wait
    d.edited(5.0)  # after a pause the gap average is untouched
    assert d.gap_s == pytest.approx(0.08)
    slow = d.answer_s = 0.5
    d.superseded()  # superseded while waiting: the old estimate counts for less
    assert d.answer_s < slow


def test_debounce_first_and_machine_fast_edits_wait() -> None:
    d = Debounce(min_s=0.03, max_s=0.25)
    d.edited(0.0)
    assert d.wait(0.0) == pytest.approx(0.045)  # the first edit seen: a burst may follow
    for t in (0.001, 0.002, 0.003):
        d.edited(t)
    assert d.wait(0.003) == pytest.approx(0.03)  # edits faster than min_s wait, even for an untimed model


def test_feedback_log_and_summary(tmp_path) -> None:
    log = tmp_path / "sub" / "log.jsonl"
    for event in ({"event": "served", "latency_ms": 40.0}, {"event": "served", "latency_ms": 60.0},
                  {"event": "shown"}, {"event": "shown"}, {"event": "accepted", "chars": 12}, {"event": "dismissed"}):
        append(log, event)
    with open(log, "a") as f:
        f.write('{"event": "accep')  # a torn last line is skipped
    summary = summarize(read(log))
    assert summary["served"] == 2 and summary["accepted"] == 1 and summary["acceptance_rate"] == 0.5
    assert summary["accepted_chars"] == 12 and summary["latency_ms"]["p50"] in (40.0, 60.0)
    with pytest.raises(ValueError, match="unknown feedback event"):
        append(log, {"event": "clicked"})
