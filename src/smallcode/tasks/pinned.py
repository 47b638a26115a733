"""Pinned sha256 digests of every data file a suite loader reads, and the check that enforces them.

A suite's numbers are only comparable if everybody scored against the same bytes, so a loader hashes
the file before parsing it and refuses a file whose digest is not the pinned one, naming the file and
both digests. This module does not fetch anything; see :mod:`smallcode.eval.tasks.fetch` for that.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path


class DataFileError(ValueError):
    """A suite data file that is missing, altered or malformed; the message names the file (and line)."""


@dataclass(frozen=True)
class PinnedFile:
    """One data file of a suite release."""

    relpath: str
    """Path below the data directory (for package-shipped files: the file name)."""
    sha256: str
    """Digest of the exact bytes (the PROVENANCE.md tables list the same values)."""
    records: int
    """How many tasks it holds; a loader checks the count after parsing."""
    url: str = ""
    """Where an online user can get the same bytes (optional fetch), empty when not fetchable."""
    gzip: bool = False
    """True when ``url`` serves the file gzip-compressed (the digest is of the decompressed bytes)."""


HUMANEVAL = PinnedFile(
    relpath="HumanEval.jsonl.gz",
    sha256="b796127e635a67f93fb35c04f4cb03cf06f38c8072ee7cee8833d7bee06979ef",
    records=164,
)
HUMANEVAL_PLUS = PinnedFile(
    relpath="humanevalplus/HumanEvalPlus-v0.1.0.jsonl",
    sha256="7c8cd4620b4345f034351597407fe2f792c3680acd9971e4bc9a6edbf903cb78",
    records=164,
    url="https://github.com/ganler/release/raw/6c856336b2804b993487dabc10416fc48890c7ed/"
    "dataset/HumanEvalPlus/HumanEvalPlus-v0.1.0.jsonl.gz",
    gzip=True,
)
MBPP_PLUS = PinnedFile(
    relpath="mbppplus/MbppPlus-prerelease-767efcc.jsonl",
    sha256="08405a4e8764a4941cfe0945d25a956355a0454f364ea902c4020a44e7057973",
    records=399,
    url="https://raw.githubusercontent.com/evalplus/evalplus/767efcc368e0ef16568bba4ee2f1b005e849e8a6/"
    "MbppPlus.jsonl",
)
MBPP_FULL = PinnedFile(
    relpath="mbpp/mbpp.jsonl",
    sha256="ccf64ceae9c5403bf50a044cb6d505bfd2a2963ee58338ba268fd65beab92a9f",
    records=974,
    url="https://raw.githubusercontent.com/google-research/google-research/"
    "30adf0ec5f35f9609c2f1d896005e184195d9146/mbpp/mbpp.jsonl",
)
MBPP_SANITIZED = PinnedFile(
    relpath="mbpp/sanitized-mbpp.json",
    sha256="ca95deaa9a01ef0a6f439f88bcf0dd3db3563d22f22aad6cae04ebb9a8d8c8e9",
    records=427,
    url="https://raw.githubusercontent.com/google-research/google-research/"
    "30adf0ec5f35f9609c2f1d896005e184195d9146/mbpp/sanitized-mbpp.json",
)


def verified_bytes(path: Path, pinned: PinnedFile) -> bytes:
    """Read ``path`` whole and return its bytes if their digest is the pinned one, else raise."""
    if not path.is_file():
        raise DataFileError(
            f"{path}: data file not found (expected {pinned.relpath}, sha256 {pinned.sha256})"
        )
    data = path.read_bytes()
    got = hashlib.sha256(data).hexdigest()
    if got != pinned.sha256:
        raise DataFileError(
            f"{path}: sha256 mismatch: got {got}, pinned {pinned.sha256}; "
            "the file is not the release this suite is pinned to"
        )
    return data


def parse_jsonl(path: Path, data: bytes, required: tuple[str, ...], expected_records: int) -> list[dict]:
    """Parse JSON Lines bytes into dicts, naming ``path`` and the 1-based line of any bad record."""
    records: list[dict] = []
    for lineno, raw in enumerate(data.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            rec = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise DataFileError(f"{path}:{lineno}: not a JSON record ({e})") from e
        if not isinstance(rec, dict):
            raise DataFileError(f"{path}:{lineno}: expected a JSON object, got {type(rec).__name__}")
        missing = [k for k in required if k not in rec]
        if missing:
            raise DataFileError(f"{path}:{lineno}: record lacks field(s) {', '.join(missing)}")
        records.append(rec)
    if len(records) != expected_records:
        raise DataFileError(f"{path}: {len(records)} records, expected {expected_records}")
    return records
