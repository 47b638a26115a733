"""The local feedback log: what was shown, accepted and dismissed, one JSON object per line.

Events come from the server itself (``served``: a completion returned, with its latency and size)
and from the editor (``shown``, ``accepted``, ``dismissed``, through the ``smallcode/feedback``
notification or the command an accepted item runs). They are appended to ``lsp-feedback.jsonl``
in the user's data directory (``$SMALLCODE_DATA_DIR`` when set, else ``platformdirs``' user data
directory if it is installed, else ``$XDG_DATA_HOME/smallcode`` or ``~/.local/share/smallcode``).
Nothing is sent anywhere. ``summarize`` turns the log into what ``smallcode stats`` prints.

The log is read and appended under :mod:`smallcode.fileio`'s JSONL policy (``read_jsonl`` and
``JsonlLog``): each event is one ``write`` of a whole line on a file opened for appending, so two
editors sharing the log do not interleave within a line; a last line torn by a crash mid-write is
left out when reading and cut before the next append; any other bad line is an error naming it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from smallcode.fileio import JsonlLog, read_jsonl

LOG_NAME = "lsp-feedback.jsonl"
EVENTS = ("served", "shown", "accepted", "dismissed")


def data_dir() -> Path:
    """The user's smallcode data directory (see the module docstring for the order looked in)."""
    if os.environ.get("SMALLCODE_DATA_DIR"):
        return Path(os.environ["SMALLCODE_DATA_DIR"])
    try:
        from platformdirs import user_data_dir
    except ImportError:
        base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
        return Path(base) / "smallcode"
    return Path(user_data_dir("smallcode", appauthor=False))


def default_log() -> Path:
    return data_dir() / LOG_NAME


def append(path: Path, event: dict[str, Any]) -> None:
    """Append one event (``"event"`` one of ``EVENTS``), stamped with the time, to the log at ``path``."""
    if event.get("event") not in EVENTS:
        raise ValueError(f"unknown feedback event {event.get('event')!r}; one of {', '.join(EVENTS)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    with JsonlLog(path, read_rows=False) as log:  # only its last line is looked at: the log only grows
        log.append({"time": round(time.time(), 3), **event})


def read(path: Path) -> Iterator[dict[str, Any]]:
    """The events in the log at ``path`` (none if it does not exist); rows of an unknown kind (a newer
    editor's) are left out."""
    if not path.exists():
        return
    for event in read_jsonl(path):
        if event.get("event") in EVENTS:
            yield event


def nearest_rank(values: list[float], q: float) -> float | None:
    """The value at rank ``q`` (0-1) of ``values``, no interpolation (a latency that was measured); None if empty."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summarize(events: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Counts, acceptance rate, accepted characters and latency percentiles of ``served`` completions (ms).

    The rate is accepted over shown; over served when the editor reports acceptance but no ``shown``
    (it runs the items' command and nothing else). With neither a ``shown`` nor an ``accepted`` event
    nothing says that any completion reached the user, so the rate is None (a 0% there would be a
    guess, not a measurement). ``rate_of`` says which count the rate is over (None with it)."""
    counts = dict.fromkeys(EVENTS, 0)
    accepted_chars = 0
    latencies: list[float] = []
    for event in events:
        kind = event["event"]
        counts[kind] += 1
        if kind == "accepted":
            chars = event.get("chars")
            accepted_chars += chars if isinstance(chars, int) and chars >= 0 else 0
        if kind == "served" and isinstance(event.get("latency_ms"), int | float):
            latencies.append(float(event["latency_ms"]))
    rate_of = "shown" if counts["shown"] else "served" if counts["accepted"] and counts["served"] else None
    return {**counts, "acceptance_rate": counts["accepted"] / counts[rate_of] if rate_of else None,
            "rate_of": rate_of, "accepted_chars": accepted_chars,
            "latency_ms": {"p50": nearest_rank(latencies, 0.5), "p90": nearest_rank(latencies, 0.9),
                           "p99": nearest_rank(latencies, 0.99)}}
