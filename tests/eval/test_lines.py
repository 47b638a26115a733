"""``smallcode eval lines``: each metric against a by-hand computation, the cursor draw, the held-out
split, and the command end to end on the tiny checkpoint and on a fake completion server."""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import Request  # at module level: FastAPI resolves the handler's annotation here

from factories import make_model  # type: ignore[import-not-found]
from smallcode.cli.main import main as cli_main
from smallcode.eval.heldout import (
    HELD_OUT_PACKAGES,
    REPORT_PACKAGES,
    TUNE_PACKAGES,
    HeldOutError,
    held_out_set,
)
from smallcode.eval.lines import (
    AUTO_MAX_TOKENS,
    LinesSettings,
    PackageFiles,
    Saved,
    candidate_lines,
    chars_saved,
    draw_cursors,
    edit_similarity,
    exact_match,
    held_out_tasks,
    score,
)
from smallcode.lsp.context import build_context
from smallcode.lsp.postprocess import shape
from smallcode.model.checkpoint import save_checkpoint

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "serve"))
from app_helpers import serve  # type: ignore[import-not-found]  # noqa: E402


def levenshtein(a: str, b: str) -> int:
    """The textbook dynamic programme (the reference the library's figure is checked against)."""
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, cb in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (ca != cb))
    return row[-1]


# ------------------------------------------------------------------------------------ metrics
def test_exact_match_compares_the_first_line_without_trailing_blanks() -> None:
    assert exact_match("foo(x)  \n    bar()", "foo(x)")
    assert exact_match("foo(x)", "foo(x)   ")
    assert not exact_match("foo(y)", "foo(x)")
    assert not exact_match(" foo(x)", "foo(x)")  # leading whitespace is typed text
    assert not exact_match("", "x")


@pytest.mark.parametrize(("got", "want"), [("kitten", "sitting"), ("return x + 1", "return x + 2"),
                                           ("", ""), ("abc", ""), ("", "abc"), ("self.x = y\nnext", "self.x = z"),
                                           ("for i in range(n):", "for j in range(m):")])
def test_edit_similarity_is_one_minus_levenshtein_over_the_longer(got: str, want: str) -> None:
    a = got.split("\n")[0]
    by_hand = 1.0 if not a and not want else 1 - levenshtein(a, want) / max(len(a), len(want))
    assert edit_similarity(got, want) == pytest.approx(by_hand)
    assert edit_similarity("kitten", "sitting") == pytest.approx(1 - 3 / 7)


def test_chars_saved_accepts_whole_or_word_by_word() -> None:
    assert chars_saved("return x + 2", "return x + 2") == Saved(12, 1)  # Tab once
    # word by word while the words agree: "return", " x", " +" (10 characters, 3 keys)
    assert chars_saved("return x + 1", "return x + 2") == Saved(10, 3)
    assert chars_saved("foo_bar(x)", "foo_baz(x)") == Saved(0, 0)  # a word is taken whole or not at all
    assert chars_saved("foo(x)  # note", "foo(x)") == Saved(6, 4)  # "foo", "(", "x", ")"
    assert chars_saved("", "abc") == Saved(0, 0)
    assert chars_saved("self.items[key]\nmore", "self.items[k]") == Saved(len("self.items["), 4)  # self . items [


def test_score_sums_by_hand() -> None:
    rows = [{"target": "abcd", "completion": "abcd", "exact": True, "edit_sim": 1.0, "saved": 4, "accepts": 1,
             "latency_ms": 10.0},
            {"target": "ab cdef", "completion": "ab x", "exact": False, "edit_sim": 0.5, "saved": 2, "accepts": 1,
             "latency_ms": 30.0},
            {"target": "xyz", "completion": "", "exact": False, "edit_sim": 0.0, "saved": 0, "accepts": 0,
             "latency_ms": 20.0}]
    s = score(rows)
    assert s["tasks"] == 3 and s["exact_match"] == pytest.approx(1 / 3)
    assert s["edit_similarity"] == pytest.approx(0.5)
    assert s["chars_saved_per_100"] == pytest.approx(100 * 6 / 14, abs=1e-4)
    assert s["keys_saved_per_100"] == pytest.approx(100 * 4 / 14, abs=1e-4)
    assert s["shown"] == pytest.approx(2 / 3)
    assert s["latency_p50_ms"] == 20.0 and s["latency_p95_ms"] == pytest.approx(29.0)


# ------------------------------------------------------------------------------------ cursors
SOURCE = '''"""Module docstring
spanning lines."""
import os

# a comment
x = 1  # trailing comment


def f(a, b):
    """Doc."""
    s = """text
still text
"""
    return a + b
'''


def test_candidate_lines_skip_blanks_comments_and_strings() -> None:
    lines = SOURCE.split("\n")
    got = [lines[i] for i in candidate_lines(SOURCE)]
    assert got == ["import os", "x = 1  # trailing comment", "def f(a, b):", '    s = """text', "    return a + b"]


def _check_task(t: Any, text: str) -> None:
    line = text.split("\n")[t.line - 1]
    rest = line[t.col:]
    assert t.prefix + rest + t.suffix == text  # the file is the prefix, the rest of the line and the suffix
    assert rest.rstrip() == t.target and t.target
    assert t.suffix == "" or t.suffix.startswith("\n")
    indent = len(line) - len(line.lstrip())
    assert line.strip() and not line.strip().startswith("#")
    if t.kind == "start":
        assert t.col == indent
    else:
        assert indent < t.col < len(line.rstrip())


def test_the_cursor_draw_is_reproducible_and_lands_on_code() -> None:
    held = held_out_set(["yaml", "packaging"], bytes_per_package=12_000)
    files = list(zip(held.names, held.texts, strict=True))
    tasks = draw_cursors(files, 150, seed=0)
    assert len(tasks) == 150 == len({t.task_id for t in tasks})
    assert draw_cursors(list(reversed(files)), 150, seed=0) == tasks  # file order does not matter
    assert draw_cursors(files, 150, seed=1) != tasks
    # a smaller draw is the start of the same ranking: a subset
    assert set(draw_cursors(files, 40, seed=0)) <= set(tasks)
    texts = dict(files)
    for t in tasks:
        _check_task(t, texts[t.file])
        assert t.line - 1 in candidate_lines(texts[t.file])
    kinds = Counter(t.kind for t in tasks)
    assert kinds["mid"] > 30 and kinds["start"] > 30
    assert [(t.file, t.line) for t in tasks] == sorted((t.file, t.line) for t in tasks)
    # every candidate of a small file once the draw asks for more than there are
    small = draw_cursors([("m.py", SOURCE)], 100)
    assert [t.line - 1 for t in small] == candidate_lines(SOURCE)
    for t in small:
        _check_task(t, SOURCE)


def test_cross_file_context_prefers_files_sharing_identifiers() -> None:
    files = [("p/a.py", "from p.b import parse_yaml\n\n\ndef load_config(path):\n    return parse_yaml(path)\n"),
             ("p/b.py", "import os\n\n\n" + "x = 1\n" * 5 + "def parse_yaml(text):\n    return text\n"),
             ("p/c.py", "print('unrelated')\n"),
             ("p/d.py", "def other():\n    return parse_yaml\n")]
    (task,) = [t for t in draw_cursors(files[:1], 10) if t.line == 5]
    related = PackageFiles(files).related(task, 4)
    # c shares nothing; b and d share parse_yaml (a tie, broken by name: b best, so last)
    assert [o.path for o in related] == ["p/d.py", "p/b.py"]
    assert related[1].edited_line == 8  # centred on its line naming parse_yaml
    ctx = build_context(task.prefix + task.suffix, len(task.prefix), path=task.file, others=related)
    assert [p for p, _ in ctx.extra] == ["p/d.py", "p/b.py"]


# ------------------------------------------------------------------------------------ the split
def test_the_split_halves_the_held_out_packages() -> None:
    assert set(TUNE_PACKAGES).isdisjoint(REPORT_PACKAGES)
    assert set(TUNE_PACKAGES) | set(REPORT_PACKAGES) == set(HELD_OUT_PACKAGES)
    tune, report = held_out_set(split="tune"), held_out_set(split="report")
    assert {n.split("/")[0] for n in tune.names} == set(TUNE_PACKAGES)
    assert {n.split("/")[0] for n in report.names} == set(REPORT_PACKAGES)
    whole = held_out_set()
    assert held_out_set(split="all") == whole
    assert set(tune.names) | set(report.names) == set(whole.names)
    with pytest.raises(HeldOutError, match="unknown held-out split 'test'"):
        held_out_set(split="test")


def test_the_default_matches_the_language_servers_typing_limit() -> None:
    from smallcode.lsp.server import Settings

    assert AUTO_MAX_TOKENS == Settings().auto_max_tokens


# ------------------------------------------------------------------------------------ end to end
@pytest.fixture(scope="module")
def checkpoint(tiny_tokenizer_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("lines-ckpt")
    return save_checkpoint(make_model(), out / "ckpt", tokenizer_file=tiny_tokenizer_dir / "tokenizer.json")


def _error(capsys: pytest.CaptureFixture[str]) -> str:
    """The one error line of a command's stderr (the rest is the progress bar's)."""
    lines = [line for line in re.split(r"[\r\n]", capsys.readouterr().err) if line.startswith("error")]
    assert len(lines) == 1, lines
    return lines[0]


def _rows(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "lines.jsonl").read_text().splitlines() if line.strip()]


def test_a_checkpoint_end_to_end_is_the_engines_greedy_completion(checkpoint: Path, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from smallcode.runtime import Engine, SamplingParams
    from smallcode.runtime.formats import prompt_format

    out = tmp_path / "run"
    args = ["eval", "lines", "--model", str(checkpoint), "--package", "yaml", "--n", "4", "--out", str(out)]
    assert cli_main(args) == 0
    report = capsys.readouterr().out
    assert "split: **report**" in report and "in-file" in report
    rows = _rows(out)
    settings = LinesSettings(n=4, packages=["yaml"])
    tasks, _, _ = held_out_tasks(settings)
    assert [r["task_id"] for r in rows] == [t.task_id for t in tasks]
    engine = Engine.from_checkpoint(checkpoint)
    fmt = prompt_format(engine.tokenizer)
    for t, r in zip(tasks, rows, strict=True):
        ctx = build_context(t.prefix + t.suffix, len(t.prefix), path=t.file, language_id="python")
        raw = engine.generate_ids([fmt.fim(ctx.prefix, ctx.suffix, [])],
                                  SamplingParams(max_tokens=AUTO_MAX_TOKENS))[0].text
        assert r["completion"] == shape(raw, ctx).text
        assert r["exact"] == exact_match(r["completion"], t.target)
        assert r["latency_ms"] > 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["split"] == "report" and summary["all"]["tasks"] == 4

    # cross-file: other files of yaml as extra files, in their own run directory
    out2 = tmp_path / "cross"
    assert cli_main([*args[:-1], str(out2), "--cross-file"]) == 0
    assert "cross-file" in capsys.readouterr().out
    cross = _rows(out2)
    assert any(r["extra"] for r in cross)
    assert all(p.startswith("yaml/") and p != r["file"] for r in cross for p in r["extra"])


class FakeServer:
    """llama.cpp's /infill answering a known completion per prompt; it can be told to fail."""

    def __init__(self, answers: dict[str, str]) -> None:
        from fastapi import FastAPI
        from fastapi.responses import JSONResponse

        self.answers = answers
        self.asked: list[str] = []
        self.fail_after: int | None = None
        app = FastAPI()

        @app.post("/infill")
        async def infill(request: Request) -> Any:
            body = await request.json()
            if self.fail_after is not None and len(self.asked) >= self.fail_after:
                return JSONResponse({"error": {"message": "no more"}}, status_code=400)
            self.asked.append(body["input_prefix"])
            return {"content": self.answers.get(body["input_prefix"], ""), "stop": True}

        self.app = app


@pytest.fixture(scope="module")
def fake() -> Iterator[tuple[FakeServer, str, list[Any]]]:
    tasks, _, _ = held_out_tasks(LinesSettings(n=9, packages=["packaging"]))
    answers: dict[str, str] = {}
    for i, t in enumerate(tasks):
        ctx = build_context(t.prefix + t.suffix, len(t.prefix), path=t.file, language_id="python")
        first = re.match(r"\s*(?:\w+|[^\w\s]+)", t.target).group()  # type: ignore[union-attr]
        answers[ctx.prefix] = [t.target, first + " \u00a7wrong", ""][i % 3]
    server = FakeServer(answers)
    with serve(server.app) as url:
        yield server, url, tasks


def test_a_fake_endpoint_gives_known_metrics(fake: tuple[FakeServer, str, list[Any]], tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    server, url, tasks = fake
    out = tmp_path / "run"
    assert cli_main(["eval", "lines", "--endpoint", url, "--package", "packaging", "--n", "9", "--out",
                     str(out)]) == 0
    rows = {r["task_id"]: r for r in _rows(out)}
    typed = saved = keys = 0
    for i, t in enumerate(tasks):
        r = rows[t.task_id]
        first = re.match(r"\s*(?:\w+|[^\w\s]+)", t.target).group()  # type: ignore[union-attr]
        given = [t.target, first + " \u00a7wrong", ""][i % 3]
        assert r["completion"] == given
        assert r["exact"] == (i % 3 == 0)
        by_hand = 1.0 if i % 3 == 0 else 0.0 if i % 3 == 2 else 1 - levenshtein(given, t.target) / max(
            len(given), len(t.target))
        assert r["edit_sim"] == pytest.approx(by_hand, abs=1e-6)
        want_saved = [len(t.target), len(first), 0][i % 3]
        assert r["saved"] == want_saved
        typed += len(t.target)
        saved += want_saved
        keys += want_saved - [1, 1, 0][i % 3]
    summary = json.loads((out / "summary.json").read_text())["all"]
    assert summary["exact_match"] == pytest.approx(3 / 9)
    assert summary["chars_saved_per_100"] == pytest.approx(100 * saved / typed, abs=1e-4)
    assert summary["keys_saved_per_100"] == pytest.approx(100 * keys / typed, abs=1e-4)
    assert summary["shown"] == pytest.approx(6 / 9)
    assert "split: **report** (packaging)" in capsys.readouterr().out


def test_a_run_resumes_without_redoing_a_task(fake: tuple[FakeServer, str, list[Any]], tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    server, url, tasks = fake
    out = tmp_path / "run"
    args = ["eval", "lines", "--endpoint", url, "--package", "packaging", "--n", "9", "--out", str(out)]
    server.asked.clear()
    server.fail_after = 5  # the warm-up request, then four tasks
    try:
        assert cli_main(args) == 1
    finally:
        server.fail_after = None
    err = _error(capsys)
    assert "4 tasks finished" in err
    assert len(_rows(out)) == 4
    server.asked.clear()
    assert cli_main(args) == 0
    assert len(server.asked) == 1 + 5  # a warm-up, then the five tasks left
    ids = [r["task_id"] for r in _rows(out)]
    assert sorted(ids) == sorted(t.task_id for t in tasks) and len(set(ids)) == 9
    server.asked.clear()
    assert cli_main(args) == 0 and server.asked == []  # all done: nothing asked
    capsys.readouterr()
    # the same directory with other settings: one line, nothing asked
    assert cli_main([*args[:-4], "--n", "5", "--out", str(out)]) == 1
    assert "other settings (n: 9)" in _error(capsys) and server.asked == []


def test_bad_input_is_one_line(tmp_path: Path, checkpoint: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    out = str(tmp_path / "x")
    assert cli_main(["eval", "lines", "--out", out]) == 2
    assert "exactly one of --model, --endpoint" in capsys.readouterr().err
    assert cli_main(["eval", "lines", "--endpoint", "http://127.0.0.1:9", "--no-stop-loops", "--out", out]) == 2
    capsys.readouterr()
    assert cli_main(["eval", "lines", "--model", str(checkpoint), "--package", "click", "--out", out]) == 1
    assert _error(capsys) == "error: package 'click' is not in the 'report' split (jinja2, packaging, rich, yaml)"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert cli_main(["eval", "lines", "--endpoint", f"http://127.0.0.1:{port}", "--package", "yaml", "--n", "2",
                     "--out", out]) == 1
    assert "cannot reach the endpoint" in _error(capsys)


def test_stop_loops_reaches_the_local_models_sampling(checkpoint: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from smallcode.runtime.sampling import SamplingParams
    from smallcode.runtime.scheduler import Scheduler

    seen: list[Any] = []
    submit = Scheduler.submit

    def spy(self: Scheduler, ids: list[int], params: SamplingParams, **kw: Any) -> Any:
        seen.append(params.stop_loops)  # type: ignore[attr-defined]
        return submit(self, ids, params, **kw)

    monkeypatch.setattr(Scheduler, "submit", spy)
    for flag, want in (("--no-stop-loops", False), ("--stop-loops", True)):
        seen.clear()
        args = ["eval", "lines", "--model", str(checkpoint), "--package", "yaml", "--n", "1", flag,
                "--out", str(tmp_path / flag)]
        assert cli_main(args) == 0
        assert seen and set(seen) == {want}


def test_the_budget_fits_a_small_model() -> None:
    from smallcode.eval.lines import fit_budget
    from smallcode.lsp.context import Budget

    default = Budget()
    assert fit_budget(default, None, 16) == default and fit_budget(default, 32768, 16) == default
    small = fit_budget(default, 128, 16)  # (128 - 16) * 3/4 = 84 tokens for 1792 asked
    assert (small.prefix_tokens, small.suffix_tokens, small.extra_tokens) == (48, 12, 24)


def test_a_model_with_a_short_context_gets_prompts_that_fit(tiny_tokenizer_dir: Path, tmp_path: Path) -> None:
    """Full attention over 128 positions: the language server's default context would not fit; the
    run asks with a budget cut to the model (and the tokenizer's own characters per token)."""
    tok = tiny_tokenizer_dir / "tokenizer.json"
    ckpt = save_checkpoint(make_model(window=128), tmp_path / "short", tokenizer_file=tok)
    assert cli_main(["eval", "lines", "--model", str(ckpt), "--package", "yaml", "--n", "4",
                     "--out", str(tmp_path / "run")]) == 0
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["all"]["tasks"] == 4
