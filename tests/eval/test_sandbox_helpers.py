"""Helpers (no tests) shared by the sandbox, attack and cross-check tests: bwrap policy, process accounting."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from smallcode.eval.sandbox import available


def require_bwrap() -> None:
    """bwrap is part of the setup: in CI its absence is a failure, elsewhere a skip."""
    if available("bwrap"):
        return
    msg = "bubblewrap (bwrap) is missing or cannot create namespaces here; `make setup` installs it"
    if os.environ.get("CI"):
        pytest.fail(msg)
    pytest.skip(msg)


def descendants(pid: int) -> set[int]:
    """All live processes below ``pid`` (from /proc), zombies included."""
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(d.name))
    out: set[int] = set()
    todo = [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            if c not in out:
                out.add(c)
                todo.append(c)
    return out


def processes_of_uid(uid: int) -> list[int]:
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                status = (d / "status").read_text()
            except OSError:
                continue
            for line in status.splitlines():
                if line.startswith("Uid:") and int(line.split()[1]) == uid:
                    pids.append(int(d.name))
    return pids
