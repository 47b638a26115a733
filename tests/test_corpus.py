"""Corpus discovery: specs to files, the embedded corpus and its held-out modules, JSONL, layering."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

import smallcode
from smallcode.corpus import (
    DataError,
    default_corpus,
    discover,
    iter_raw_documents,
    module_name,
    python_files,
    python_modules,
    stdlib_modules,
    stdlib_root,
)


def test_walk_skips_caches_and_installed_packages(tmp_path: Path) -> None:
    for rel in ["a.py", "pkg/b.py", "pkg/c.txt", "__pycache__/d.py", ".git/e.py", "lib/site-packages/f.py"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x = 1\n")
    assert discover([tmp_path]).files == [tmp_path / "a.py", tmp_path / "pkg" / "b.py"]
    # An explicitly named file is taken whatever its suffix; globs expand; duplicates collapse.
    got = discover([tmp_path / "pkg" / "c.txt", str(tmp_path / "*.py"), tmp_path / "a.py"]).files
    assert got == [tmp_path / "a.py", tmp_path / "pkg" / "c.txt"]
    assert discover([tmp_path], extensions=[".txt"]).files == [tmp_path / "pkg" / "c.txt"]
    with pytest.raises(DataError, match="matches no file"):
        discover([str(tmp_path / "*.rs")])


def test_default_corpus_is_the_standard_library_without_site_packages() -> None:
    (root,) = default_corpus()
    assert root == Path(sysconfig.get_paths()["stdlib"])
    files = discover([root / "json"]).files
    assert root / "json" / "decoder.py" in files
    assert not any("site-packages" in p.parts for p in files)


def test_jsonl_errors_name_file_and_line(tmp_path: Path) -> None:
    f = tmp_path / "d.jsonl"
    f.write_text(json.dumps({"text": "a"}) + "\n\n" + json.dumps({"code": "b"}) + "\n")
    docs = list(iter_raw_documents([f]))
    assert [(str(d.source), d.data) for d in docs] == [(f"{f}:1", b"a"), (f"{f}:3", b"b")]
    for bad, message in [
        ("{oops", r"d.jsonl:2: not valid JSON"),
        ('{"title": "x"}', r"d.jsonl:2: no string field"),
    ]:
        f.write_text(json.dumps({"text": "a"}) + "\n" + bad + "\n")
        with pytest.raises(DataError, match=message):
            list(iter_raw_documents([f]))


def test_the_one_walker_skips_hidden_and_refused_directories_and_names_modules(tmp_path: Path) -> None:
    for rel in ["pkg/__init__.py", "pkg/a.py", "pkg/tests/t.py", ".tox/x.py", "node_modules/y.py", "top.py"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x = 1\n")
    every = [tmp_path / "pkg" / "__init__.py", tmp_path / "pkg" / "a.py", tmp_path / "pkg" / "tests" / "t.py",
             tmp_path / "top.py"]
    assert python_files(tmp_path) == every
    assert python_files(tmp_path, skip_dir=lambda name: name == "tests") == [*every[:2], every[3]]
    assert [m for m, _ in python_modules(tmp_path)] == ["pkg", "pkg.a", "pkg.tests.t", "top"]
    assert module_name(tmp_path / "pkg", tmp_path / "pkg" / "__init__.py", "pkg.") == "pkg"


def test_the_repo_suite_and_what_training_holds_out_come_from_one_walk() -> None:
    from smallcode.tasks import repo_modules

    modules = repo_modules()
    mined_from = {path: m for m, path in stdlib_modules() if m in modules}
    assert set(mined_from.values()) == modules  # the walker finds every module of the pinned suite
    assert discover(None).held_out == mined_from  # and the embedded corpus leaves out exactly those files
    library = {path for _, path in stdlib_modules()}
    assert library <= set(python_files(stdlib_root()))
    assert not any(path.relative_to(stdlib_root()).parts[0] in ("test", "idlelib") for path in library)


# A set of held-out modules given explicitly (the default comes from smallcode.tasks): a plain
# module, a submodule, a package (only its __init__.py is the module) and one this library lacks.
HELD_OUT = frozenset({"textwrap", "json.decoder", "email", "no_such_module_here"})


def test_embedded_corpus_holds_out_the_given_modules() -> None:
    (root,) = default_corpus()
    expected = {
        root / "textwrap.py": "textwrap",
        root / "json" / "decoder.py": "json.decoder",
        root / "email" / "__init__.py": "email",
    }
    held = discover(None, held_out_modules=HELD_OUT)
    assert held.held_out == expected
    assert not set(expected) & set(held.files)
    # Only the module's own file: the rest of the package stays.
    assert root / "json" / "encoder.py" in held.files and root / "email" / "message.py" in held.files

    every = discover(None, held_out_modules=frozenset())
    assert every.held_out == {}
    assert set(expected) <= set(every.files)
    assert sorted([*held.files, *expected]) == every.files


def test_explicit_corpus_is_taken_as_given() -> None:
    (root,) = default_corpus()
    found = discover([root / "json"], held_out_modules=HELD_OUT)
    assert root / "json" / "decoder.py" in found.files and found.held_out == {}


@pytest.mark.parametrize(
    ("statement", "absent"),
    [
        ("import smallcode.corpus", ("smallcode.tokenizer", "smallcode.data")),
        # Reading a corpus through the tokenizer, not just importing it.
        (
            "import smallcode.tokenizer.train as t; list(t.iter_corpus_texts([t.__file__]))",
            ("smallcode.data",),
        ),
        ("import smallcode.data, smallcode.data.config, smallcode.data.filters", ("smallcode.tokenizer",)),
    ],
)
def test_import_direction(statement: str, absent: tuple[str, ...]) -> None:
    """Corpus discovery is a leaf: the tokenizer and the data pipeline do not import each other for it."""
    code = f"import json, sys; {statement}; print(json.dumps(sorted(sys.modules)))"
    # The child imports this very checkout, whatever is installed.
    env = {**os.environ, "PYTHONPATH": str(Path(smallcode.__file__).parents[1])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    loaded = [m for m in json.loads(out.stdout) if m.startswith("smallcode.")]
    assert not [m for m in loaded if m.split(".")[:2] in [a.split(".") for a in absent]], loaded
