"""Summaries of a run: pass@k per suite, verdict counts, security shares; JSON and Markdown.

Everything is computed from the run directory's ``results.jsonl`` (and ``security.json``), so
``smallcode eval report DIR`` rebuilds the same report a run wrote. Not here: running anything.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from smallcode.eval.passk import mean_pass_at_k
from smallcode.eval.security import summarise
from smallcode.fileio import atomic_write_text
from smallcode.tasks.base import Task


def summarise_results(
    rows: Iterable[Mapping[str, Any]], ks: Iterable[int], security: Mapping[str, str | None] | None = None
) -> dict[str, Any]:
    per_suite: dict[str, dict[str, list[bool]]] = defaultdict(lambda: defaultdict(list))
    statuses: dict[str, Counter[str]] = defaultdict(Counter)
    modes: dict[str, Counter[str]] = defaultdict(Counter)
    failures: dict[str, list[str]] = defaultdict(list)
    for r in rows:
        per_suite[r["suite"]][r["task_id"]].append(bool(r["passed"]))
        statuses[r["suite"]][r["status"]] += 1
        modes[r["suite"]][r["mode"]] += 1
        if not r["passed"] and len(failures[r["suite"]]) < 5:
            failures[r["suite"]].append(f"{r['task_id']}#{r['sample']}: {r['status']}: {r['reason'][:160]}")
    suites: dict[str, Any] = {}
    for suite, tasks in sorted(per_suite.items()):
        counts = {tid: (len(v), sum(v)) for tid, v in tasks.items()}
        n_min = min(n for n, _ in counts.values())
        passk = {}
        for k in sorted(set(ks)):
            val = mean_pass_at_k(counts, k)
            if val is not None:
                passk[f"pass@{k}"] = round(val, 6)
        suites[suite] = {
            "tasks": len(tasks),
            "samples": sum(n for n, _ in counts.values()),
            "min_samples_per_task": n_min,
            "passed": sum(c for _, c in counts.values()),
            **passk,
            "verdicts": dict(statuses[suite]),
            "modes": dict(modes[suite]),
            "first_failures": failures[suite],
        }
    out: dict[str, Any] = {"suites": suites}
    if security is not None:
        out["security"] = summarise(security)
    return out


def markdown(
    summary: Mapping[str, Any], backend: str = "", config: Mapping[str, Any] | None = None, sandbox: str = ""
) -> str:
    lines = ["# CodeBench-E report", ""]
    if backend:
        lines.append(f"Model: `{backend}`  ")
    if config:
        lines.append(
            f"Mode: **{config.get('mode')}**, n = {config.get('n')}, "
            f"temperature = {config.get('temperature')}, timeout = {config.get('timeout_s')} s, "
            f"sandbox = {sandbox or config.get('isolation')}"
        )
    lines += ["", "| suite | tasks | samples | passed | " + " | ".join(_ks(summary)) + " | verdicts |"]
    lines.append("|---|---:|---:|---:|" + "---:|" * len(_ks(summary)) + "---|")
    for name, s in summary["suites"].items():
        ks = " | ".join(f"{100 * s[k]:.1f}%" if k in s else "n/a" for k in _ks(summary))
        verdicts = ", ".join(f"{k} {v}" for k, v in sorted(s["verdicts"].items()))
        lines.append(f"| {name} | {s['tasks']} | {s['samples']} | {s['passed']} | {ks} | {verdicts} |")
    fallbacks = {n: s["modes"].get("compat", 0) for n, s in summary["suites"].items()}
    if config and config.get("mode") == "strict" and any(fallbacks.values()):
        lines += [
            "",
            "Tasks without strict inputs were checked in compat mode: "
            + ", ".join(f"{n}: {c} samples" for n, c in fallbacks.items() if c)
            + ".",
        ]
    sec = summary.get("security")
    if sec:
        lines += [
            "",
            "## Security scan (bandit)",
            "",
            f"Samples scanned: {sec['scanned']} (not parseable: {sec['unscanned']}).  ",
            f"With any finding: {100 * sec['share_any']:.1f}%; medium or worse: "
            f"{100 * sec['share_medium_or_worse']:.1f}%; high: {100 * sec['share_high_or_worse']:.1f}%.",
        ]
    for name, s in summary["suites"].items():
        if s["first_failures"]:
            lines += ["", f"## First failures in {name}", ""] + [f"- {f}" for f in s["first_failures"]]
    return "\n".join(lines) + "\n"


def _ks(summary: Mapping[str, Any]) -> list[str]:
    keys = {k for s in summary["suites"].values() for k in s if k.startswith("pass@")}
    return sorted(keys, key=lambda k: int(k.split("@")[1]))


def write_reports(
    out: Path,
    tasks: Iterable[Task] | None,
    rows: list[dict[str, Any]],
    ks: Iterable[int],
    security: Mapping[str, str | None] | None,
    backend: str = "",
    config: Mapping[str, Any] | None = None,
    sandbox: str = "",
) -> dict[str, Any]:
    """Write ``summary.json`` and ``report.md`` into ``out`` and return the summary."""
    summary = summarise_results(rows, ks, security)
    summary["backend"] = backend
    summary["sandbox"] = sandbox
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    atomic_write_text(out / "report.md", markdown(summary, backend, config, sandbox))
    return summary


def report_dir(out: str | Path) -> dict[str, Any]:
    """Rebuild ``summary.json`` and ``report.md`` from what a run directory holds."""
    out = Path(out)
    res = out / "results.jsonl"
    if not res.is_file():
        raise FileNotFoundError(f"{out}: not a run directory (no results.jsonl)")
    rows = []
    for i, line in enumerate(res.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{res}:{i}: not valid JSON ({e.msg})") from e
    meta = json.loads((out / "config.json").read_text()) if (out / "config.json").exists() else {}
    cfg = meta.get("config", {})
    sec_path = out / "security.json"
    security = json.loads(sec_path.read_text()) if sec_path.exists() else None
    return write_reports(
        out,
        None,
        rows,
        cfg.get("k", [1, 10, 100]),
        security,
        meta.get("backend", ""),
        cfg,
        meta.get("sandbox", ""),
    )
