"""The repository index (``smallcode.retrieval``): definitions and imports against what the source
says, BM25 scores against the formula computed by hand, incremental updates, caps, a file that does
not parse, the directory walk, and the context a completion gets."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from smallcode.retrieval import IndexLimits, RepoIndex, RetrievalBudget, bm25_terms, index_directory
from smallcode.retrieval.index import GAP, lexical_imports

SHAPES = '''import math
from collections import OrderedDict as OD
from . import util

LIMIT = 10


@cache
def area(radius):
    """The disc's area."""
    return math.pi * radius ** 2


async def fetch(url):
    return url


class Square:
    """A square."""

    def __init__(self, side):
        self.side = side

    def area(self):
        return self.side ** 2
'''


def test_definitions_and_imports_are_what_the_source_says() -> None:
    index = RepoIndex()
    index.update("geo/shapes.py", SHAPES)
    lines = SHAPES.splitlines()
    got = {(d.qualname, d.kind) for name in ("LIMIT", "area", "fetch", "Square", "__init__")
           for d in index.definitions(name)}
    assert got == {("LIMIT", "variable"), ("area", "function"), ("Square.area", "method"), ("fetch", "function"),
                   ("Square", "class"), ("Square.__init__", "method")}
    area = next(d for d in index.definitions("area") if d.kind == "function")
    assert lines[area.line] == "@cache"  # the decorator belongs to the definition
    assert area.ranges == ((area.line, area.line + 4),)  # decorator, def, docstring, return
    square = index.definitions("Square")[0]
    # the outline: header and docstring, then each method's signature
    shown = ["\n".join(lines[s:e]) for s, e in square.ranges]
    assert shown == ['class Square:\n    """A square."""', "    def __init__(self, side):", "    def area(self):"]
    assert [(i.module, i.name, i.alias) for i in index.imports("geo/shapes.py")] == [
        ("math", "", "math"), ("collections", "OrderedDict", "OD"), (".", "util", "util")]
    # the same imports read line by line, as from text cut at a cursor
    assert [(i.module, i.name, i.alias) for i in lexical_imports(SHAPES)] == [
        ("math", "", "math"), ("collections", "OrderedDict", "OD"), (".", "util", "util")]


def test_terms_split_identifiers_and_drop_keywords() -> None:
    assert bm25_terms("def load_config(HTTPServer, x): return self") == [
        "load_config", "load", "config", "httpserver", "http", "server", "self"]


DOCS = {
    "a.py": "alpha beta\nbeta gamma\n",
    "b.py": "alpha alpha alpha delta\n",
    "c.py": "gamma delta epsilon zeta eta theta\n",
}


def test_bm25_scores_are_the_formula_by_hand() -> None:
    index = RepoIndex()
    for path, text in DOCS.items():
        index.update(path, text)
    # One chunk per file (each is shorter than a chunk); terms are the words themselves.
    docs = {p: t.split() for p, t in DOCS.items()}
    n, avg = len(docs), sum(len(d) for d in docs.values()) / len(docs)
    k1, b = 1.2, 0.75

    def by_hand(query: list[str], doc: list[str]) -> float:
        total = 0.0
        for term in set(query):
            having = sum(term in d for d in docs.values())
            idf = math.log(1 + (n - having + 0.5) / (having + 0.5))
            tf = doc.count(term)
            total += idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * len(doc) / avg))
        return total

    query = "alpha gamma gamma"
    hits = index.search(query, k=10)
    expected = {p: by_hand(query.split(), d) for p, d in docs.items()}
    assert {h.path: h.score for h in hits} == pytest.approx({p: s for p, s in expected.items() if s > 0})
    assert [h.path for h in hits] == sorted((p for p in expected if expected[p] > 0), key=lambda p: -expected[p])
    assert index.search("omega") == []
    assert [h.path for h in index.search(query, exclude=["a.py"])] == ["b.py", "c.py"]


def test_update_and_remove_change_the_results() -> None:
    index = RepoIndex()
    for path, text in DOCS.items():
        index.update(path, text)
    chunks, size = index.chunks, index.bytes
    assert index.search("omega") == []
    index.update("b.py", "omega omega\ndef renamed():\n    pass\n")
    assert [h.path for h in index.search("omega")] == ["b.py"]
    assert [h.path for h in index.search("alpha")] == ["a.py"]  # b.py's old text is gone
    assert [d.path for d in index.definitions("renamed")] == ["b.py"]
    index.remove("b.py")
    assert index.search("omega") == [] and index.definitions("renamed") == []
    assert index.paths() == ["a.py", "c.py"]
    index.update("b.py", DOCS["b.py"])
    assert index.chunks == chunks and index.bytes == size  # nothing leaked by the round trip
    # the IDF is back to what it was with the same three files
    assert index.idf("alpha") == pytest.approx(math.log(1 + (3 - 2 + 0.5) / (2 + 0.5)))


def test_caps_keep_files_out_and_say_why() -> None:
    index = RepoIndex(IndexLimits(max_files=2))
    for path, text in DOCS.items():
        index.update(path, text)
    assert index.paths() == ["a.py", "b.py"] and "max_files" in index.skipped["c.py"]

    index = RepoIndex(IndexLimits(max_file_bytes=30))
    for path, text in DOCS.items():
        index.update(path, text)
    assert "c.py" not in index and "max_file_bytes" in index.skipped["c.py"]

    index = RepoIndex(IndexLimits(max_total_bytes=40))
    for path, text in DOCS.items():
        index.update(path, text)
    assert index.bytes <= 40 and index.skipped and "max_total_bytes" in next(iter(index.skipped.values()))

    index = RepoIndex(IndexLimits(max_chunks=2))
    index.update("long.py", "".join(f"x{i} = {i}\n" for i in range(30)))  # 5 chunks
    assert index.chunks == 0 and "max_chunks" in index.skipped["long.py"]
    index.update("short.py", "yval = 1\n")
    assert index.chunks == 1


def test_a_file_that_does_not_parse_is_reported_and_still_searchable() -> None:
    index = RepoIndex()
    index.update("bad.py", "def broken(:\n    return zebra_count\n\nclass Later:\n    pass\n")
    assert "bad.py" in index.errors and "line 1" in index.errors["bad.py"]
    assert [h.path for h in index.search("zebra_count")] == ["bad.py"]
    assert [(d.name, d.kind) for d in index.definitions("broken") + index.definitions("Later")] == [
        ("broken", "function"), ("Later", "class")]
    index.update("bad.py", "def fixed():\n    pass\n")
    assert "bad.py" not in index.errors


HELPER = '''"""Checksums."""


def compute_checksum(data, seed=0):
    """Adler-style checksum of ``data``."""
    total = seed
    for byte in data:
        total = (total * 31 + byte) % 65521
    return total


def unrelated():
    return 1
'''
MAIN = '''from pkg.helper import compute_checksum


def verify(blob, expected):
    value = compute_checksum(blob'''


def test_retrieval_gives_the_definition_of_a_called_function_from_another_file() -> None:
    index = RepoIndex()
    index.update("pkg/helper.py", HELPER)
    index.update("pkg/main.py", MAIN + ")\n    return value == expected\n")
    for i in range(6):  # noise the BM25 part may pick
        index.update(f"pkg/other{i}.py", f"def other{i}(blob):\n    return len(blob) + {i}\n")
    files = index.context(MAIN, "pkg/main.py", RetrievalBudget(chars=600, files=3))
    paths = [p for p, _ in files]
    assert "pkg/main.py" not in paths  # the cursor's own file is the prompt already
    assert paths[-1] == "pkg/helper.py"  # the definition, nearest the cursor
    helper = dict(files)["pkg/helper.py"]
    assert "def compute_checksum(data, seed=0):\n    \"\"\"Adler-style" in helper
    assert sum(len(t) for _, t in files) <= 600 and len(files) <= 3


def test_an_import_chooses_between_namesakes_and_the_budget_holds() -> None:
    index = RepoIndex()
    for pkg in ("one", "two", "three"):
        index.update(f"{pkg}/io.py", f"def load(path):\n    return '{pkg}'\n")
    index.update("app/run.py", "x = 1\n")
    # three definitions of load: without an import it says nothing; with one, that module's
    before = "from two.io import load\n\n\ndef main():\n    return load("
    files = index.context(before, "app/run.py", RetrievalBudget(chars=10_000, files=4))
    assert files[-1] == ("two/io.py", "def load(path):\n    return 'two'\n")
    relative = index.context("from .io import load\nload(", "three/main.py", RetrievalBudget(chars=10_000))
    assert relative[-1][0] == "three/io.py"
    assert index.used_definitions("load(", "app/run.py") == []  # three namesakes, no import: none
    index.remove("three/io.py")
    assert [d.path for d in index.used_definitions("load(", "app/run.py")] == ["one/io.py", "two/io.py"]
    # imported from outside the repository: not the repository's namesake
    assert index.used_definitions("from json import load\nload(", "app/run.py") == []
    for chars in (0, 40, 200):
        got = index.context(before, "app/run.py", RetrievalBudget(chars=chars, files=2))
        assert sum(len(t) for _, t in got) <= chars and len(got) <= 2


def test_pieces_of_one_file_are_in_line_order_with_a_gap_marker() -> None:
    index = RepoIndex()
    body = "".join(f"filler_{i} = {i}\n" for i in range(40))
    index.update("lib/util.py", "def first_helper():\n    return 1\n" + body + "def second_helper():\n    return 2\n")
    files = index.context("second_helper()\nfirst_helper(", "app.py", RetrievalBudget(chars=2000, definition_share=1))
    text = dict(files)["lib/util.py"]
    assert text.index("def first_helper") < text.index(GAP) < text.index("def second_helper")


def test_a_directory_is_walked_without_environments_builds_or_ignored_files(tmp_path: Path) -> None:
    files = {
        "pkg/__init__.py": "", "pkg/core.py": "def core():\n    pass\n", "setup.py": "x = 1\n",
        ".venv/lib/site.py": "v = 1\n", "env2/pyvenv.cfg": "", "env2/lib/x.py": "e = 1\n",
        "build/lib/pkg/core.py": "b = 1\n", "node_modules/a.py": "n = 1\n", ".git/hooks/h.py": "g = 1\n",
        "pkg/__pycache__/c.py": "c = 1\n", "pkg/generated_pb2.py": "p = 1\n", "notes.txt": "not python\n",
        "bad.py": "def (\n",
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    (tmp_path / ".gitignore").write_text("# generated\n*_pb2.py\n")
    index = index_directory(tmp_path)
    assert index.paths() == ["bad.py", "pkg/__init__.py", "pkg/core.py", "setup.py"]
    assert list(index.errors) == ["bad.py"]
    assert [d.path for d in index.definitions("core")] == ["pkg/core.py"]
