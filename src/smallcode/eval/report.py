"""Summaries of a run: pass@k per suite, verdict counts, latency percentiles, security shares; JSON and Markdown.

Everything is computed from the run directory's ``results.jsonl`` (and ``samples.jsonl`` for the
latencies, ``security.json``), so ``smallcode eval report DIR`` rebuilds the same report a run
wrote. Latency is reported per suite as the median and 95th percentile of each sample's generation
wall time and, where the backend streamed, of its time to first text (what the runner recorded;
see ``runner.py``). Not here: running anything, timing anything.
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from smallcode.eval.passk import mean_pass_at_k
from smallcode.eval.security import summarise
from smallcode.fileio import atomic_write_text, read_jsonl
from smallcode.tasks.base import Task


def percentile(values: Iterable[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of ``values``, interpolating linearly between the two nearest
    ranks (numpy's default method)."""
    xs = sorted(values)
    if not xs:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be within [0, 100], got {q}")
    pos = (len(xs) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def summarise_latency(samples: Iterable[Mapping[str, Any]], suite_of: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """Per suite: how many samples carry a generation time, and the p50/p95 of ``gen_s`` and of
    ``ttft_s`` (when some sample has one), in seconds. Samples of tasks not in ``suite_of`` are left out."""
    gen: dict[str, list[float]] = defaultdict(list)
    ttft: dict[str, list[float]] = defaultdict(list)
    for r in samples:
        suite = suite_of.get(r["task_id"])
        if suite is None:
            continue
        if isinstance(r.get("gen_s"), int | float):
            gen[suite].append(float(r["gen_s"]))
        if isinstance(r.get("ttft_s"), int | float):
            ttft[suite].append(float(r["ttft_s"]))
    out: dict[str, dict[str, Any]] = {}
    for suite in sorted(gen):
        entry: dict[str, Any] = {"timed_samples": len(gen[suite])}
        for name, xs in (("gen", gen[suite]), ("ttft", ttft[suite])):
            if xs:
                entry[f"{name}_p50_s"] = round(percentile(xs, 50), 6)
                entry[f"{name}_p95_s"] = round(percentile(xs, 95), 6)
        out[suite] = entry
    return out


def summarise_results(
    rows: Iterable[Mapping[str, Any]],
    ks: Iterable[int],
    security: Mapping[str, str | None] | None = None,
    samples: Iterable[Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """The summary of checked ``rows``; with the run's ``samples`` rows, latency per suite too."""
    rows = list(rows)
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
    if samples is not None:
        for suite, lat in summarise_latency(samples, {r["task_id"]: r["suite"] for r in rows}).items():
            suites[suite]["latency"] = lat
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
    timed = any("latency" in s for s in summary["suites"].values())
    lat_cols = ["gen p50", "gen p95", "TTFT p50", "TTFT p95"] if timed else []
    lat_keys = ["gen_p50_s", "gen_p95_s", "ttft_p50_s", "ttft_p95_s"]
    lines += ["", "| suite | tasks | samples | passed | " + " | ".join(_ks(summary) + lat_cols) + " | verdicts |"]
    lines.append("|---|---:|---:|---:|" + "---:|" * (len(_ks(summary)) + len(lat_cols)) + "---|")
    for name, s in summary["suites"].items():
        cells = [f"{100 * s[k]:.1f}%" if k in s else "n/a" for k in _ks(summary)]
        if timed:
            lat = s.get("latency", {})
            cells += [_seconds(lat[k]) if k in lat else "n/a" for k in lat_keys]
        verdicts = ", ".join(f"{k} {v}" for k, v in sorted(s["verdicts"].items()))
        lines.append(f"| {name} | {s['tasks']} | {s['samples']} | {s['passed']} | {' | '.join(cells)} | {verdicts} |")
    if timed:
        lines += [
            "",
            "Latency: each sample's generation wall time (gen) and time to its first text (TTFT, when "
            "the backend streamed), median and 95th percentile.",
        ]
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


def _seconds(x: float) -> str:
    return f"{1000 * x:.0f} ms" if x < 1 else f"{x:.2f} s"


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
    samples: Iterable[Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """Write ``summary.json`` and ``report.md`` into ``out`` and return the summary (``samples``: the
    rows of ``samples.jsonl``, for latency)."""
    summary = summarise_results(rows, ks, security, samples)
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
    rows = read_jsonl(res)
    samples = read_jsonl(out / "samples.jsonl") if (out / "samples.jsonl").is_file() else None
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
        samples,
    )
