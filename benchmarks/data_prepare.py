"""How long does preparing the whole embedded corpus take on this machine?

Trains (or loads, with ``--tokenizer``) the 32k code tokenizer, then runs ``prepare`` on the
embedded corpus (the interpreter's standard library) with every core, and reports the stage
timings, throughput and what was kept and dropped. Then times the loader: batches per second at
(B=8, T=1024) with and without FIM. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _cpu_seconds() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokenizer", type=Path, default=None, help="tokenizer directory (default: train one)")
    ap.add_argument("--work", type=Path, default=REPO / "runs" / "bench_data")
    ap.add_argument("--workers", type=int, default=0, help="0: one per core")
    ap.add_argument("--loader-steps", type=int, default=20)
    args = ap.parse_args(argv)

    from smallcode.data import PrepareConfig, ShardLoader, prepare
    from smallcode.tokenizer import load_tokenizer, train_tokenizer

    train_seconds = None
    if args.tokenizer is None:
        t0 = time.perf_counter()
        args.tokenizer = train_tokenizer(None, 32768, args.work / "tokenizer", show_progress=False).parent
        train_seconds = round(time.perf_counter() - t0, 1)
    tok = load_tokenizer(args.tokenizer)

    out = args.work / "shards"
    shutil.rmtree(out, ignore_errors=True)
    cpu0 = _cpu_seconds()
    summary = prepare(None, tok, out, PrepareConfig(workers=args.workers), progress=sys.stderr.isatty())
    prepare_cpu = round(_cpu_seconds() - cpu0, 1)
    total_bytes = summary["train"]["bytes"] + summary["validation"]["bytes"]
    total_tokens = summary["train"]["tokens"] + summary["validation"]["tokens"]

    loader_rates = {}
    for fim_rate in (0.0, 0.5):
        loader = ShardLoader(out, 8, 1024, seed=0, fim_rate=fim_rate)
        loader.batch(0)  # opens memmaps, loads the tokenizer for FIM
        t0 = time.perf_counter()
        for step in range(1, args.loader_steps + 1):
            loader.batch(step)
        loader_rates[f"fim_{fim_rate}"] = round(args.loader_steps / (time.perf_counter() - t0), 1)

    result = {
        "benchmark": "data_prepare",
        "cpu_cores": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "tokenizer_train_seconds": train_seconds,
        "prepare_seconds": summary["seconds"],
        # CPU seconds of this process and its workers: less sensitive than wall time to other
        # jobs sharing the machine (load_average_1min says how busy it was).
        "prepare_cpu_seconds": prepare_cpu,
        "files": summary["files"],
        "kept": summary["kept"],
        "dropped": {k: v for k, v in summary["dropped"].items() if v},
        "exact_duplicates": summary["exact_duplicates"],
        "near_duplicates": summary["near_duplicates"],
        "kept_bytes": total_bytes,
        "tokens": total_tokens,
        "train_tokens": summary["train"]["tokens"],
        "validation_tokens": summary["validation"]["tokens"],
        "mb_per_second": round(total_bytes / 1e6 / summary["seconds"]["total"], 2),
        "loader_batches_per_second_B8_T1024": loader_rates,
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
