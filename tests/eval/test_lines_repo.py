"""``smallcode eval lines --repo``: context retrieved from an index of the task's package, the task's
own file left out (nothing after the cursor is seen), the mode named in the report; end to end on the
tiny checkpoint."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from factories import make_model  # type: ignore[import-not-found]
from smallcode.cli.main import main as cli_main
from smallcode.eval.lines import LinesSettings, PackageFiles, check_run_dir, complete_line, context_mode, draw_cursors
from smallcode.lsp.context import Budget, retrieval_budget
from smallcode.lsp.models import FimRequest
from smallcode.model.checkpoint import save_checkpoint
from smallcode.retrieval import RepoIndex

FILES = [
    ("pkg/codec.py", 'def encode_record(record, width=8):\n    """Pack a record."""\n    return bytes(width)\n'),
    ("pkg/app.py", "from pkg.codec import encode_record\n\n\ndef main(rows):\n"
                   "    return [encode_record(row, width=16) for row in rows]\n"),
    ("pkg/other.py", "def other(rows):\n    return len(rows)\n"),
]


class Recording:
    """A completion model that answers nothing and keeps the requests."""

    def __init__(self) -> None:
        self.calls = 0
        self.requests: list[FimRequest] = []

    async def complete(self, request: FimRequest, enough: Callable[[str], bool]) -> str:
        self.calls += 1
        self.requests.append(request)
        return ""

    async def close(self) -> None:
        pass


def test_retrieval_leaves_the_task_file_out_and_puts_it_back(monkeypatch: pytest.MonkeyPatch) -> None:
    package = PackageFiles(FILES)
    task = next(t for t in draw_cursors([FILES[1]], n=50) if t.line == 5)  # in the line calling encode_record
    index = package.repo_index()
    held: list[bool] = []
    ask = index.context

    def context(before: str, path: str, budget: Any = None) -> list[tuple[str, str]]:
        held.append(path in index)
        return ask(before, path, budget)

    monkeypatch.setattr(index, "context", context)
    model = Recording()
    row = asyncio.run(complete_line(model, task, LinesSettings(repo=True), package))
    assert held == [False]  # the task's file was out of the index while it was asked
    # an index without the task's file at all, asked the same: the same context files
    alone = RepoIndex()
    for name, text in FILES:
        if name != task.file:
            alone.update(name, text)
    expected = alone.context(task.prefix, task.file, retrieval_budget(Budget(), 0))
    assert list(model.requests[0].extra) == expected
    assert expected and expected[-1][0] == "pkg/codec.py" and "def encode_record" in expected[-1][1]
    assert row["retrieved"] == [p for p, _ in expected] and row["retrieval_ms"] >= 0
    # afterwards the package's index holds the task's file again, as built
    assert index.paths() == sorted(n for n, _ in FILES)
    fresh = RepoIndex()
    for name, text in FILES:
        fresh.update(name, text)
    assert (index.chunks, index.bytes) == (fresh.chunks, fresh.bytes)
    # without --repo nothing is retrieved
    model = Recording()
    row = asyncio.run(complete_line(model, task, LinesSettings(), package))
    assert list(model.requests[0].extra) == [] and "retrieved" not in row


def test_the_context_mode_is_named_and_an_older_run_still_resumes(tmp_path: Path) -> None:
    assert [context_mode(LinesSettings(cross_file=c, repo=r)) for c, r in
            ((False, False), (True, False), (False, True), (True, True))] == [
        "in-file", "cross-file", "retrieval", "cross-file + retrieval"]
    # a run directory from before --repo (no "repo" in its settings) goes on with the default
    old = LinesSettings(n=3).to_dict()
    del old["repo"]
    (tmp_path / "config.json").write_text(json.dumps({"settings": old}))
    (tmp_path / "lines.jsonl").write_text(json.dumps({"task_id": "x"}) + "\n")
    check_run_dir(tmp_path, LinesSettings(n=3))
    with pytest.raises(ValueError, match="repo"):
        check_run_dir(tmp_path, LinesSettings(n=3, repo=True))


@pytest.fixture(scope="module")
def checkpoint(tiny_tokenizer_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("lines-repo-ckpt")
    return save_checkpoint(make_model(), out / "ckpt", tokenizer_file=tiny_tokenizer_dir / "tokenizer.json")


def _rows(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "lines.jsonl").read_text().splitlines() if line.strip()]


def test_a_checkpoint_with_retrieval_end_to_end(checkpoint: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert cli_main(["eval", "lines", "--model", str(checkpoint), "--package", "yaml", "--n", "3", "--repo",
                     "--out", str(out)]) == 0
    report = capsys.readouterr().out
    assert "context: retrieval" in report and "Retrieval (inside the latency above)" in report
    summary = json.loads((out / "summary.json").read_text())
    assert summary["context"] == "retrieval" and summary["all"]["tasks"] == 3
    assert summary["all"]["retrieval_p50_ms"] >= 0
    rows = _rows(out)
    assert any(r["retrieved"] for r in rows)
    for r in rows:
        assert r["extra"] == r["retrieved"]  # no open files in this mode
        assert all(p.startswith("yaml/") and p != r["file"] for p in r["retrieved"])
