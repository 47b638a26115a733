"""The repo suite's manifest: a JSON file in the package, read without the miner, written atomically."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from smallcode.tasks import DataFileError, Task, repo_modules
from smallcode.tasks.manifest import MANIFEST, ManifestEntry, RepoManifest, load_manifest


def test_packaged_manifest_is_canonical_json() -> None:
    manifest = load_manifest()
    assert len(manifest.tasks) == 500
    doc = json.loads(MANIFEST.read_text())
    assert doc["count"] == 500 and doc["python"] == manifest.python
    # what write() would produce, byte for byte: the file is generated, never edited by hand
    assert manifest.to_json() == MANIFEST.read_text()


def test_repo_modules_are_the_stdlib_modules_of_the_problems() -> None:
    modules = repo_modules()
    ids = [e.task_id for e in load_manifest().tasks]
    assert modules == {tid.split("/")[1] for tid in ids}
    assert {"_pydecimal", "zipfile", "xml.sax.xmlreader"} <= modules
    assert all(importlib.util.find_spec(m) is not None for m in modules)


def test_write_then_load_round_trips(tmp_path: Path) -> None:
    manifest = RepoManifest("3.11.7", (ManifestEntry("repo/a.b/f", "1" * 64), ManifestEntry("repo/c/K.g", "2" * 64,
                                                                                          ("test.test_c.T.test_g",))))
    path = tmp_path / "m.json"
    manifest.write(path)
    assert load_manifest(path) == manifest
    assert repo_modules(path) == {"a.b", "c"}


def test_mining_writes_the_same_format(tmp_path: Path) -> None:
    from smallcode.eval.mining import task_sha256, write_manifest

    task = Task(task_id="repo/m/f", suite="repo", prompt="def f():\n", entry_point="f", reference="    return 1\n",
                meta={"tests": ["test.test_m.T.test_f"]})
    path = tmp_path / "m.json"
    write_manifest([task], path)
    (entry,) = load_manifest(path).tasks
    assert entry == ManifestEntry("repo/m/f", task_sha256(task), ("test.test_m.T.test_f",))


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("{oops", "not a JSON document"),
        ('{"format": 2, "python": "3.11.7", "count": 0, "tasks": []}', "format 2, expected 1"),
        ('{"format": 1, "python": "3.11.7", "count": 1, "tasks": []}', "0 tasks, the header says 1"),
        ('{"format": 1, "python": "3.11.7", "count": 1, "tasks": [{"task_id": "x"}]}', "task 0: expected"),
        ('{"format": 1, "python": "3.11.7", "count": 2, "tasks": ['
         '{"task_id": "repo/m/f", "sha256": "' + "0" * 64 + '", "tests": []},'
         '{"task_id": "repo/m/f", "sha256": "' + "1" * 64 + '", "tests": []}]}', "listed twice"),
    ],
)
def test_bad_manifests_are_named(tmp_path: Path, text: str, error: str) -> None:
    path = tmp_path / "m.json"
    path.write_text(text)
    with pytest.raises(DataFileError, match=f"m\\.json: .*{error}"):
        load_manifest(path)
    with pytest.raises(DataFileError, match="not found"):
        load_manifest(tmp_path / "absent.json")
