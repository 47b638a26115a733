"""The agent's figures: the oracle over the repair suites, the nano model's resolve rate, and MBPP
pass@1 with and without execution-guided sampling.

* oracle: a scripted model that applies each task's known fix, over every task of the three repair
  suites (``--oracle-limit``, ``--repo-limit`` to take fewer); it must resolve 100% (the
  benchmark's mechanics are sound).
* nano: ``--checkpoint`` (a fine-tuned nano; by default ``runs/nano/finetune/final`` when it
  exists) or, when there is none, an untrained nano with a tokenizer trained on the standard
  library's ``json`` package; ``--nano-limit`` tasks per suite with small budgets.
* MBPP: pass@1 of one greedy sample against the first of ``--candidates`` samples that passes the
  visible tests, on ``--mbpp-limit`` tasks (:func:`smallcode.eval.agent_bench.execution_guided`).

Prints one JSON object as its last line. Last run (2 CPU cores, defaults, no fine-tuned checkpoint
so an untrained nano): oracle 164/164, 500/500, 442/442 resolved (563 s with 140 s of suite
building); nano 0% on 10 tasks of each suite (every run ended at max_steps, no reply held an
action); MBPP first 50 tasks: pass@1 0% plain, 0% guided with 4 candidates.
"""

from __future__ import annotations

import argparse
import json
import os
import sysconfig
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")


def _untrained_nano(tmp: Path) -> Path:
    from smallcode.model import ModelConfig, SmallCodeLM
    from smallcode.model.checkpoint import save_checkpoint
    from smallcode.tokenizer import load_tokenizer
    from smallcode.tokenizer.train import train_tokenizer

    train_tokenizer([Path(sysconfig.get_paths()["stdlib"]) / "json"], 2000, tmp / "tok", show_progress=False)
    tok = load_tokenizer(tmp / "tok")
    model = SmallCodeLM(ModelConfig.preset("nano"))
    return save_checkpoint(model, tmp / "nano", tokenizer_file=tok.save(tmp / "tok-file"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--oracle-limit", type=int, default=0, help="Tasks of repair-humaneval/mbpp (0: all).")
    ap.add_argument("--repo-limit", type=int, default=0, help="Tasks of repair-repo for the oracle (0: all).")
    ap.add_argument("--nano-limit", type=int, default=10, help="Tasks per suite for the nano model.")
    ap.add_argument("--mbpp-limit", type=int, default=50, help="MBPP tasks for pass@1 plain vs guided.")
    ap.add_argument("--candidates", type=int, default=4)
    ap.add_argument("--checkpoint", type=Path, default=Path("runs/nano/finetune/final"))
    ap.add_argument("--out", type=Path, default=None, help="Keep the run directories here.")
    args = ap.parse_args()

    from smallcode.agent import AgentConfig, EngineChat, ScriptedModel
    from smallcode.backends.local import LocalBackend
    from smallcode.eval.agent_bench import execution_guided, load_repair_suite, oracle_replies, run_repair
    from smallcode.tasks import load_suite

    result: dict[str, object] = {}
    with tempfile.TemporaryDirectory(prefix="agent-bench-") as tmp_s:
        tmp = Path(tmp_s)
        out = args.out or tmp / "runs"
        t0 = time.perf_counter()
        suites = {"repair-humaneval": args.oracle_limit or None, "repair-mbpp": args.oracle_limit or None,
                  "repair-repo": args.repo_limit or None}
        tasks = [t for s, lim in suites.items() for t in load_repair_suite(s, lim)]
        built_s = time.perf_counter() - t0
        summary = run_repair(tasks, lambda rt: ScriptedModel(oracle_replies(rt), "oracle"), out / "oracle",
                             AgentConfig(max_steps=3), model_name="oracle")
        result["oracle"] = {s: {k: v[k] for k in ("tasks", "resolved", "resolved_pct", "mean_seconds")}
                            for s, v in summary["suites"].items()}
        result["oracle_wall_s"] = round(time.perf_counter() - t0, 1)
        result["suite_build_s"] = round(built_s, 1)

        ckpt = args.checkpoint if (args.checkpoint / "config.json").is_file() else None
        model_dir = ckpt or _untrained_nano(tmp)
        result["nano_model"] = str(ckpt) if ckpt else "untrained nano (no fine-tuned checkpoint found)"
        chat = EngineChat(model_dir)
        nano_tasks = [t for s in suites for t in load_repair_suite(s, args.nano_limit)]
        cfg = AgentConfig(max_steps=3, reply_tokens=128, max_seconds=120)
        t0 = time.perf_counter()
        summary = run_repair(nano_tasks, lambda rt: chat, out / "nano", cfg, model_name=chat.name)
        result["nano_repair"] = {s: {k: v[k] for k in ("tasks", "resolved_pct", "mean_steps", "mean_tokens",
                                                       "exit_reasons")} for s, v in summary["suites"].items()}
        result["nano_repair_wall_s"] = round(time.perf_counter() - t0, 1)

        mbpp = load_suite("mbpp")[: args.mbpp_limit]
        t0 = time.perf_counter()
        rows = execution_guided(mbpp, LocalBackend(model_dir), args.candidates, max_tokens=128)
        result["mbpp"] = {"tasks": len(rows), "candidates": args.candidates,
                          "pass@1_plain": round(100 * sum(r["plain"] for r in rows) / len(rows), 2),
                          "pass@1_guided": round(100 * sum(r["guided"] for r in rows) / len(rows), 2),
                          "wall_s": round(time.perf_counter() - t0, 1)}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
