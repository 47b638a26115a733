"""Latency and throughput of ``smallcode serve`` as an editor sees it: fill-in-the-middle requests over HTTP.

Each configuration runs the real server (the engine, ``runtime.scheduler.Scheduler`` and the app) in
its own process on 127.0.0.1, so the clients' Python does not share the server's interpreter lock;
the clients are ``httpx`` async, streaming from llama.cpp's ``/infill`` (what llama.vscode sends), and
time to first token (TTFT) is the time from sending a request to its first streamed text.

The model is ``nano`` with random weights (``--checkpoint`` serves a trained one instead): speed
does not depend on what the weights say, and the server is told to ignore end-of-text, so every
request makes exactly ``--max-tokens`` tokens (the benchmark checks this from the final event's
``tokens_predicted``). The tokenizer is trained on the embedded corpus (the standard library) with
nano's vocabulary size, or loaded from ``--tokenizer``. Requests come from real standard-library
files: a cursor is put inside a line, the rest of that line is the text still to type, and the
prompt is the 1,000 tokens before the cursor and the 200 tokens after that line.

Measured:
- ``load``: 1, 4 and 16 concurrent clients, each sending its requests one after another, every
  request a different file and position (no prompt reuse between them): TTFT p50/p95 and completion
  tokens/s over the level's wall time. With continuous batching (the default server) and with
  ``batching=False`` (one request at a time: the baseline); both servers run side by side and take
  turns level by level on the same requests, so that the machine's load moves both alike.
- ``keystroke``: one client primes the server with a request at the cursor, then types the line
  a few characters per request (the suffix unchanged), as an editor does: TTFT p50/p95 and the
  prompt tokens served from the cache, with prompt reuse (the default cache), without it
  (``prompt_cache_mb=0``), and with the prompt laid out prefix-suffix-middle (PSM) instead of the
  server's suffix-prefix-middle (SPM). In SPM the suffix comes first and the prefix last, so the
  previous prompt is the start of the next one and only the typed characters are new; in PSM the
  suffix follows the prefix, so everything after the cursor (the 200 suffix tokens) is prefilled
  again at every keystroke. Last, the default server's keystroke requests again while
  ``--busy-clients`` other clients keep sending cold prompts: prefill is first come, first served,
  so a request with two tokens to feed waits for theirs.

- ``model``: the model alone in this process, no server: prefill of one prompt and a decode step at
  batch 1 and 16, and from them the best ratio any scheduler can reach at 16 clients.

Targets (issue #14, printed next to the figures): keystroke TTFT p50 <= 30 ms on 2 cores, and at
16 clients >= 3x the one-at-a-time throughput. llama-cpp-python's server is not measured: smallcode
has no GGUF export, and llama-cpp-python is not installed here (``--llama-cpp`` is not offered).

Last figures (2 cores shared with other jobs, load average 2.2-3.0; details and the analysis in
docs/serving.md#measured): keystroke TTFT p50 15.4 ms with prompt reuse (2 tokens prefilled), 339.2
ms without, 135.3 ms in the PSM layout (438 prefilled), 22.2 ms (p95 333.0) with 8 other clients
sending cold prompts; at 16 clients 226.0 vs 116.8 tokens/s batched vs one at a time (1.93x; other
runs 1.76x, 2.15x, 1.61x; 2.68x with 512-token completions). The model alone bounds the ratio at
1.89x for these requests: 16 prefills of 148 ms are 77% of the best batched schedule. The HTTP path
costs little: 16 requests straight to a Scheduler vs through the server, taking turns, 243-271 vs
255-261 tokens/s (one more round hit by outside load).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import random
import statistics
import sysconfig
import tempfile
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

TARGET_KEYSTROKE_TTFT_MS = 30.0
TARGET_SPEEDUP_16 = 3.0


# ----------------------------------------------------------------------------- the server (child process)
@dataclass
class ServerOptions:
    """How one server process is built."""

    tokenizer: str
    checkpoint: str | None
    threads: int
    batching: bool = True
    prompt_cache_mb: float = 256
    layout: str = "spm"  # "spm": the server's own prompt format; "psm": the benchmark's PSM variant
    max_batch: int = 16


class _IgnoreEos:
    """The scheduler, with end-of-text ignored, so every request makes exactly its max_tokens."""

    def __init__(self, scheduler: Any) -> None:
        self._scheduler = scheduler

    def submit(self, ids: list[int], params: Any, **kwargs: Any) -> Any:
        return self._scheduler.submit(ids, replace(params, ignore_eos=True), **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._scheduler, name)


class _PsmFormat:
    """The server's prompt format with fill-in-the-middle laid out prefix-suffix-middle."""

    def __init__(self, inner: Any, tokenizer: Any) -> None:
        self._inner = inner
        self._tokenizer = tokenizer
        self.name = f"{inner.name}-psm"

    def fim(self, prefix: str, suffix: str, extra: Any = ()) -> list[int]:
        if extra:
            raise ValueError("the PSM variant takes no context files")
        return self._tokenizer.fim_prompt(prefix, suffix, "psm")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def build_engine(options: ServerOptions) -> Any:
    """The served engine: the checkpoint, or nano with random weights. Built in a thread that ends, as
    ``smallcode serve`` loads its model (see the Scheduler's docstring: an OpenMP pool left in a live
    thread would halve the model loop's decode speed)."""
    import torch

    from smallcode.model import ModelConfig, SmallCodeLM
    from smallcode.runtime.engine import Engine
    from smallcode.tokenizer import load_tokenizer

    built: list[Engine] = []

    def build() -> None:
        if options.checkpoint:
            built.append(Engine.from_checkpoint(options.checkpoint))
            return
        torch.manual_seed(0)
        tokenizer = load_tokenizer(options.tokenizer)
        built.append(Engine(SmallCodeLM(ModelConfig.preset("nano", vocab_size=max(8192, tokenizer.vocab_size))),
                            tokenizer))

    loader = threading.Thread(target=build)
    loader.start()
    loader.join()
    if not built:
        raise RuntimeError("building the engine failed (see the traceback above)")
    return built[0]


def _serve(options: ServerOptions, port_out: Any) -> None:
    """Child process: build the model, scheduler and app; serve on a free loopback port until killed."""
    import torch
    import uvicorn

    from smallcode.runtime.formats import prompt_format
    from smallcode.runtime.scheduler import Scheduler
    from smallcode.serve.app import create_app

    torch.set_num_threads(options.threads)
    engine = build_engine(options)
    scheduler = Scheduler(engine, max_batch=options.max_batch, max_queue=256, batching=options.batching,
                          prompt_cache_mb=options.prompt_cache_mb)
    fmt = prompt_format(engine.tokenizer)
    if options.layout == "psm":
        fmt = _PsmFormat(fmt, engine.tokenizer)
    app = create_app(_IgnoreEos(scheduler), fmt, model_name="bench")
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off"))

    async def run() -> None:
        task = asyncio.create_task(server.serve())
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        port_out.put(server.servers[0].sockets[0].getsockname()[1])
        await task

    asyncio.run(run())


class Server:
    """A server process for one configuration; ``with Server(opts) as url``."""

    def __init__(self, options: ServerOptions) -> None:
        self.options = options
        ctx = mp.get_context("spawn")  # a fresh interpreter: no torch threads inherited from the parent
        self._port: Any = ctx.Queue()
        self._process = ctx.Process(target=_serve, args=(options, self._port), daemon=True)

    def __enter__(self) -> str:
        self._process.start()
        port = self._port.get(timeout=300)
        return f"http://127.0.0.1:{port}"

    def __exit__(self, *exc: object) -> None:
        self._process.terminate()
        self._process.join(30)


# ----------------------------------------------------------------------------- the requests
@dataclass
class Doc:
    """One cursor in a real file: the text before it, the rest of its line (to be typed), the text after."""

    name: str
    prefix: str
    line_rest: str
    suffix: str


def make_docs(tokenizer: Any, count: int, prefix_tokens: int, suffix_tokens: int, seed: int) -> list[Doc]:
    """``count`` cursors in distinct standard-library files, each with a line of >= 12 characters to type."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in stdlib.rglob("*.py") if p.stat().st_size > 20_000 and "site-packages" not in p.parts)
    rng = random.Random(seed)
    rng.shuffle(files)
    docs: list[Doc] = []
    for path in files:
        text = path.read_text(encoding="utf-8", errors="replace")
        # Cursors at the first non-blank character of a line long enough to type a few keys of.
        starts = [i for i in range(1, len(text)) if text[i - 1] == "\n" and text[i] not in " \n"]
        rng.shuffle(starts)
        for at in starts[:50]:
            end = text.find("\n", at)
            if end - at < 12:
                continue
            before = tokenizer.encode(text[:at])
            after = tokenizer.encode(text[end:])
            if len(before) < prefix_tokens or len(after) < suffix_tokens:
                continue
            docs.append(Doc(path.name, tokenizer.decode(before[-prefix_tokens:]), text[at:end],
                            tokenizer.decode(after[:suffix_tokens])))
            break
        if len(docs) == count:
            return docs
    raise SystemExit(f"only {len(docs)} standard-library files have a usable cursor; asked for {count}")


@dataclass
class Sample:
    ttft_s: float
    total_s: float
    tokens: int
    cached: int
    evaluated: int


async def infill(client: Any, url: str, prefix: str, suffix: str, n_predict: int) -> Sample:
    """One streamed /infill request; its time to first text and the final event's counts."""
    body = {"input_prefix": prefix, "input_suffix": suffix, "n_predict": n_predict, "stream": True,
            "temperature": 0.0, "cache_prompt": True}
    t0 = time.perf_counter()
    ttft = None
    final: dict[str, Any] = {}
    async with client.stream("POST", f"{url}/infill", json=body) as response:
        if response.status_code != 200:
            raise RuntimeError(f"/infill answered {response.status_code}: {(await response.aread())[:300]!r}")
        async for line in response.aiter_lines():
            if not line.startswith("data: "):
                continue
            event = json.loads(line[6:])
            if "error" in event:
                raise RuntimeError(f"/infill stream failed: {event['error']}")
            if ttft is None and event.get("content"):
                ttft = time.perf_counter() - t0
            if event.get("stop"):
                final = event
    total = time.perf_counter() - t0
    return Sample(ttft if ttft is not None else total, total, int(final.get("tokens_predicted", 0)),
                  int(final.get("tokens_cached", 0)), int(final.get("tokens_evaluated", 0)))


def pct(values: list[float], q: float) -> float:
    """The q-th percentile (linear interpolation, as numpy's default)."""
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


async def load_level(url: str, docs: list[Doc], clients: int, per_client: int, max_tokens: int,
                     progress: Any) -> dict[str, Any]:
    """``clients`` clients, each sending ``per_client`` requests in turn; all requests distinct."""
    import httpx

    jobs = docs[: clients * per_client]
    samples: list[Sample] = []
    async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=clients)) as client:

        async def one_client(mine: list[Doc]) -> None:
            for d in mine:
                samples.append(await infill(client, url, d.prefix, d.suffix, max_tokens))
                progress.update(1)

        t0 = time.perf_counter()
        await asyncio.gather(*(one_client(jobs[i::clients]) for i in range(clients)))
        wall = time.perf_counter() - t0
    lengths = {s.tokens for s in samples}
    if lengths != {max_tokens}:
        raise RuntimeError(f"completions were {sorted(lengths)} tokens long, not all {max_tokens}")
    ttfts = [s.ttft_s * 1000 for s in samples]
    return {"clients": clients, "requests": len(samples), "wall_s": round(wall, 2),
            "ttft_p50_ms": round(pct(ttfts, 50), 1), "ttft_p95_ms": round(pct(ttfts, 95), 1),
            "tokens_per_s": round(sum(s.tokens for s in samples) / wall, 1),
            "prompt_tokens_mean": round(statistics.mean(s.evaluated for s in samples), 1)}


async def keystrokes(urls: dict[str, str], docs: list[Doc], keys: int, chars: int, max_tokens: int,
                     progress: Any) -> dict[str, dict[str, Any]]:
    """Per doc and per server in turn: a priming request at the cursor, then ``keys`` requests, each
    ``chars`` more characters typed. The servers take turns doc by doc, so that a change in the
    machine's load hits them alike."""
    import httpx

    samples: dict[str, list[Sample]] = {name: [] for name in urls}
    async with httpx.AsyncClient(timeout=600) as client:
        for d in docs:
            for name, url in urls.items():
                await infill(client, url, d.prefix, d.suffix, max_tokens)
                for k in range(1, keys + 1):
                    typed = d.prefix + d.line_rest[: k * chars]
                    samples[name].append(await infill(client, url, typed, d.suffix, max_tokens))
            progress.update(1)
    out = {}
    for name, got in samples.items():
        ttfts = [s.ttft_s * 1000 for s in got]
        out[name] = {"requests": len(got), "ttft_p50_ms": round(pct(ttfts, 50), 1),
                     "ttft_p95_ms": round(pct(ttfts, 95), 1),
                     "prompt_tokens_mean": round(statistics.mean(s.evaluated for s in got), 1),
                     "cached_tokens_mean": round(statistics.mean(s.cached for s in got), 1),
                     "prefilled_tokens_mean": round(statistics.mean(s.evaluated - s.cached for s in got), 1)}
    return out


async def keystrokes_busy(url: str, cold: list[Doc], docs: list[Doc], clients: int, keys: int, chars: int,
                          max_tokens: int, progress: Any) -> dict[str, Any]:
    """The keystroke requests of :func:`keystrokes` on one server while ``clients`` other clients
    keep sending cold prompts (``cold``, distinct files, 64 tokens each): how long a request that
    has almost nothing to prefill waits behind prompts that have everything to prefill."""
    import httpx

    samples: list[Sample] = []
    done = False
    async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=clients + 1)) as client:

        async def cold_client(mine: list[Doc]) -> None:
            for d in mine:
                if done:
                    return
                await infill(client, url, d.prefix, d.suffix, 64)

        others = [asyncio.create_task(cold_client(cold[i::clients])) for i in range(clients)]
        await asyncio.sleep(1.0)  # let the others fill the server first
        for d in docs:
            await infill(client, url, d.prefix, d.suffix, max_tokens)
            for k in range(1, keys + 1):
                samples.append(await infill(client, url, d.prefix + d.line_rest[: k * chars], d.suffix, max_tokens))
            progress.update(1)
        done = True
        await asyncio.gather(*others)
    ttfts = [s.ttft_s * 1000 for s in samples]
    return {"requests": len(samples), "other_clients": clients, "ttft_p50_ms": round(pct(ttfts, 50), 1),
            "ttft_p95_ms": round(pct(ttfts, 95), 1),
            "prefilled_tokens_mean": round(statistics.mean(s.evaluated - s.cached for s in samples), 1)}


# ----------------------------------------------------------------------------- the model alone
def model_costs(options: ServerOptions, docs: list[Doc], max_tokens: int, batch: int, reps: int) -> dict[str, Any]:
    """What the model itself costs, in this process with no server: prefill of one prompt (in the
    scheduler's pieces) and one decode step at batch 1 and at ``batch``. From them, the best
    throughput ratio any scheduler can reach at ``batch`` clients (prefill cannot be shared between
    different prompts, so it is paid once per request either way). The fastest time of each is taken:
    the model's cost when nothing else wants the cores."""
    import torch

    from smallcode.model.kv_cache import KVCache
    from smallcode.runtime.engine import Prefill
    from smallcode.runtime.formats import prompt_format

    torch.set_num_threads(options.threads)
    engine = build_engine(options)
    fmt = prompt_format(engine.tokenizer)
    prompts = [fmt.fim(d.prefix, d.suffix) for d in docs[:batch]]
    with torch.inference_mode():
        prefill_s, caches = [], []
        for ids in prompts:
            t0 = time.perf_counter()
            cache, _ = Prefill(engine, ids, extra_slots=max_tokens + reps, chunk=256).run()
            prefill_s.append(time.perf_counter() - t0)
            caches.append(cache)
        step_s = {}
        for b in (1, batch):
            cache = KVCache.stack([c.select([0]) for c in caches[:b]])
            engine.decode_step(cache, [10] * b)  # first-use costs
            times = []
            for _ in range(reps):
                t0 = time.perf_counter()
                engine.decode_step(cache, [10] * b)
                times.append(time.perf_counter() - t0)
            step_s[b] = min(times)
    p = min(prefill_s)
    one_at_a_time = batch * (p + max_tokens * step_s[1])
    batched = batch * p + max_tokens * step_s[batch]
    return {"prompt_tokens": round(statistics.mean(len(x) for x in prompts)), "prefill_ms": round(p * 1000, 1),
            "decode_step_ms_b1": round(step_s[1] * 1000, 2), f"decode_step_ms_b{batch}": round(step_s[batch] * 1000, 2),
            "batch": batch, "prefill_share_batched": round(batch * p / batched, 2),
            "best_speedup": round(one_at_a_time / batched, 2)}


# ----------------------------------------------------------------------------- main
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", help="serve this smallcode checkpoint (default: nano, random weights)")
    p.add_argument("--tokenizer", help="tokenizer directory (default: train one on the standard library)")
    p.add_argument("--threads", type=int, default=2, help="torch threads in the server")
    p.add_argument("--clients", default="1,4,16", help="concurrency levels")
    p.add_argument("--rounds", type=int, default=2, help="requests each client sends (at least 8 per level)")
    p.add_argument("--max-tokens", type=int, default=128, help="tokens per completion (end-of-text ignored)")
    p.add_argument("--prefix-tokens", type=int, default=1000)
    p.add_argument("--suffix-tokens", type=int, default=200)
    p.add_argument("--keystroke-docs", type=int, default=8, help="files typed into by the keystroke test")
    p.add_argument("--keys", type=int, default=4, help="requests per file in the keystroke test")
    p.add_argument("--chars", type=int, default=3, help="characters typed between two requests")
    p.add_argument("--keystroke-max-tokens", type=int, default=16)
    p.add_argument("--busy-clients", type=int, default=8,
                   help="other clients sending cold prompts during the last keystroke test (0: skip it)")
    p.add_argument("--only", choices=["load", "keystroke", "model"], help="run one part only")
    p.add_argument("--out", type=Path, help="also write the JSON result here")
    args = p.parse_args()

    from rich.console import Console
    from rich.table import Table
    from tqdm import tqdm

    from smallcode.tokenizer import load_tokenizer, train_tokenizer

    levels = [int(c) for c in args.clients.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        if args.tokenizer:
            tok_dir = args.tokenizer
        elif args.checkpoint:
            tok_dir = args.checkpoint
        else:
            tok_dir = tmp
            print("training a tokenizer on the standard library (vocab 8192) ...", flush=True)
            train_tokenizer(None, 8192, tok_dir, show_progress=False)
        tokenizer = load_tokenizer(tok_dir)
        # At least 8 requests per level, so that its percentiles mean something.
        per_level = {c: max(args.rounds, -(-8 // c)) for c in levels}
        # Different documents for each level and for the keystroke test: no prompt is ever seen twice.
        n_load = sum(c * per_level[c] for c in levels)
        n_busy = 4 * args.busy_clients if args.busy_clients else 0
        docs = make_docs(tokenizer, n_load + args.keystroke_docs + n_busy, args.prefix_tokens, args.suffix_tokens,
                         seed=0)
        load_docs, key_docs = docs[:n_load], docs[n_load:n_load + args.keystroke_docs]
        busy_docs = docs[n_load + args.keystroke_docs:]
        base = ServerOptions(tokenizer=tok_dir, checkpoint=args.checkpoint, threads=args.threads)
        result: dict[str, Any] = {
            "model": args.checkpoint or "nano (random weights)", "threads": args.threads,
            "max_tokens": args.max_tokens, "prefix_tokens": args.prefix_tokens, "suffix_tokens": args.suffix_tokens,
            "cpus": os.cpu_count(), "loadavg_before": [round(x, 2) for x in os.getloadavg()],
            "llama_cpp": "not attempted: no GGUF export in smallcode, llama-cpp-python not installed",
            "targets": {"keystroke_ttft_p50_ms": TARGET_KEYSTROKE_TTFT_MS, "speedup_at_16": TARGET_SPEEDUP_16},
        }

        def servers(configs: dict[str, ServerOptions], stack: ExitStack) -> dict[str, str]:
            urls = {name: stack.enter_context(Server(options)) for name, options in configs.items()}
            for url in urls.values():
                asyncio.run(infill_warmup(url))
            return urls

        if args.only in (None, "load"):
            # Both servers run at once and take turns level by level, on the same requests.
            configs = {"batched": base, "one_at_a_time": replace(base, batching=False)}
            with ExitStack() as stack, tqdm(total=2 * n_load, desc="load", unit="req") as bar:
                urls = servers(configs, stack)
                offset = 0
                for c in levels:
                    n = c * per_level[c]
                    for name, url in urls.items():
                        row = asyncio.run(load_level(url, load_docs[offset:offset + n], c, per_level[c],
                                                     args.max_tokens, bar))
                        result.setdefault(f"load_{name}", []).append(row)
                    offset += n
        if args.only in (None, "keystroke"):
            configs = {"reuse_spm": base, "no_reuse": replace(base, prompt_cache_mb=0),
                       "reuse_psm": replace(base, layout="psm")}
            with ExitStack() as stack, tqdm(total=len(key_docs), desc="keystroke", unit="file") as bar:
                urls = servers(configs, stack)
                got = asyncio.run(keystrokes(urls, key_docs, args.keys, args.chars, args.keystroke_max_tokens, bar))
            for name, row in got.items():
                result[f"keystroke_{name}"] = row
            if args.busy_clients:
                with Server(base) as url, tqdm(total=len(key_docs), desc="keystroke, busy", unit="file") as bar:
                    asyncio.run(infill_warmup(url))
                    result["keystroke_reuse_spm_busy"] = asyncio.run(keystrokes_busy(
                        url, busy_docs, key_docs, args.busy_clients, args.keys, args.chars, args.keystroke_max_tokens,
                        bar))
        if args.only in (None, "model"):
            print("timing the model alone ...", flush=True)
            result["model_alone"] = model_costs(base, load_docs or docs, args.max_tokens, max(levels), reps=20)
        result["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]

    console = Console(width=120)
    if args.only in (None, "load"):
        table = Table(title=f"/infill load: {args.prefix_tokens}+{args.suffix_tokens}-token FIM prompts, "
                            f"{args.max_tokens} tokens each")
        for col in ("clients", "server", "requests", "TTFT p50 ms", "TTFT p95 ms", "tokens/s", "vs one at a time"):
            table.add_column(col, justify="right")
        for batched, single in zip(result["load_batched"], result["load_one_at_a_time"], strict=True):
            speedup = batched["tokens_per_s"] / single["tokens_per_s"]
            result.setdefault("speedup", {})[str(batched["clients"])] = round(speedup, 2)
            target = f" (target >= {TARGET_SPEEDUP_16:g}x)" if batched["clients"] == 16 else ""
            for name, row, ratio in (("batched", batched, f"{speedup:.2f}x{target}"), ("one at a time", single, "")):
                table.add_row(str(row["clients"]), name, str(row["requests"]), f"{row['ttft_p50_ms']:.1f}",
                              f"{row['ttft_p95_ms']:.1f}", f"{row['tokens_per_s']:.1f}", ratio)
        console.print(table)
    if args.only in (None, "model"):
        m = result["model_alone"]
        b = m["batch"]
        console.print(f"the model alone, no server: prefill of a {m['prompt_tokens']}-token prompt "
                      f"{m['prefill_ms']:.0f} ms; decode step {m['decode_step_ms_b1']:.1f} ms at batch 1, "
                      f"{m[f'decode_step_ms_b{b}']:.1f} ms at batch {b}; at {b} clients prefill is "
                      f"{m['prefill_share_batched']:.0%} of a perfect batched run, and no scheduler can beat "
                      f"{m['best_speedup']:.2f}x one at a time")
    if args.only not in ("load", "model"):
        table = Table(title=f"one more keystroke: {args.chars} characters typed, {args.keys} times per file, "
                            f"{len(key_docs)} files")
        for col in ("server", "TTFT p50 ms", "TTFT p95 ms", "prompt tokens", "from cache", "prefilled"):
            table.add_column(col, justify="right")
        for name, label in (("reuse_spm", "reuse, SPM (default)"), ("no_reuse", "no reuse (cache 0 MB)"),
                            ("reuse_psm", "reuse, PSM layout")):
            row = result[f"keystroke_{name}"]
            table.add_row(label, f"{row['ttft_p50_ms']:.1f}", f"{row['ttft_p95_ms']:.1f}",
                          f"{row['prompt_tokens_mean']:.0f}", f"{row['cached_tokens_mean']:.0f}",
                          f"{row['prefilled_tokens_mean']:.0f}")
        if "keystroke_reuse_spm_busy" in result:
            row = result["keystroke_reuse_spm_busy"]
            table.add_row(f"reuse, SPM, {row['other_clients']} other clients", f"{row['ttft_p50_ms']:.1f}",
                          f"{row['ttft_p95_ms']:.1f}", "", "", f"{row['prefilled_tokens_mean']:.0f}")
        console.print(table)
        console.print(f"target: keystroke TTFT p50 <= {TARGET_KEYSTROKE_TTFT_MS:g} ms "
                      f"(measured {result['keystroke_reuse_spm']['ttft_p50_ms']:.1f})")
    console.print(f"llama-cpp-python: {result['llama_cpp']}")
    line = json.dumps(result)
    if args.out:
        args.out.write_text(line + "\n")
    print(line)


async def infill_warmup(url: str) -> None:
    """Wait until the model is ready, and run one short request so that first-use costs are not measured."""
    import httpx

    async with httpx.AsyncClient(timeout=600) as client:
        for _ in range(3000):
            try:
                if (await client.get(f"{url}/health")).json().get("status") == "ok":
                    break
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
        await infill(client, url, "def f(x):\n    return", "\n", 4)


if __name__ == "__main__":
    main()
