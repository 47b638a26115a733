"""Defect 3: benchmark text and the repo suite's modules are kept out of the prepared shards.

The benchmark texts and the held-out module names are given explicitly here; the defaults (from
``smallcode.tasks``) are looked up in one place each and are not what these tests are about.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from smallcode import corpus
from smallcode.data import PrepareConfig, prepare
from smallcode.data.decontaminate import ContaminationIndex, words
from smallcode.data.shards import REMOVED_FILE
from smallcode.fileio import read_jsonl
from smallcode.tokenizer import CodeTokenizer

# A HumanEval-like task: prompt, reference solution and test, as one benchmark text.
REFERENCE = '''
def running_maximum(numbers: list[int]) -> list[int]:
    """Return the list of maxima of every prefix of numbers.
    >>> running_maximum([1, 3, 2, 5])
    [1, 3, 3, 5]
    """
    result, best = [], None
    for value in numbers:
        best = value if best is None or value > best else best
        result.append(best)
    return result


def check(candidate):
    assert candidate([1, 3, 2, 5]) == [1, 3, 3, 5]
    assert candidate([]) == []
'''

# The same solution pasted into a training file, re-indented and re-spaced.
COPY = '''"""Helpers somebody copied from a benchmark."""

import os


def running_maximum(numbers):
  result,best=[],None
  for value in numbers:
    best = value if best is None or value>best else best
    result.append( best )
  return result
'''

FILLER = [f"w{i}" for i in range(40)]  # distinct words, none of them in a benchmark


def _shared_run(n: int) -> str:
    """A module that shares exactly ``n`` consecutive words with :data:`REFERENCE`."""
    run = words(REFERENCE)[20 : 20 + n]
    return f"# {' '.join(FILLER[:20])}\nx = '{' '.join(run)}'\n# {' '.join(FILLER[20:])}\n"


def _removed(out: Path) -> list[dict]:
    return read_jsonl(out / REMOVED_FILE)


def test_contamination_index_counts_words_not_layout() -> None:
    index = ContaminationIndex({"HumanEval/999": REFERENCE}, 13)
    hit = index.match(COPY)
    assert hit is not None and hit.reference == "HumanEval/999"
    assert hit.ngram.split() == words(hit.ngram) and len(hit.ngram.split()) == 13
    assert index.match(_shared_run(13)) is not None
    assert index.match(_shared_run(12)) is None
    # A run of numbers only is no evidence of copying.
    numbers = ", ".join(str(i) for i in range(20))
    assert ContaminationIndex({"t": f"assert f() == [{numbers}]"}, 13).match(f"x = ({numbers})") is None
    assert ContaminationIndex({}, 13).match(COPY) is None


def test_prepare_drops_a_copied_solution_and_names_the_task(
    small_corpus: Path, tmp_path: Path, tiny_tokenizer: CodeTokenizer, fast_config: PrepareConfig
) -> None:
    extra = small_corpus / "extra"
    extra.mkdir()
    (extra / "copied.py").write_text(COPY)
    (extra / "twelve.py").write_text(_shared_run(12))
    (extra / "thirteen.py").write_text(_shared_run(13))
    refs = {"HumanEval/0": "def unrelated(): pass\n", "HumanEval/999": REFERENCE}
    out = tmp_path / "out"
    summary = prepare([small_corpus], tiny_tokenizer, out, fast_config, progress=False, references=refs)
    assert summary["dropped"]["decontaminated"] == 2
    assert summary["kept"] == 31, "the 30 modules and the file sharing only 12 words"
    assert summary["held_out"] == 0, "an explicit corpus is taken as given"
    removed = _removed(out)
    assert [(r["source"], r["reason"], r["match"]) for r in removed] == [
        (str(extra / "copied.py"), "decontaminated", "HumanEval/999"),
        (str(extra / "thirteen.py"), "decontaminated", "HumanEval/999"),
    ]
    sources = {
        m["source"]
        for split in ("train", "validation")
        for shard in json.loads((out / "index.json").read_text())["splits"][split]["shards"]
        for m in json.loads((out / f"{shard['name']}.json").read_text())["sources"]
    }
    assert str(extra / "twelve.py") in sources and str(extra / "copied.py") not in sources
    # Worker processes see the same index.
    two = fast_config.replace(workers=2)
    assert prepare([small_corpus], tiny_tokenizer, tmp_path / "two", two, progress=False, references=refs)[
        "dropped"
    ]["decontaminated"] == 2
    assert _removed(tmp_path / "two") == removed

    # Switched off, nothing is checked (and no benchmark text is looked up).
    off = fast_config.replace(decontaminate=False)
    summary = prepare([small_corpus], tiny_tokenizer, tmp_path / "off", off, progress=False)
    assert summary["dropped"]["decontaminated"] == 0 and summary["kept"] == 33
    assert _removed(tmp_path / "off") == []


@pytest.fixture
def fake_stdlib(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A small stand-in for the embedded corpus (the real one is too big for a unit test)."""
    root = tmp_path / "stdlib"
    for rel in ["textwrap.py", "json/__init__.py", "json/decoder.py", "json/encoder.py", "glob.py"]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(f"# {rel}\n" + "\n".join(f"v_{i} = '{rel} {i}'" for i in range(30)) + "\n")
    monkeypatch.setattr(corpus, "default_corpus", lambda: [root])
    return root


def test_prepare_holds_the_repo_modules_out_of_the_embedded_corpus(
    fake_stdlib: Path, tmp_path: Path, tiny_tokenizer: CodeTokenizer, fast_config: PrepareConfig
) -> None:
    held = frozenset({"textwrap", "json.decoder"})
    cfg = fast_config.replace(decontaminate=False, near_dedup=False)
    summary = prepare(None, tiny_tokenizer, tmp_path / "a", cfg, progress=False, held_out_modules=held)
    assert summary["files"] == 3 and summary["held_out"] == 2
    assert _removed(tmp_path / "a") == [
        {"source": str(fake_stdlib / "json" / "decoder.py"), "reason": "held_out", "module": "json.decoder"},
        {"source": str(fake_stdlib / "textwrap.py"), "reason": "held_out", "module": "textwrap"},
    ]
    off = cfg.replace(hold_out_repo_modules=False)
    summary = prepare(None, tiny_tokenizer, tmp_path / "b", off, progress=False, held_out_modules=held)
    assert summary["files"] == 5 and summary["held_out"] == 0


def test_cli_prints_what_was_removed(
    small_corpus: Path, tiny_tokenizer_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from smallcode.cli.main import main
    from smallcode.data import build

    (small_corpus / "copied.py").write_text(COPY)
    # The CLI resolves the default benchmark texts; give it ours under the first suite's name.
    monkeypatch.setattr(build, "default_references", lambda suites: {f"{suites[0]}/999": REFERENCE})
    out = tmp_path / "shards"
    argv = ["data", "prepare", "--corpus", str(small_corpus), "--tokenizer", str(tiny_tokenizer_dir),
            "--out", str(out), "--set", "workers=1", "--quiet"]  # fmt: skip
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "held out 0 file(s)" in text and "decontaminated 1 document(s)" in text
    assert _removed(out)[0]["match"] == "humaneval/999"
