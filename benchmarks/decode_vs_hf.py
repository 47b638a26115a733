"""Decode throughput of the smallcode engine vs ``MixtralForCausalLM.generate``, same weights.

``nano`` with ``n_global = 0`` (so both compute the same function), random weights, CPU, float32,
greedy, one process, alternating repetitions. Decode speed is isolated from prefill by timing
``N + 1`` new tokens and 1 new token and dividing the difference by ``N``; both sides must produce
exactly that many tokens (end-of-text ignored), and the benchmark checks that their greedy tokens
agree. Batch 1 and batch 8 (eight different prompts of one length). Last line: one JSON object.
Run it as ``--threads 2 --reps 5`` on a quiet machine: with another process on one of the two
cores, every multi-threaded kernel waits for the descheduled thread and both sides slow down 5-30x
(``--threads 1`` is the contention-proof cross-check).

Last figures (2 AMD EPYC cores, tokens/s, ``--reps 9``, two runs each): ``--threads 2``: batch 1
206.7 vs 91.3 (2.26x) and 250.4 vs 95.5 (2.62x); batch 8 964.9 vs 349.4 (2.76x) and 927.1 vs
317.0 (2.92x). ``--threads 1``: batch 1 210.8 vs 104.3 (2.02x) and 195.0 vs 94.5 (2.06x); batch 8
654.2 vs 299.5 (2.18x) and 635.6 vs 316.7 (2.01x). Greedy tokens agree in every run. Before the
few-row kernel (``SMALLCODE_CPU_KERNELS=0`` gives that path back): 170.4 vs 82.7 (2.06x) and 391.0
vs 271.2 (1.44x) at 2 threads. HF's own figures move by up to 20% between runs of this shared VM;
the ratio within a run is what counts.

Where the decode step's time goes: it is bound by reading float32 weights from memory (a plain
sum reads 11.7 GB/s on one core here, 17 on two; nano is 68 MB, and at batch 8 about 7 of 8
experts per layer are hit, ~56 MB a step). MKL's and oneDNN's float32 products read a weight at
only 2-8 GB/s when it meets 2-8 rows, and that was 10.5 of ~18 ms per batch-8 step. The engine
swaps decode modules into its model (``runtime/cpu_decode.py``) that run a step's products through
``runtime/few_rows.c`` (compiled on first use): each weight row is read once, in order, and dotted
with up to four input rows held in L1, the columns split over torch's threads: 9-16 GB/s at 1-8
rows on two threads (one 1024 x 256 expert matrix, 8 rows: 0.11 ms vs MKL's 0.33). At 32 rows the
kernel is level with MKL, at 64 MKL's blocked product wins, hence its limit of 32 rows. A few
tokens' experts run in one call per layer (routing, then each chosen expert once on all of its
tokens, with the gather, SwiGLU and weighted sum inside), which also removes some twenty small
torch operations per layer. Same-process A/B of the model step, kernel vs the column-major torch
path: two threads, batch 1 3.6 vs 5.7 ms and batch 8 7.0 vs 14.8 ms; one thread, 6.0 vs 7.8 and
12.8 vs 18.8 ms.

Without a C compiler the engine's torch path keeps two layout tricks. Column-major weights: MKL
streams an (out, in) matrix about twice as fast for one row when its transpose is contiguous (one
EPYC core, one row by 64 different 1024 x 256 matrices: 8.4 vs 4.7 GB/s; by the 8192 x 256 head:
14 vs 5.4 GB/s). A head prepacked into oneDNN's blocked layout for batched steps: 8 rows by nano's
8192 x 256 head took 4.9 ms on one EPYC core inside a decode step with MKL, 2.3 ms prepacked.

Measured and not kept: every expert on every token with two batched matmuls (batch 8: 19.5 vs
18.1 ms per step at 2 threads, batch 1 reads 4x the expert weights); rows split in chunks of 3
(no gain); ``torch.compile`` of a shape-static prototype step (about 30 s to compile per shape;
batch 1 at 1 thread 4.5 ms per step vs 6.3 eager, but its expert gather reads each expert
once per token, 24 ms at batch 8, and its OpenMP kernels stalled under load); int8 weights
(``torch._weight_int8pack_mm`` is 3x slower than float32 on this AVX2 CPU, and the fbgemm dynamic
path quantises activations too, 1.5% output error, through deprecated quantized tensors); in the
kernel, blocks of 2-4 weight rows per single input row, more accumulators and software prefetch
(within noise or slower).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sysconfig
import tempfile
import time
from pathlib import Path

import torch

from smallcode.export.hf import to_hf_model
from smallcode.model import ModelConfig, SmallCodeLM
from smallcode.runtime import Engine, SamplingParams, cpu_decode
from smallcode.tokenizer import load_tokenizer, train_tokenizer


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--preset", default="nano")
    p.add_argument("--prompt-len", type=int, default=128)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--batches", default="1,8")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = ModelConfig.preset(args.preset, n_global=0)
    model = SmallCodeLM(config).eval()
    hf = to_hf_model(model)
    with tempfile.TemporaryDirectory() as tmp:  # the engine needs a tokenizer; ids come from torch here
        train_tokenizer([Path(sysconfig.get_paths()["stdlib"]) / "json"], 400, tmp, show_progress=False)
        engine = Engine(model, load_tokenizer(tmp))
    result: dict[str, object] = {"preset": args.preset, "prompt_len": args.prompt_len,
                                 "new_tokens": args.new_tokens, "threads": torch.get_num_threads(),
                                 "cpu_kernels": cpu_decode.available()}
    for B in [int(b) for b in args.batches.split(",")]:
        prompts = torch.randint(10, config.vocab_size, (B, args.prompt_len))

        def ours(n: int, prompts: torch.Tensor = prompts) -> list[list[int]]:
            params = SamplingParams(max_tokens=n, ignore_eos=True)
            return [c.token_ids for c in engine.generate_ids(prompts.tolist(), params)]

        def theirs(n: int, prompts: torch.Tensor = prompts) -> list[list[int]]:
            with torch.inference_mode():
                out = hf.generate(prompts, attention_mask=torch.ones_like(prompts), max_new_tokens=n,
                                  min_new_tokens=n, do_sample=False, pad_token_id=0)
            return out[:, args.prompt_len:].tolist()

        same = ours(16) == theirs(16)
        times: dict[str, list[float]] = {"ours": [], "hf": []}
        for _ in range(args.reps):
            for name, fn in (("ours", ours), ("hf", theirs)):
                t0 = time.perf_counter()
                fn(1)
                t1 = time.perf_counter()
                fn(args.new_tokens + 1)
                t2 = time.perf_counter()
                times[name].append((t2 - t1) - (t1 - t0))
        for name, ts in times.items():
            result[f"{name}_b{B}_decode_tokens_per_s"] = round(B * args.new_tokens / statistics.median(ts), 1)
        result[f"ratio_b{B}"] = round(result[f"ours_b{B}_decode_tokens_per_s"]  # type: ignore[operator]
                                      / result[f"hf_b{B}_decode_tokens_per_s"], 2)
        result[f"greedy_tokens_agree_b{B}"] = same
    print(json.dumps(result))


if __name__ == "__main__":
    main()
