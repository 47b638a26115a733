"""The pinned 500-problem standard-library suite: rebuilt from this interpreter's stdlib, hash-checked."""

from __future__ import annotations

import sys

import pytest

from smallcode.eval.check import compat_program
from smallcode.eval.sandbox import run_python
from smallcode.eval.tasks import DataFileError, load_suite
from smallcode.eval.tasks import stdlib_manifest as manifest
from smallcode.eval.tasks.repo import load_pinned_stdlib, task_sha256, wrong_bodies

SAME_PYTHON = manifest.PYTHON.rsplit(".", 1)[0] == f"{sys.version_info.major}.{sys.version_info.minor}"


def test_manifest_is_500_distinct_problems() -> None:
    ids = [tid for tid, _, _ in manifest.TASKS]
    assert manifest.COUNT == len(ids) == len(set(ids)) == 500
    assert all(tid.startswith("repo/") and len(sha) == 64 for tid, sha, _ in manifest.TASKS)


@pytest.mark.skipif(not SAME_PYTHON, reason="the pinned suite is tied to the Python version that mined it")
def test_pinned_suite_rebuilds_with_matching_hashes() -> None:
    tasks = load_suite("repo")
    assert len(tasks) == 500
    assert [task_sha256(t) for t in tasks] == [sha for _, sha, _ in manifest.TASKS]
    kinds = {t.meta["checked_by"] for t in tasks}
    assert kinds == {"doctest", "unittest"}
    # A few, each kind: the reference passes its own check and `pass` fails it (whole suite: benchmark).
    doc = next(t for t in tasks if t.meta["checked_by"] == "doctest")
    unit = next(t for t in tasks if t.meta["checked_by"] == "unittest")
    for t in (doc, unit):
        assert run_python(compat_program(t, t.reference), timeout=60).ok, t.task_id
        assert not run_python(compat_program(t, wrong_bodies(t)[0]), timeout=60).ok, t.task_id


def test_other_python_version_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(manifest, "PYTHON", "3.99.0")
    with pytest.raises(DataFileError, match=r"mined from Python 3\.99\.0.*Mine a suite for this interpreter"):
        load_pinned_stdlib()


@pytest.mark.skipif(not SAME_PYTHON, reason="the pinned suite is tied to the Python version that mined it")
def test_changed_stdlib_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    tid, _, tests = manifest.TASKS[0]
    monkeypatch.setattr(manifest, "TASKS", ((tid, "0" * 64, tests), *manifest.TASKS[1:]))
    with pytest.raises(DataFileError, match=f"1 of 500 pinned repo problems differ.*{tid}"):
        load_pinned_stdlib()
