"""Training throughput and model FLOPs utilisation of one device: the figure behind the estimate's MFU.

``smallcode estimate`` turns tokens into GPU-hours with an assumed MFU (0.35). This measures what
the trainer's own pieces reach on one device: the model of a preset (optionally with fewer layers so
that it fits one GPU with its AdamW state), bf16 autocast on CUDA (float32 on CPU), the fused
next-token loss with the router's auxiliary losses, global-norm clipping and an AdamW step, on random
tokens. Each mode (eager, compiled blocks, compiled blocks + activation checkpointing) runs in its
own process after warm-up steps; model FLOPs come from ``ModelConfig.flops_per_token`` (6 x active
parameters + attention over the keys each query really sees), the same formula the estimate uses.
No communication: a multi-GPU run's MFU is at most this. Last line: one JSON object.

On one H200 (torch 2.11, CUDA 13), the 4-layer slice below (2.0B total, 0.75B active): eager 42.0K
tokens/s (MFU 0.156), compiled blocks 48.8K (0.181) at batch 4, 53.4K (0.198) at batch 8, compiled +
activation checkpointing 42.1K (0.157) at batch 8.

    python benchmarks/train_throughput.py --preset smallcode-16b-a4b --layers 4 --seq-len 4096 --batch 4
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import torch


def child(args: argparse.Namespace, mode: str) -> dict:
    from smallcode.model import ModelConfig, SmallCodeLM
    from smallcode.train.objectives import next_token_objective
    from smallcode.train.optim import build_optimizer
    from smallcode.train.trainer import _checkpoint_block

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    overrides = {"n_layers": args.layers} if args.layers else {}
    config = ModelConfig.preset(args.preset, max_seq_len=max(args.seq_len, 128), **overrides)
    torch.manual_seed(0)
    model = SmallCodeLM(config).to(device)
    if "ckpt" in mode:
        for block in model.blocks:
            _checkpoint_block(block)
    if "compile" in mode:
        for block in model.blocks:
            block.compile()
    optimizer = build_optimizer(model, 3e-4, 0.1, (0.9, 0.95))
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast(
        "cpu", enabled=False)

    def step() -> float:
        ids = torch.randint(0, config.vocab_size, (args.batch, args.seq_len + 1), device=device)
        batch = {"input_ids": ids[:, :-1], "labels": ids[:, 1:]}
        with autocast:
            loss, _, _ = next_token_objective(model, batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss)  # a host sync, as the trainer's logging has

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    t0 = time.perf_counter()
    for _ in range(args.warmup):
        step()
    sync()
    warm_s = time.perf_counter() - t0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    losses = [step() for _ in range(args.steps)]
    sync()
    seconds = time.perf_counter() - t0
    tokens = args.batch * args.seq_len * args.steps
    flops = config.flops_per_token(args.seq_len, training=True) * tokens
    out = {
        "mode": mode, "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "params_total": config.num_params(), "params_active": config.num_active_params(),
        "tokens_per_s": round(tokens / seconds, 1), "model_tflops": round(flops / seconds / 1e12, 2),
        "mfu": round(flops / seconds / (args.peak_tflops * 1e12), 4), "step_ms": round(1000 * seconds / args.steps, 1),
        "warmup_s": round(warm_s, 1), "loss_first_last": [round(losses[0], 3), round(losses[-1], 3)],
    }
    if device.type == "cuda":
        out["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="nano")
    parser.add_argument("--layers", type=int, default=0, help="override n_layers (0: the preset's)")
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--modes", default="eager,compile,compile+ckpt")
    parser.add_argument("--peak-tflops", type=float, default=989.0,
                        help="the device's dense bf16 peak (989: H100/H200 SXM)")
    parser.add_argument("--child", default="")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args, args.child)))
        return
    results = []
    for mode in args.modes.split(","):
        proc = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--child", mode], capture_output=True,
                              text=True)
        if proc.returncode != 0:
            results.append({"mode": mode, "error": proc.stderr.strip().splitlines()[-1:]})
        else:
            results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(results[-1], flush=True)
    print(json.dumps({"preset": args.preset, "layers": args.layers, "seq_len": args.seq_len, "batch": args.batch,
                      "peak_tflops": args.peak_tflops, "results": results}))


if __name__ == "__main__":
    main()
