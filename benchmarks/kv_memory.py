"""Peak memory and speed of generation at long context: window + global cache vs full attention.

For each context length (2K, 8K, 32K tokens) and each model — ``nano`` as configured (window 256
+ 4 global tokens) and the same model with a window covering the whole context (full attention) —
a fresh process prefills a random prompt of that length through the KV cache, then decodes 32
tokens. It reports the process's peak resident memory, the cache's own bytes, and prefill and
decode tokens/s. The model decodes with the engine's decode modules swapped in
(``prepare_for_decoding``), as generation does. Random weights: memory and speed do not depend on
what the weights are.
Last line: one JSON object with the per-run figures and the peak ratios 32K / 2K.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch


def child(context: int, full: bool, decode_tokens: int) -> dict:
    from smallcode.model import ModelConfig, SmallCodeLM
    from smallcode.runtime.cpu_decode import prepare_for_decoding

    torch.manual_seed(0)
    config = ModelConfig.preset("nano")
    if full:
        config = ModelConfig.preset("nano", window=context + decode_tokens)
    model = prepare_for_decoding(SmallCodeLM(config).eval())
    ids = torch.randint(10, config.vocab_size, (1, context))
    rss_model = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with torch.inference_mode():
        cache = model.new_cache(1, initial_slots=64)
        t0 = time.perf_counter()
        logits = model(ids, cache, last_only=True).logits
        t1 = time.perf_counter()
        tok = logits[:, -1].argmax(-1, keepdim=True)
        for _ in range(decode_tokens):
            tok = model(tok, cache).logits[:, -1].argmax(-1, keepdim=True)
        t2 = time.perf_counter()
    return {
        "context": context, "attention": "full" if full else f"window {config.window} + {config.n_global} global",
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "rss_after_model_mb": round(rss_model / 1024, 1),
        "cache_mb": round(cache.nbytes() / 2**20, 2),
        "prefill_tokens_per_s": round(context / (t1 - t0), 1),
        "decode_tokens_per_s": round(decode_tokens / (t2 - t1), 1),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--contexts", default="2048,8192,32768")
    p.add_argument("--decode-tokens", type=int, default=32)
    p.add_argument("--child", nargs=2, metavar=("CONTEXT", "FULL"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(int(args.child[0]), args.child[1] == "1", args.decode_tokens)))
        return
    runs = []
    for full in (False, True):
        for context in [int(c) for c in args.contexts.split(",")]:
            out = subprocess.run([sys.executable, __file__, "--child", str(context), str(int(full)),
                                  "--decode-tokens", str(args.decode_tokens)],
                                 capture_output=True, text=True, check=True)
            run = json.loads(out.stdout.strip().splitlines()[-1])
            print(json.dumps(run), file=sys.stderr)
            runs.append(run)
    lo, hi = min(r["context"] for r in runs), max(r["context"] for r in runs)

    def ratio(full: bool, key: str) -> float:
        pick = {r["context"]: r[key] for r in runs if (r["attention"] == "full") == full}
        return round(pick[hi] / pick[lo], 3)

    print(json.dumps({
        "runs": runs,
        f"ours_peak_rss_ratio_{hi}_over_{lo}": ratio(False, "peak_rss_mb"),
        f"full_peak_rss_ratio_{hi}_over_{lo}": ratio(True, "peak_rss_mb"),
        f"ours_cache_ratio_{hi}_over_{lo}": ratio(False, "cache_mb"),
        f"full_cache_ratio_{hi}_over_{lo}": ratio(True, "cache_mb"),
        f"ours_decode_speed_ratio_{hi}_over_{lo}": ratio(False, "decode_tokens_per_s"),
        f"full_decode_speed_ratio_{hi}_over_{lo}": ratio(True, "decode_tokens_per_s"),
    }))


if __name__ == "__main__":
    main()
