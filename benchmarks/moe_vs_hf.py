"""Training-step throughput of SmallCodeLM vs transformers' MixtralForCausalLM, same config and weights.

One process, CPU, float32, alternating repetitions (ours, HF, ours, HF, ...) so machine noise hits
both sides alike. A step is forward + next-token loss + router auxiliary loss + backward: ours
through ``train.objectives.next_token_loss`` (output projection fused with the loss), HF through
its logits and ``F.cross_entropy``, as a transformers training loop does. The first step's
cross-entropies are reported side by side: the same weights give the same loss. (The auxiliary
terms differ slightly by design: ours adds the router z-loss and averages per-layer balance losses.) The
model-FLOPs utilisation of each side is measured against this machine's own float32 matmul peak,
measured in the same run. ``n_global = 0`` so both models compute the same function.
Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

from smallcode.export.hf import to_hf_model
from smallcode.model import ModelConfig, SmallCodeLM
from smallcode.train.objectives import next_token_loss


def matmul_peak_flops(n: int = 2048, reps: int = 10) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--preset", default="nano")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--seq-len", type=int, default=None, help="default: the preset's max_seq_len")
    p.add_argument("--reps", type=int, default=6)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = ModelConfig.preset(args.preset, n_global=0)
    T = args.seq_len or config.max_seq_len
    ours = SmallCodeLM(config).train()
    hf = to_hf_model(ours).train()
    ids = torch.randint(0, config.vocab_size, (args.batch, T + 1))
    x, y = ids[:, :-1], ids[:, 1:]

    def step_ours() -> float:
        ours.zero_grad(set_to_none=True)
        loss, ce, _ = next_token_loss(ours, ids)
        loss.backward()
        return ce.item()

    def step_hf() -> float:
        hf.zero_grad(set_to_none=True)
        out = hf(input_ids=x, output_router_logits=True)
        ce = F.cross_entropy(out.logits.view(-1, config.vocab_size), y.reshape(-1))
        (ce + config.balance_loss_coef * out.aux_loss).backward()
        return ce.item()

    first = (step_ours(), step_hf())
    step_ours()
    step_hf()
    times: dict[str, list[float]] = {"ours": [], "hf": []}
    for _ in range(args.reps):
        for name, fn in (("ours", step_ours), ("hf", step_hf)):
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    peak = matmul_peak_flops()
    tokens = args.batch * T
    flops = config.flops_per_token(T) * tokens
    result: dict[str, object] = {
        "preset": args.preset, "batch": args.batch, "seq_len": T, "threads": torch.get_num_threads(),
        "hf_experts_implementation": getattr(hf.config, "_experts_implementation", None),
        "hf_attn_implementation": hf.config._attn_implementation,
        "peak_matmul_gflops": round(peak / 1e9, 1),
        "first_step_cross_entropy": {"ours": round(first[0], 6), "hf": round(first[1], 6)},
    }
    for name, ts in times.items():
        med = statistics.median(ts)
        result[f"{name}_tokens_per_s"] = round(tokens / med, 1)
        result[f"{name}_mfu"] = round(flops / med / peak, 3)
    result["ratio"] = round(result["ours_tokens_per_s"] / result["hf_tokens_per_s"], 3)  # type: ignore[operator]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
