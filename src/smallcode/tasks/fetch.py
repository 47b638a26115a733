"""Optional download of a suite's data release from upstream into a local cache, pinned by sha256.

The suites' data ship with the package; this is for users who are online and want the releases
from their sources instead (to check the packaged copies, or to keep a data directory of their own):
``fetch_suite_data("mbpp+")`` downloads the pinned release files of a suite into
``~/.cache/smallcode/data`` (or ``cache_dir``) laid out as a ``data_dir`` override, checks each
file's digest before it is moved into place (a mismatch leaves nothing behind), and returns the
directory to pass as ``data_dir``. Nothing else in the package calls this: loading never touches the
network, and the tests only fetch ``file://`` URLs.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import urllib.request
from pathlib import Path

from smallcode.fileio import atomic_write_bytes, sha256_file
from smallcode.tasks.pinned import (
    HUMANEVAL_PLUS,
    MBPP_FULL,
    MBPP_PLUS,
    MBPP_SANITIZED,
    DataFileError,
    PinnedFile,
)

SUITE_FILES: dict[str, tuple[PinnedFile, ...]] = {
    "humaneval": (HUMANEVAL_PLUS,),  # only for strict inputs: HumanEval itself is read from the package
    "humaneval+": (HUMANEVAL_PLUS,),
    "mbpp": (MBPP_FULL, MBPP_SANITIZED),
    "mbpp+": (MBPP_PLUS,),
}


def default_data_cache() -> Path:
    """``$XDG_CACHE_HOME/smallcode/data``, or ``~/.cache/smallcode/data``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "smallcode" / "data"


def fetch_file(pinned: PinnedFile, cache_dir: Path, timeout_s: float = 60.0) -> Path:
    """``cache_dir / pinned.relpath``, downloaded first if absent; its bytes always match the pin."""
    target = Path(cache_dir) / pinned.relpath
    if target.is_file() and sha256_file(target) == pinned.sha256:
        return target
    if not pinned.url:
        raise DataFileError(f"{pinned.relpath}: no download URL is pinned for this file")
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with urllib.request.urlopen(pinned.url, timeout=timeout_s) as r:  # noqa: S310 - pinned URLs only
            data = r.read()
    except OSError as e:
        raise DataFileError(f"{pinned.relpath}: download from {pinned.url} failed ({e})") from e
    if pinned.gzip:
        try:
            data = gzip.decompress(data)
        except OSError as e:
            raise DataFileError(f"{pinned.url}: not gzip data ({e})") from e
    got = hashlib.sha256(data).hexdigest()
    if got != pinned.sha256:
        raise DataFileError(f"{pinned.url}: sha256 {got} is not the pinned {pinned.sha256}; not saved")
    atomic_write_bytes(target, data)
    return target


def fetch_suite_data(suite: str, cache_dir: Path | None = None) -> Path:
    """Download (if needed) the data files of ``suite``; returns the directory to use as ``data_dir``."""
    base = suite.partition(":")[0]
    if base not in SUITE_FILES:
        raise ValueError(f"suite {suite!r} has no downloadable data (choose from {', '.join(SUITE_FILES)})")
    cache = Path(cache_dir) if cache_dir is not None else default_data_cache()
    for pinned in SUITE_FILES[base]:
        fetch_file(pinned, cache)
    return cache
