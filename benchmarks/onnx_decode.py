"""Decode speed, time to first token, size, memory and held-out loss: ONNX Runtime vs our engine vs HF.

One checkpoint (``--preset``, default ``nano`` with ``n_global = 0`` so that ``MixtralForCausalLM``
computes the same function), exported as ONNX float32, int8 and int4, plus float32 with onnxruntime's
``com.microsoft::MoE`` op. Each runtime runs in its own process (so peak RSS is its own): our torch
engine (``Engine.from_checkpoint``), the ONNX exports through the same engine (``open_engine``), and
transformers' ``generate``. Decode tokens/s at batch 1 and 8 is isolated from prefill by timing
``N + 1`` and 1 new tokens (greedy, end-of-text ignored) and dividing the difference by ``N``; time
to first token is a ``--ttft-len`` prompt to one sampled token. Held-out loss and greedy agreement
(argmax at each position, against our float32 torch model) are on the stdlib's ``json/tool.py``
and ``json/decoder.py``, which ``--train-steps`` of training (default 0: random weights) leave out.
Last line: one JSON object.

Last figures (``--train-steps 200 --reps 5``, 2 idle AMD EPYC cores; table in docs/export.md):
batch 1 decode tokens/s at 1 thread, ours float32 487.8, ORT float32 518.8, ORT int8 1060.4 (2.17x
ours, held-out loss +0.09%, argmax agreement 97.7%), ORT int4 912.6 (1.87x, +0.03%, 92.8%), ORT
float32 with ``com.microsoft::MoE`` 384.1, HF 147.9; at 2 threads int8 1.98x, int4 2.06x. Batch 8
at 1 thread: 1418.5, 1603.6, 2648.3, 2270.1, 1009.6, 504.0. Files: 69.9 / 24.3 / 18.2 MB.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import torch

RUNTIMES = ("torch", "ort-fp32", "ort-fp32-contrib-moe", "ort-int8", "ort-int4", "hf")
HELD_OUT = ("tool.py", "decoder.py")


def json_files() -> tuple[list[Path], list[Path]]:
    """Training and held-out files of the stdlib's json package."""
    files = sorted((Path(sysconfig.get_paths()["stdlib"]) / "json").glob("*.py"))
    return [f for f in files if f.name not in HELD_OUT], [f for f in files if f.name in HELD_OUT]


def prepare(args: argparse.Namespace, root: Path) -> dict[str, object]:
    """Tokenizer, checkpoint (trained for ``--train-steps``) and the four exports under ``root``."""
    from smallcode.export.onnx import MODEL_FILE, export_onnx
    from smallcode.model import ModelConfig, SmallCodeLM
    from smallcode.model.checkpoint import save_checkpoint
    from smallcode.tokenizer import load_tokenizer, train_tokenizer

    train_files, _ = json_files()
    train_tokenizer(train_files, 400, root / "tok", show_progress=False)
    tokenizer = load_tokenizer(root / "tok")
    torch.manual_seed(0)
    model = SmallCodeLM(ModelConfig.preset(args.preset, n_global=0))
    if args.train_steps:
        data = torch.tensor([t for f in train_files for t in tokenizer.encode(f.read_text())])
        opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
        for _ in range(args.train_steps):
            starts = torch.randint(0, len(data) - 129, (8,)).tolist()
            batch = torch.stack([data[s:s + 129] for s in starts])
            out = model(batch[:, :-1])
            loss = torch.nn.functional.cross_entropy(out.logits.flatten(0, 1), batch[:, 1:].flatten())
            opt.zero_grad()
            (loss + out.aux_loss(model.config)).backward()
            opt.step()
    save_checkpoint(model.eval(), root / "ckpt", tokenizer_file=root / "tok" / "tokenizer.json")
    sizes: dict[str, object] = {"checkpoint_mb": round((root / "ckpt" / "model.safetensors").stat().st_size / 1e6, 1)}
    for name, kw in (("ort-fp32", {}), ("ort-fp32-contrib-moe", {"moe": "contrib"}),
                     ("ort-int8", {"quantize": "int8"}), ("ort-int4", {"quantize": "int4"})):
        export_onnx(root / "ckpt", root / name, **kw)  # type: ignore[arg-type]
        sizes[f"{name}_mb"] = round((root / name / MODEL_FILE).stat().st_size / 1e6, 1)
    return sizes


def worker(name: str, root: Path, args: argparse.Namespace) -> dict[str, object]:
    """Measure one runtime in this process."""
    from smallcode.model.checkpoint import Checkpoint
    from smallcode.runtime import Engine, SamplingParams
    from smallcode.tokenizer import load_tokenizer

    torch.set_num_threads(args.threads)
    tokenizer = load_tokenizer(root / "tok")
    vocab = 400  # ids the tokenizer can decode
    if name == "hf":
        from smallcode.export.hf import to_hf_model

        hf = to_hf_model(Checkpoint.open(root / "ckpt").load_model())

        def generate(prompts: list[list[int]], n: int) -> list[list[int]]:
            ids = torch.tensor(prompts)
            with torch.inference_mode():
                out = hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n,
                                  do_sample=False, pad_token_id=0)
            return out[:, ids.shape[1]:].tolist()

        def logits(ids: torch.Tensor) -> torch.Tensor:
            with torch.inference_mode():
                return hf(ids).logits
    else:
        if name == "torch":
            engine = Engine.from_checkpoint(root / "ckpt")
        else:
            from smallcode.runtime.load import open_engine

            engine = open_engine(root / name, threads=args.threads)

        def generate(prompts: list[list[int]], n: int) -> list[list[int]]:
            params = SamplingParams(max_tokens=n, ignore_eos=True)
            return [c.token_ids for c in engine.generate_ids(prompts, params)]

        def logits(ids: torch.Tensor) -> torch.Tensor:
            with torch.inference_mode():
                return engine.model(ids).logits  # type: ignore[operator]

    g = torch.Generator().manual_seed(1)
    result: dict[str, object] = {}
    for B in (1, 8):
        prompts = torch.randint(10, vocab, (B, args.prompt_len), generator=g).tolist()
        generate(prompts, 4)  # warm up
        times = []
        for _ in range(args.reps):
            t0 = time.perf_counter()
            generate(prompts, 1)
            t1 = time.perf_counter()
            generate(prompts, args.new_tokens + 1)
            times.append(time.perf_counter() - t1 - (t1 - t0))
        result[f"b{B}_tokens_per_s"] = round(B * args.new_tokens / statistics.median(times), 1)
    long_prompt = torch.randint(10, vocab, (1, args.ttft_len), generator=g).tolist()
    ttft = []
    for _ in range(args.reps):
        t0 = time.perf_counter()
        generate(long_prompt, 1)
        ttft.append(time.perf_counter() - t0)
    result["ttft_s"] = round(statistics.median(ttft), 3)
    _, held_out = json_files()
    ids = torch.tensor([[t for f in held_out for t in tokenizer.encode(f.read_text())][: args.loss_len + 1]])
    out = logits(ids[:, :-1]).float()
    result["heldout_loss"] = round(torch.nn.functional.cross_entropy(out[0], ids[0, 1:]).item(), 4)
    result["argmax"] = out[0].argmax(-1).tolist()
    result["peak_rss_mb"] = peak_rss_mb()
    return result


def peak_rss_mb() -> float:
    """This process's peak resident memory. VmHWM rather than getrusage: ru_maxrss survives exec, so
    a worker would report its parent's peak (the training and the exports)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--preset", default="nano")
    p.add_argument("--train-steps", type=int, default=0, help="AdamW steps on the json package before exporting")
    p.add_argument("--prompt-len", type=int, default=128)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--ttft-len", type=int, default=1000)
    p.add_argument("--loss-len", type=int, default=2000)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--runtimes", default=",".join(RUNTIMES))
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--root", type=Path, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.root, args)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        result: dict[str, object] = {"preset": args.preset, "n_global": 0, "train_steps": args.train_steps,
                                     "threads": args.threads, "prompt_len": args.prompt_len,
                                     "new_tokens": args.new_tokens, "ttft_len": args.ttft_len, **prepare(args, root)}
        runs = {}
        for name in args.runtimes.split(","):
            cmd = [sys.executable, __file__, "--worker", name, "--root", str(root)]
            for k in ("preset", "prompt_len", "new_tokens", "ttft_len", "loss_len", "reps", "threads"):
                cmd += [f"--{k.replace('_', '-')}", str(getattr(args, k))]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            runs[name] = json.loads(out.strip().splitlines()[-1])
            print(name, {k: v for k, v in runs[name].items() if k != "argmax"}, file=sys.stderr)
    ref = runs.get("torch")
    ref_argmax = ref["argmax"] if ref else None
    for name, r in runs.items():
        argmax = r.pop("argmax")
        if ref is not None:
            r["argmax_agreement"] = round(sum(a == b for a, b in zip(argmax, ref_argmax, strict=True))
                                          / len(argmax), 4)
            r["heldout_loss_change"] = round(r["heldout_loss"] / ref["heldout_loss"] - 1, 4)
            r["b1_speedup_vs_torch"] = round(r["b1_tokens_per_s"] / ref["b1_tokens_per_s"], 2)
        result[name] = r
    print(json.dumps(result))


if __name__ == "__main__":
    main()
