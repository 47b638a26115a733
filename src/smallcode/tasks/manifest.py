"""The manifest of the pinned ``repo`` suite: which standard-library problems it holds, by content hash.

The suite is 500 function-completion problems mined from the standard library of one Python
version (:mod:`smallcode.eval.mining` mines them and rebuilds them from the running interpreter).
This module only reads and writes the list that pins them, ``data/repo_manifest.json``::

    {"format": 1, "python": "3.11.7", "count": 500, "tasks": [
    {"task_id": "repo/json.decoder/py_scanstring", "sha256": "...", "tests": []},
    ...
    ]}

``tests`` names the CPython unit tests that check a problem (empty: its module's doctests do). The
manifest is data, so a part of smallcode that must not import the miner (the corpus, which holds the
suite's modules out of training) can still ask which modules the problems come from:
:func:`repo_modules`. Nothing here mines, checks or builds a task.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from smallcode.fileio import atomic_write_text
from smallcode.tasks.pinned import PACKAGE_DATA, DataFileError

MANIFEST = PACKAGE_DATA / "repo_manifest.json"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class ManifestEntry:
    task_id: str
    """``repo/<module>/<qualified name>``."""
    sha256: str
    """Digest of the task's content (``smallcode.eval.mining.task_sha256``)."""
    tests: tuple[str, ...] = ()
    """CPython unit tests (dotted ids) that check it; empty when its doctests check it."""

    @property
    def module(self) -> str:
        """The dotted name of the standard-library module the problem comes from."""
        return self.task_id.split("/")[1]


@dataclass(frozen=True)
class RepoManifest:
    python: str
    """The Python version (``3.11.7``) whose standard library the problems were mined from."""
    tasks: tuple[ManifestEntry, ...]
    """The problems, in suite order."""

    def to_json(self) -> str:
        """The file's text: a small header, then one task a line (so a change shows as a line in a diff)."""
        head = json.dumps({"format": FORMAT_VERSION, "python": self.python, "count": len(self.tasks)})
        rows = ",\n".join(
            json.dumps({"task_id": e.task_id, "sha256": e.sha256, "tests": list(e.tests)}) for e in self.tasks
        )
        return f'{head[:-1]}, "tasks": [\n{rows}\n]}}\n'

    def write(self, path: Path = MANIFEST) -> None:
        """Write the manifest to ``path`` atomically."""
        atomic_write_text(Path(path), self.to_json())


def _entry(rec: object, where: str) -> ManifestEntry:
    ok = (
        isinstance(rec, dict)
        and isinstance(rec.get("task_id"), str)
        and rec["task_id"].count("/") >= 2
        and rec["task_id"].startswith("repo/")
        and isinstance(rec.get("sha256"), str)
        and len(rec["sha256"]) == 64
        and isinstance(rec.get("tests"), list)
        and all(isinstance(t, str) for t in rec["tests"])
    )
    if not ok:
        raise DataFileError(f"{where}: expected {{task_id: 'repo/<module>/<name>', sha256, tests: [...]}}")
    return ManifestEntry(rec["task_id"], rec["sha256"], tuple(rec["tests"]))


def load_manifest(path: Path = MANIFEST) -> RepoManifest:
    """The manifest at ``path`` (the package's by default), checked for shape, count and unique ids."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise DataFileError(f"{path}: repo suite manifest not found") from e
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataFileError(f"{path}: not a JSON document ({e})") from e
    if not isinstance(doc, dict) or doc.get("format") != FORMAT_VERSION:
        got = doc.get("format") if isinstance(doc, dict) else None
        raise DataFileError(f"{path}: manifest format {got!r}, expected {FORMAT_VERSION}")
    if not isinstance(doc.get("python"), str) or not isinstance(doc.get("tasks"), list):
        raise DataFileError(f"{path}: needs 'python' (a version string) and 'tasks' (a list)")
    entries = tuple(_entry(rec, f"{path}: task {i}") for i, rec in enumerate(doc["tasks"]))
    if doc.get("count") != len(entries):
        raise DataFileError(f"{path}: {len(entries)} tasks, the header says {doc.get('count')!r}")
    if len({e.task_id for e in entries}) != len(entries):
        raise DataFileError(f"{path}: a task id is listed twice")
    return RepoManifest(python=doc["python"], tasks=entries)


def repo_modules(path: Path = MANIFEST) -> frozenset[str]:
    """Dotted names of the standard-library modules the pinned ``repo`` problems come from."""
    return frozenset(e.module for e in load_manifest(path).tasks)
