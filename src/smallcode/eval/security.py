"""Security scan of generated code with bandit: which samples have findings, at which severity.

Each sample's program (prompt + completion) is written to a temporary file and one ``bandit``
run scans them all (JSON output). A sample's severity is the highest among its findings. Files
bandit cannot parse count as "not scanned", never as clean or dirty. The share with findings is
over scanned samples. Deliberately not a judgement of exploitability: bandit flags patterns
(``eval``, ``pickle``, ``subprocess`` with a shell, weak hashes...), nothing more.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

from smallcode.errors import UserError

SEVERITIES = ("LOW", "MEDIUM", "HIGH")


class SecurityScanError(UserError, RuntimeError):
    """bandit did not run or its report did not parse (is it installed?); the message says which."""


def scan(programs: Mapping[str, str], timeout_s: float = 600.0) -> dict[str, str | None]:
    """Map each key to the highest bandit severity found (``LOW``/``MEDIUM``/``HIGH``), ``None`` for
    no finding, or ``"UNSCANNED"`` when bandit could not parse it."""
    if not programs:
        return {}
    with tempfile.TemporaryDirectory(prefix="smallcode-bandit-") as tmp:
        names: dict[str, str] = {}
        for i, (key, code) in enumerate(programs.items()):
            f = Path(tmp) / f"s{i}.py"
            f.write_text(code, encoding="utf-8", errors="surrogatepass")
            names[str(f)] = key
        cmd = [sys.executable, "-m", "bandit", "-q", "-f", "json", "-r", tmp]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise SecurityScanError(f"bandit did not run: {e}") from e
        try:
            report = json.loads(proc.stdout)
        except json.JSONDecodeError as e:
            raise SecurityScanError(f"bandit failed (exit {proc.returncode}): {proc.stderr[-500:]}") from e
    result: dict[str, str | None] = dict.fromkeys(programs.keys())
    rank = {s: i for i, s in enumerate(SEVERITIES)}
    for issue in report.get("results", []):
        key = names.get(issue.get("filename", ""))
        sev = issue.get("issue_severity", "LOW").upper()
        if key is None or sev not in rank:
            continue
        cur = result[key]
        if cur is None or cur in rank and rank[sev] > rank[cur]:
            result[key] = sev
    for err in report.get("errors", []):
        key = names.get(err.get("filename", ""))
        if key is not None:
            result[key] = "UNSCANNED"
    return result


def summarise(severity: Mapping[str, str | None]) -> dict[str, float | int]:
    """Share of scanned samples whose worst finding is at least each severity, plus counts."""
    scanned = [s for s in severity.values() if s != "UNSCANNED"]
    n = len(scanned)
    rank = {s: i for i, s in enumerate(SEVERITIES)}
    out: dict[str, float | int] = {"scanned": n, "unscanned": len(severity) - n}
    out["share_any"] = sum(s is not None for s in scanned) / n if n else 0.0
    for sev in SEVERITIES:
        out[f"share_{sev.lower()}_or_worse"] = (
            sum(s is not None and rank[s] >= rank[sev] for s in scanned) / n if n else 0.0
        )
    return out
