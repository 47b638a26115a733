"""The pinned 500-problem standard-library suite: rebuilt from this interpreter's stdlib, hash-checked."""

from __future__ import annotations

import sys
from dataclasses import replace

import pytest

from smallcode.eval.check import compat_program
from smallcode.eval.mining.repo import load_pinned_stdlib, task_sha256, wrong_bodies
from smallcode.eval.runner import load_tasks
from smallcode.eval.sandbox import run_python
from smallcode.tasks import DataFileError
from smallcode.tasks.manifest import load_manifest

MANIFEST = load_manifest()
SAME_PYTHON = MANIFEST.python.rsplit(".", 1)[0] == f"{sys.version_info.major}.{sys.version_info.minor}"


def test_manifest_is_500_distinct_problems() -> None:
    ids = [e.task_id for e in MANIFEST.tasks]
    assert len(ids) == len(set(ids)) == 500
    assert all(tid.startswith("repo/") and len(e.sha256) == 64 for tid, e in zip(ids, MANIFEST.tasks, strict=True))


@pytest.mark.skipif(not SAME_PYTHON, reason="the pinned suite is tied to the Python version that mined it")
def test_pinned_suite_rebuilds_with_matching_hashes() -> None:
    tasks = load_tasks(["repo"])
    assert len(tasks) == 500
    assert [task_sha256(t) for t in tasks] == [e.sha256 for e in MANIFEST.tasks]
    kinds = {t.meta["checked_by"] for t in tasks}
    assert kinds == {"doctest", "unittest"}
    # A few, each kind: the reference passes its own check and `pass` fails it (whole suite: benchmark).
    doc = next(t for t in tasks if t.meta["checked_by"] == "doctest")
    unit = next(t for t in tasks if t.meta["checked_by"] == "unittest")
    for t in (doc, unit):
        assert run_python(compat_program(t, t.reference), timeout=60).ok, t.task_id
        assert not run_python(compat_program(t, wrong_bodies(t)[0]), timeout=60).ok, t.task_id


def test_other_python_version_is_a_clear_error() -> None:
    with pytest.raises(DataFileError, match=r"mined from Python 3\.99\.0.*Mine a suite for this interpreter"):
        load_pinned_stdlib(manifest=replace(MANIFEST, python="3.99.0"))


@pytest.mark.skipif(not SAME_PYTHON, reason="the pinned suite is tied to the Python version that mined it")
def test_changed_stdlib_is_a_clear_error() -> None:
    first = MANIFEST.tasks[0]
    changed = replace(MANIFEST, tasks=(replace(first, sha256="0" * 64), *MANIFEST.tasks[1:]))
    with pytest.raises(DataFileError, match=f"1 of 500 pinned repo problems differ.*{first.task_id}"):
        load_pinned_stdlib(manifest=changed)
