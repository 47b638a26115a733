"""Suite loaders: counts, ids, pinned hashes, the packaged data and the data_dir override, input
rebuilding, MBPP assert parsing, the optional fetch."""

from __future__ import annotations

import ast
import gzip
import json
import shutil
import sys
from pathlib import Path

import pytest

from smallcode.tasks import DATA_SUITES, SUITES, DataFileError, load_suite, reference_texts
from smallcode.tasks.evalplus import load_mbppplus, mbpp_plus_args
from smallcode.tasks.manifest import load_manifest
from smallcode.tasks.mbpp import _docstring, load_mbpp, strict_inputs
from smallcode.tasks.pinned import MBPP_PLUS, PINNED_FILES, parse_jsonl
from smallcode.tasks.repo import task_sha256

SAME_PYTHON = load_manifest().python.rsplit(".", 1)[0] == f"{sys.version_info.major}.{sys.version_info.minor}"


def test_suite_sizes() -> None:
    assert len(load_suite("humaneval")) == 164
    assert len(load_suite("mbpp")) == 500
    assert len(load_suite("mbpp:full")) == 974
    assert len(load_suite("mbpp:sanitized")) == 427
    plus = load_suite("humaneval+")
    assert len(plus) == 164
    # PROVENANCE.md: 1577 base inputs, 125497 plus inputs; one unusable input is left out.
    assert sum(t.meta["n_base"] for t in plus) == 1577
    assert sum(t.meta["n_release_inputs"] for t in plus) == 1577 + 125497
    assert sum(len(t.inputs) + len(t.meta["dropped_inputs"]) for t in plus) == 1577 + 125497
    assert sum(len(t.inputs) for t in plus) == 1577 + 125497 - 1
    mbpp_plus = load_suite("mbpp+")
    assert len(mbpp_plus) == 399
    assert sum(t.meta["n_base"] for t in mbpp_plus) == 1236
    assert sum(len(t.inputs) + len(t.meta["dropped_inputs"]) for t in mbpp_plus) == 1236 + 42082
    by_id = {t.task_id: t for t in mbpp_plus}
    assert len(by_id["Mbpp/255"].inputs) == 112 - 4
    assert all(not by_id[i].inputs for i in ("Mbpp/88", "Mbpp/737", "Mbpp/787", "Mbpp/794"))


def test_unknown_suite_and_missing_dir(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown suite"):
        load_suite("humaneval++")
    # A data directory is an override: one without the release is an error naming the file, not a fallback.
    with pytest.raises(DataFileError, match=r"mbppplus/MbppPlus-prerelease-767efcc\.jsonl: data file not found"):
        load_suite("mbpp+", tmp_path)
    with pytest.raises(ValueError, match="split"):
        load_suite("mbpp:dev", Path("."))


@pytest.mark.skipif(not SAME_PYTHON, reason="the pinned repo suite is tied to the Python version that mined it")
def test_every_listed_suite_loads_the_pinned_repo_suite_included() -> None:
    assert set(SUITES) == {*DATA_SUITES, "repo"}
    tasks = load_suite("repo")  # rebuilt here, without the miner or the sandbox
    manifest = load_manifest()
    assert [(t.task_id, task_sha256(t)) for t in tasks] == [(e.task_id, e.sha256) for e in manifest.tasks]
    assert {t.suite for t in tasks} == {"repo"}


@pytest.mark.parametrize("suite", DATA_SUITES)
def test_packaged_data_equal_the_shared_releases(suite: str, shared_data: Path) -> None:
    packaged, override = load_suite(suite), load_suite(suite, shared_data)
    assert packaged == override  # Task equality: every field but meta
    assert [t.meta for t in packaged] == [t.meta for t in override]


def test_humaneval_ids_line_up_with_humanevalplus() -> None:
    he = load_suite("humaneval")
    plus = {t.task_id: t for t in load_suite("humaneval+")}
    assert [t.task_id for t in he] == [f"HumanEval/{i}" for i in range(164)]
    for t in he:
        p = plus[t.task_id]
        assert p.meta["orig_task_id"] == t.task_id.replace("/", "_")
        assert t.inputs == p.inputs[: p.meta["n_base"]]
        assert t.entry_point == p.entry_point
    # HumanEval+ ships with the package, so every HumanEval task has strict inputs by default.
    assert all(t.inputs for t in he)
    # The three tasks with a float tolerance in the release.
    assert {t.task_id: t.atol for t in he if t.atol} == {
        "HumanEval/2": 1e-6,
        "HumanEval/4": 1e-6,
        "HumanEval/32": 1e-4,
    }


def test_humaneval_base_inputs_are_the_check_asserts() -> None:
    # Independent reference: the literal arguments in HumanEval/0's own check() are its base inputs.
    t = load_suite("humaneval")[0]
    calls = [
        tuple(ast.literal_eval(a) for a in node.args)
        for node in ast.walk(ast.parse(t.test))
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "candidate"
    ]
    assert calls == list(t.inputs)


def test_tampered_file_is_refused(shared_data: Path, tmp_path: Path) -> None:
    (tmp_path / "mbppplus").mkdir()
    target = tmp_path / MBPP_PLUS.relpath
    shutil.copyfile(shared_data / MBPP_PLUS.relpath, target)
    with open(target, "ab") as f:
        f.write(b"\n")
    with pytest.raises(DataFileError, match=r"MbppPlus-prerelease-767efcc\.jsonl: sha256 mismatch"):
        load_mbppplus(tmp_path)
    target.unlink()
    with pytest.raises(DataFileError, match="not found"):
        load_mbppplus(tmp_path)


def test_packaged_files_are_checked_and_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import smallcode.tasks.pinned as pinned

    for f in PINNED_FILES:
        shutil.copyfile(f.packaged, tmp_path / f.packaged.name)
    monkeypatch.setattr(pinned, "PACKAGE_DATA", tmp_path)
    assert len(load_suite("mbpp+")) == 399  # read from the stand-in package directory
    gz = tmp_path / "MbppPlus-prerelease-767efcc.jsonl.gz"
    good = gz.read_bytes()
    gz.write_bytes(gzip.compress(gzip.decompress(good) + b"\n", mtime=0))
    with pytest.raises(DataFileError, match=r"MbppPlus-prerelease-767efcc\.jsonl\.gz: sha256 mismatch"):
        load_suite("mbpp+")
    for corrupt in (b"not gzip at all", good[: len(good) // 2]):
        gz.write_bytes(corrupt)
        with pytest.raises(DataFileError, match=r"MbppPlus-prerelease-767efcc\.jsonl\.gz: not a valid gzip file"):
            load_suite("mbpp+")
    gz.unlink()
    with pytest.raises(DataFileError, match=r"MbppPlus-prerelease-767efcc\.jsonl\.gz: packaged data file not found"):
        load_suite("mbpp+")


def test_package_data_is_declared_and_attributed() -> None:
    import fnmatch
    import tomllib

    root = Path(__file__).resolve().parents[2]
    patterns = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    shipped = patterns["smallcode.tasks"]
    data = PINNED_FILES[0].packaged.parent
    for path in data.iterdir():
        if path.name != "__pycache__":
            assert any(fnmatch.fnmatch(f"data/{path.name}", pat) for pat in shipped), path.name
    notice = (data / "NOTICE").read_text()
    for f in PINNED_FILES:
        assert f.packaged.name in notice
    for licence in ("CC-BY-4.0", "Apache-2.0", "MIT"):
        assert licence in notice


def test_reference_texts_hold_prompts_solutions_and_tests() -> None:
    labelled = reference_texts(["humaneval", "mbpp:full", "mbpp"])
    texts = list(labelled.values())
    he, mbpp = load_suite("humaneval"), load_suite("mbpp:full")
    assert labelled[f"{he[0].task_id}:prompt"] == he[0].prompt
    assert labelled[f"{he[0].task_id}:reference"] == he[0].reference
    assert labelled[f"{he[0].task_id}:test"] == he[0].test
    assert mbpp[-1].reference in texts and mbpp[-1].test in texts
    assert len(texts) == len(set(texts))  # mbpp is part of mbpp:full: each text once
    assert all(t.strip() for t in texts)
    with pytest.raises(ValueError, match="'repo' is not a data suite"):
        reference_texts(["repo"])


def test_malformed_lines_are_named() -> None:
    good = json.dumps({"task_id": "a", "x": 1}).encode()
    with pytest.raises(DataFileError, match=r"f\.jsonl:2: not valid JSON"):
        parse_jsonl(Path("f.jsonl"), good + b"\n{oops\n", ("task_id",), 2)
    with pytest.raises(DataFileError, match=r"f\.jsonl:2: record lacks field\(s\) task_id"):
        parse_jsonl(Path("f.jsonl"), good + b'\n{"x": 2}\n', ("task_id",), 2)
    with pytest.raises(DataFileError, match="1 records, expected 2"):
        parse_jsonl(Path("f.jsonl"), good, ("task_id",), 2)


def test_mbpp_plus_inputs_get_their_types() -> None:
    tasks = {t.task_id: t for t in load_mbppplus()}
    assert tasks["Mbpp/2"].inputs[0] == ((3, 4, 5, 6), (5, 7, 4, 10))
    a, b = tasks["Mbpp/124"].inputs[0]
    assert type(a) is float and type(b) is complex
    assert all(type(x[0]) is tuple for x in tasks["Mbpp/580"].inputs)
    assert mbpp_plus_args(722, [{"a": [1, 2]}, 1, 2]) == ({"a": (1, 2)}, 1, 2)
    assert mbpp_plus_args(3, [[1, 2]]) == ([1, 2],)  # tasks without a rule keep JSON's lists


def test_mbpp_strict_input_extraction() -> None:
    inputs, want, why = strict_inputs(["assert f((1, 2), 'a') == [3]", "assert f(-1, {1: 2}) == None"], "f")
    assert (inputs, want, why) == ((((1, 2), "a"), (-1, {1: 2})), [[3], None], "")
    for bad in (
        "assert set(f(1)) == {1}",
        "assert f(x) == 1",
        "assert f(1)",
        "assert math.isclose(f(1), 2)",
        "assert f(a=1) == 2",
        "assert f(1) != 2",
    ):
        inputs, want, why = strict_inputs(["assert f(0) == 0", bad], "f")
        assert inputs == () and why, bad


def test_mbpp_prompt_quotes_any_text() -> None:
    nasty = "a \"\"\" b \\n c ''' \\"
    assert ast.literal_eval(_docstring(nasty).strip()) == f"\n{nasty}\n"


def test_mbpp_tasks_parse_and_skips_are_counted() -> None:
    tasks = load_mbpp(split="full")
    for t in tasks:
        ast.parse(t.prompt + t.reference)  # every program is valid Python
    strict = [t for t in tasks if t.inputs]
    # 7 tasks have asserts that are not `f(literals) == literal`; 26 references disagree in type.
    assert len(strict) == 974 - 7 - 26
    assert all(t.meta["strict_skip"] for t in tasks if not t.inputs)
    assert all(len(t.inputs) == len(t.meta["assert_expected"]) for t in strict)


def test_fetch_checks_the_pin_and_keeps_nothing_on_mismatch(tmp_path: Path) -> None:
    # Offline: a file:// URL stands in for the release server.
    import hashlib

    from smallcode.tasks.fetch import fetch_file
    from smallcode.tasks.pinned import PinnedFile

    payload = b'{"task_id": "x"}\n'
    (tmp_path / "release.jsonl.gz").write_bytes(gzip.compress(payload))
    url = (tmp_path / "release.jsonl.gz").as_uri()
    good = PinnedFile("sub/x.jsonl", hashlib.sha256(payload).hexdigest(), 1, url=url, gzip=True)
    got = fetch_file(good, tmp_path / "cache")
    assert got.read_bytes() == payload and got == tmp_path / "cache" / "sub" / "x.jsonl"
    bad = PinnedFile("sub/y.jsonl", "0" * 64, 1, url=url, gzip=True)
    with pytest.raises(DataFileError, match="is not the pinned"):
        fetch_file(bad, tmp_path / "cache")
    assert not (tmp_path / "cache" / "sub" / "y.jsonl").exists()


def test_fetched_releases_serve_as_data_dir(shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A fetched cache is laid out like a data directory; a file:// URL stands in for upstream.
    from dataclasses import replace

    from smallcode.tasks import fetch

    local = replace(MBPP_PLUS, url=(shared_data / MBPP_PLUS.relpath).as_uri(), gzip=False)
    monkeypatch.setitem(fetch.SUITE_FILES, "mbpp+", (local,))
    cache = fetch.fetch_suite_data("mbpp+", tmp_path / "cache")
    assert load_suite("mbpp+", cache) == load_suite("mbpp+")
