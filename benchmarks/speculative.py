"""Speculative decoding, measured: plain vs prompt lookup (n-gram) vs a draft model, greedy, on held-out code.

Issue #24. Three workloads, every prompt taken from the held-out third-party Python that no model of
the recipe trained on (``smallcode.eval.heldout.held_out_set``):

1. **edit**: agent replies that edit code shown in their prompt. Each prompt is laid out by the agent
   itself (``smallcode.agent.run_agent`` on a one-file copy of a held-out file, its model a recorder):
   the system message with the action format, the task ("rename the local variable ``x`` of ``f`` to
   ``new_x``" for a function of that file), the agent's ``read`` of the function's lines and the
   numbered lines that read showed. The reply is opened with the edit block's first lines, as an
   agent reply opens it (`````edit``, the path, ``<<<<<<< SEARCH``; the line break is the model's, as
   the tokenizer spells it with the next line's indentation), and the model writes the rest
   itself (``--edit-max-tokens``, no stop but the model's own).
2. **fim**: a cursor in a line of a held-out file, drawn as ``smallcode eval lines`` draws them, the
   rest of that line deleted (the text still to type); prefix and suffix cut by the language server's
   own budget (``lsp.context.build_context``)
   and laid out by ``Engine.complete``; ``max_tokens`` and stop as the language server sets them for a
   completion triggered while typing (``lsp.server.Settings.auto_max_tokens``; a newline stop only
   when text follows the cursor on its line, ``lsp.postprocess.multiline``).
3. **free**: a held-out function's signature and docstring (up to its closing quotes), continued for
   ``--free-max-tokens`` (128).

Each prompt runs on every engine in turn (the order rotating from prompt to prompt), after one warm-up
request per engine: ``plain`` (``open_engine(model)``), ``ngram`` (``open_engine(model,
speculate="ngram")``) and ``draft`` (``open_engine(draft_target, speculate="draft:DRAFT")``, compared
with ``plain`` on the same target). Per workload and engine: tokens/s (generated tokens over the
requests' wall time, prefill included), decode tokens/s (the same with each prompt's prefill taken
out: the wall time of the same request with ``max_tokens=1`` on the same engine), the speedup of both
over plain on the same target, the acceptance rate (accepted / proposed tokens, from
``engine.spec_stats``) and how many completions are token-for-token identical to plain's (greedy: all
of them, or the engine is wrong). ``copied_lines`` is the share of the completions' non-blank lines
that occur in the code the prompt shows: how much a workload copies, what prompt lookup lives on;
``distinct_4`` the completions' mean distinct-4-gram ratio (``eval.samples``, as ``speedrun.py``
reports it): a small model's greedy output that loops (low ratio) is what prompt lookup guesses best,
so read a speedup beside it.

Then the server: **keystroke TTFT**, with and without ``--speculate ngram``. Each server is the app
built in Python (``create_app`` + ``Scheduler(open_engine(model, speculate=...))`` + uvicorn on
127.0.0.1) in a process of its own, as ``serve_latency.py`` runs its servers, so that neither the
client's interpreter lock nor the other server's OpenMP pool slows it; both run at once and take
turns file by file. A client types the rest of a held-out line one character per ``/infill`` request
(streamed, ``n_predict`` the LSP's), after one priming request at the cursor: time to first text,
p50/p95 (``serve_latency.keystrokes``).

Defaults: the trained nano recipe under ``--runs`` (``make run``'s ``runs/nano``, stages of
``--recipe``): the recipe's final model as the target of plain and n-gram, and its dense student
drafting the MoE stage it was upcycled into (the draft pair of the issue). ``--model``, ``--draft`` and
``--draft-target`` take any checkpoint or ONNX export instead. Goals (issue #24): >= 2x on edits, >= 1.3x
on FIM, >= 0.95x on free generation, keystroke TTFT unchanged (within noise).

    python benchmarks/speculative.py                      # runs/nano; about 3.5 minutes on 2 idle cores
    python benchmarks/speculative.py --smoke              # a tiny random model: runs every path, figures meaningless
    python benchmarks/speculative.py --dry-run            # the prompts and models, nothing timed

The last line printed is one JSON object.

With ``configs/nano/draft.yaml`` trained into ``<runs>/draft`` (``smallcode train configs/nano/draft.yaml
--out runs/nano/draft``), that cheaper draft also drafts for the final model (``draft_small``).

Last figures (2 idle cores, docs/benchmarks.md): prompt lookup 1.40x on edits (1.91x decode only),
0.99x on FIM, 1.64x on free generation, keystroke TTFT 0.92x; draft models 0.47-0.79x.
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import dataclasses
import json
import multiprocessing as mp
import os
import random
import statistics
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
GOALS = {"edit": 2.0, "fim": 1.3, "free": 0.95}
"""Speedup over plain decoding that issue #24 asks for, per workload (tokens/s, greedy)."""
WORKLOADS = ("edit", "fim", "free")
EDIT_OPENER = "```edit\n{path}\n<<<<<<< SEARCH"
"""How the edit replies start: the block opener of an agent's edit (``agent.actions``), then the model.
Prompts stop before a line break: the tokenizer spells a line break with the next line's indentation
as one token, so a prompt ending in a bare line break would force a split the model never saw."""


# ----------------------------------------------------------------------------- engines
def built_in_thread(build: Callable[[], Any]) -> Any:
    """``build()`` run in a thread that ends, as ``smallcode serve`` loads its model (the OpenMP note in
    ``runtime.scheduler``'s docstring)."""
    built: list[Any] = []
    loader = threading.Thread(target=lambda: built.append(build()))
    loader.start()
    loader.join()
    if not built:
        raise RuntimeError("building the engine failed (see the traceback above)")
    return built[0]


def open_mode(path: str, speculate: str | None, k: int | None = None) -> Any:
    """The engine on ``path``: plain (``speculate`` None) or speculating (``"ngram"``, ``"draft:DIR"``),
    with ``k`` proposed tokens per step when given (else the engine's own, adaptive, choice)."""
    from smallcode.runtime.load import open_engine
    from smallcode.runtime.speculative import Speculation

    if speculate is None:
        return open_engine(path)
    return open_engine(path, speculate=Speculation.parse(speculate) if k is None else Speculation.parse(speculate, k=k))


def spec_counts(engine: Any) -> tuple[int, int, int]:
    """The engine's cumulative (proposed, accepted, verify steps); zeros for an engine that does not speculate."""
    stats = engine.spec_stats
    return stats.proposed, stats.accepted, stats.steps


@dataclass(frozen=True)
class Mode:
    """One engine of the comparison and the plain engine it is compared with."""

    name: str
    path: str
    speculate: str | None
    baseline: str


def modes(model: str, draft_target: str, draft: str, small_draft: str | None = None) -> list[Mode]:
    """plain and n-gram on ``model``; ``draft`` drafting for ``draft_target``, beside plain on that target;
    ``small_draft`` (when given) drafting for ``model``."""
    out = [Mode("plain", model, None, "plain")]
    out.append(Mode("ngram", model, "ngram", "plain"))
    if small_draft is not None:
        out.append(Mode("draft_small", model, f"draft:{small_draft}", "plain"))
    base = "plain"
    if Path(draft_target).resolve() != Path(model).resolve():
        base = "plain_draft_target"
        out.append(Mode(base, draft_target, None, base))
    out.append(Mode("draft", draft_target, f"draft:{draft}", base))
    return out


# ----------------------------------------------------------------------------- prompts
@dataclass
class Job:
    """One request of a workload: how it is sent to an engine, and the code its prompt shows."""

    label: str
    call: Callable[[Any, Any], Any]
    """``call(engine, params)`` -> the ``Completion``."""
    params: Any
    shown: str
    """The code in the prompt (for the copied-lines share)."""
    prompt_chars: int = 0


def _functions(texts: list[tuple[str, str]]) -> list[tuple[str, str, ast.FunctionDef | ast.AsyncFunctionDef]]:
    out = []
    for name, text in texts:
        try:
            tree = ast.parse(text)
        except SyntaxError:
            continue
        out += [(name, text, node) for node in ast.walk(tree)
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)]
    return out


def _local_name(node: ast.FunctionDef | ast.AsyncFunctionDef) -> str | None:
    """A name the function assigns (else its first parameter), to be renamed by the edit task."""
    for sub in ast.walk(node):
        if isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Store) and len(sub.id) >= 3:
            return sub.id
    params = [a.arg for a in node.args.args if a.arg not in ("self", "cls")]
    return params[0] if params else None


class _Recorder:
    """The agent's model for one prompt: it reads the lines it is given, then records the conversation
    the agent lays out for the next reply (and submits, which ends the run)."""

    name = "specbench-recorder"

    def __init__(self, read_reply: str) -> None:
        self.read_reply = read_reply
        self.messages: list[dict[str, str]] | None = None

    def chat(self, messages: list[dict[str, str]], n: int = 1, temperature: float = 0.0, max_tokens: int = 0,
             seed: int = 0) -> list[Any]:
        from smallcode.agent.models import Reply

        if self.messages is None and len(messages) == 2:
            return [Reply(self.read_reply, 0, 0)] * n
        self.messages = [dict(m) for m in messages]
        return [Reply("```submit\n```", 0, 0)] * n


def edit_jobs(fmt: Any, files: list[tuple[str, str]], count: int, max_tokens: int, seed: int,
              work: Path) -> list[Job]:
    """``count`` agent edit prompts over functions of ``files`` (see the module docstring)."""
    from smallcode.agent import AgentConfig, Workspace, run_agent
    from smallcode.runtime.sampling import SamplingParams

    candidates = []
    for name, text, node in _functions(files):
        lo = min([node.lineno, *(d.lineno for d in node.decorator_list)])
        hi = node.end_lineno or node.lineno
        body = "\n".join(text.splitlines()[lo - 1:hi])
        old = _local_name(node)
        if 10 <= hi - lo + 1 <= 60 and len(body) <= 3000 and old:  # the read fits the agent's observation
            candidates.append((name, text, node, lo, hi, body, old))
    random.Random(seed).shuffle(candidates)
    if len(candidates) < count:
        raise SystemExit(f"only {len(candidates)} held-out functions fit an edit prompt; asked for {count}")
    jobs = []
    for i, (name, text, node, lo, hi, body, old) in enumerate(candidates[:count]):
        repo = work / f"edit{i}"
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text, encoding="utf-8")
        task = f"In {name}, rename the local variable `{old}` of `{node.name}` to `new_{old}`."
        recorder = _Recorder(f"I will read `{node.name}` first.\n```read\n{name}:{lo}-{hi}\n```")
        with Workspace(repo) as ws:
            run_agent(task, ws, recorder, AgentConfig(max_steps=2))
        if recorder.messages is None:
            raise RuntimeError(f"the agent did not ask for a second reply on {name}")
        ids = fmt.chat(recorder.messages) + fmt.encode(EDIT_OPENER.format(path=name))
        jobs.append(Job(f"{name}:{node.name}", lambda engine, params, ids=ids: engine.generate_ids([ids], params)[0],
                        SamplingParams(max_tokens=max_tokens, temperature=0.0), body, len(fmt.decode(ids))))
    return jobs


@dataclass
class Cursor:
    """A cursor inside a line of a held-out file, the rest of the line deleted: the LSP's context there."""

    name: str
    prefix: str
    suffix: str
    line_rest: str
    multiline: bool


def cursors(files: list[tuple[str, str]], count: int, seed: int, min_rest: int = 8) -> list[Cursor]:
    """``count`` cursors drawn as ``smallcode eval lines`` draws them (``eval.lines.draw_cursors``), those
    with at least ``min_rest`` characters left to type on their line, in a seeded order across files;
    prefix and suffix cut by the language server's budget."""
    from smallcode.eval.lines import draw_cursors
    from smallcode.lsp.context import build_context
    from smallcode.lsp.postprocess import multiline

    drawn = [t for t in draw_cursors(files, 10 * count, seed) if len(t.target) >= min_rest]
    random.Random(seed).shuffle(drawn)
    if len(drawn) < count:
        raise SystemExit(f"only {len(drawn)} usable cursors in the held-out files; asked for {count}")
    out = []
    for t in drawn[:count]:
        ctx = build_context(t.prefix + t.suffix, len(t.prefix), path=t.file, language_id="python")
        out.append(Cursor(t.file, ctx.prefix, ctx.suffix, t.target, multiline(ctx)))
    return out


def fim_jobs(points: list[Cursor], max_tokens: int) -> list[Job]:
    """A completion at each cursor, as the language server asks for one while the user types."""
    from smallcode.runtime.sampling import SamplingParams

    return [Job(c.name, lambda engine, params, c=c: engine.complete(c.prefix, c.suffix, params)[0],
                SamplingParams(max_tokens=max_tokens, temperature=0.0, stop=[] if c.multiline else ["\n"]),
                c.prefix + c.suffix, len(c.prefix) + len(c.suffix)) for c in points]


def free_jobs(files: list[tuple[str, str]], count: int, max_tokens: int, seed: int) -> list[Job]:
    """A held-out function's signature and docstring (dedented), continued."""
    from smallcode.runtime.sampling import SamplingParams

    prompts = []
    for name, text, node in _functions(files):
        doc = node.body[0] if node.body else None
        if ast.get_docstring(node) is None or doc is None or not doc.end_lineno:
            continue
        if doc.end_lineno - node.lineno > 16:
            continue
        head = textwrap.dedent("\n".join(text.splitlines()[node.lineno - 1:doc.end_lineno]))  # see EDIT_OPENER
        prompts.append((f"{name}:{node.name}", head))
    random.Random(seed).shuffle(prompts)
    if len(prompts) < count:
        raise SystemExit(f"only {len(prompts)} held-out functions have a short docstring; asked for {count}")
    return [Job(label, lambda engine, params, p=p: engine.generate(p, params)[0],
                SamplingParams(max_tokens=max_tokens, temperature=0.0), p, len(p)) for label, p in prompts[:count]]


# ----------------------------------------------------------------------------- timing the engines
@dataclass
class Sample:
    ids: list[int]
    text: str
    prompt_tokens: int
    wall_s: float
    prefill_s: float
    spec: tuple[int, int, int]


def timed(engine: Any, job: Job) -> Sample:
    """One request (its spec counters' change with it), then the same with ``max_tokens=1``: its prefill."""
    before = spec_counts(engine)
    t0 = time.perf_counter()
    done = job.call(engine, job.params)
    wall = time.perf_counter() - t0
    after = spec_counts(engine)
    t0 = time.perf_counter()
    job.call(engine, dataclasses.replace(job.params, max_tokens=1))
    prefill = time.perf_counter() - t0
    return Sample(list(done.token_ids), done.text, done.prompt_tokens, wall, prefill,
                  tuple(a - b for a, b in zip(after, before, strict=True)))  # type: ignore[arg-type]


def copied_share(samples: list[Sample], jobs: list[Job]) -> float | None:
    """The share of the completions' non-blank lines that occur (stripped) among the prompt's code lines."""
    hits = total = 0
    for s, job in zip(samples, jobs, strict=True):
        shown = {ln.strip() for ln in job.shown.splitlines() if ln.strip()}
        lines = [ln.strip() for ln in s.text.splitlines() if ln.strip()]
        total += len(lines)
        hits += sum(ln in shown for ln in lines)
    return round(hits / total, 3) if total else None


def run_workload(engines: dict[str, Any], all_modes: list[Mode], jobs: list[Job], progress: Any) -> dict[str, Any]:
    """Every job on every engine, the engines' order rotating job by job, after a warm-up each."""
    from smallcode.eval.samples import distinct_ngram_ratio

    for engine in engines.values():
        jobs[0].call(engine, dataclasses.replace(jobs[0].params, max_tokens=min(8, jobs[0].params.max_tokens)))
    samples: dict[str, list[Sample]] = {name: [] for name in engines}
    names = list(engines)
    for i, job in enumerate(jobs):
        for name in names[i % len(names):] + names[:i % len(names)]:
            samples[name].append(timed(engines[name], job))
            progress.update(1)
    out: dict[str, Any] = {}
    for mode in all_modes:
        got = samples[mode.name]
        tokens = sum(len(s.ids) for s in got)
        wall = sum(s.wall_s for s in got)
        decode_tokens = sum(max(0, len(s.ids) - 1) for s in got)
        decode_s = sum(max(1e-9, s.wall_s - s.prefill_s) for s in got)
        proposed, accepted, steps = (sum(s.spec[j] for s in got) for j in range(3))
        base = samples[mode.baseline]
        out[mode.name] = {
            "model": mode.path, "speculate": mode.speculate, "requests": len(got),
            "prompt_tokens_mean": round(statistics.mean(s.prompt_tokens for s in got), 1),
            "tokens": tokens, "wall_s": round(wall, 3), "tokens_per_s": round(tokens / wall, 1),
            "prefill_ms_mean": round(1000 * statistics.mean(s.prefill_s for s in got), 1),
            "decode_tokens_per_s": round(decode_tokens / decode_s, 1),
            "proposed": proposed, "accepted": accepted, "verify_steps": steps,
            "acceptance": round(accepted / proposed, 3) if proposed else None,
            "identical": sum(s.ids == b.ids for s, b in zip(got, base, strict=True)),
            "copied_lines": copied_share(got, jobs),
            "distinct_4": round(statistics.mean(distinct_ngram_ratio(s.text) for s in got), 3),
        }
    for mode in all_modes:
        row, base = out[mode.name], out[mode.baseline]
        row["baseline"] = mode.baseline
        row["speedup"] = round(row["tokens_per_s"] / base["tokens_per_s"], 3)
        row["decode_speedup"] = round(row["decode_tokens_per_s"] / base["decode_tokens_per_s"], 3)
    return out


# ----------------------------------------------------------------------------- the server
def _serve(path: str, speculate: str | None, k: int | None, threads: int, port_out: Any, stop: Any,
           stats_out: Any) -> None:
    """Child process: the app in front of ``Scheduler(open_engine(path, speculate=...))`` on a free
    loopback port until ``stop`` is set; then the engine's speculation counters go to ``stats_out``."""
    import torch
    import uvicorn

    from smallcode.runtime.formats import prompt_format
    from smallcode.runtime.scheduler import Scheduler
    from smallcode.serve.app import create_app

    torch.set_num_threads(threads)
    engine = built_in_thread(lambda: open_mode(path, speculate, k))
    scheduler = Scheduler(engine, max_batch=4, max_queue=64)
    app = create_app(scheduler, prompt_format(engine.tokenizer), model_name="specbench")
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("the server did not start")
        thread.join(0.01)
    port_out.put(server.servers[0].sockets[0].getsockname()[1])
    stop.wait()
    stats_out.put(spec_counts(engine))
    server.should_exit = True
    thread.join(30)
    scheduler.close()


class Server:
    """A server process for one engine; ``with Server(...) as server``: ``server.url``, then
    ``server.spec`` (its engine's proposed, accepted, verify steps) after the block."""

    def __init__(self, path: str, speculate: str | None, k: int | None, threads: int) -> None:
        ctx = mp.get_context("spawn")  # a fresh interpreter: no torch threads inherited from this one
        self._port, self._stats, self._stop = ctx.Queue(), ctx.Queue(), ctx.Event()
        self._process = ctx.Process(target=_serve, args=(path, speculate, k, threads, self._port, self._stop,
                                                         self._stats), daemon=True)
        self.url = ""
        self.spec: tuple[int, int, int] | None = None

    def __enter__(self) -> Server:
        self._process.start()
        self.url = f"http://127.0.0.1:{self._port.get(timeout=600)}"
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        try:
            self.spec = self._stats.get(timeout=60)
        finally:
            self._process.join(30)
            if self._process.is_alive():
                self._process.terminate()
                self._process.join(10)


def keystroke_ttft(all_modes: list[Mode], points: list[Cursor], keys: int, max_tokens: int, k: int | None,
                   threads: int) -> dict[str, Any]:
    """Keystroke TTFT of the plain and the n-gram server, taking turns file by file (``serve_latency``'s
    client: a priming request at the cursor, then ``keys`` requests each one character longer)."""
    from contextlib import ExitStack

    from tqdm import tqdm

    from serve_latency import Doc, infill_warmup, keystrokes  # the script's own folder is on sys.path

    served = [m for m in all_modes if m.name in ("plain", "ngram")]
    docs = [Doc(c.name, c.prefix, c.line_rest, c.suffix) for c in points]
    with ExitStack() as stack:
        servers = {m.name: stack.enter_context(Server(m.path, m.speculate, k, threads)) for m in served}
        for s in servers.values():
            asyncio.run(infill_warmup(s.url))
        with tqdm(total=len(docs), desc="keystroke", unit="file") as bar:
            got = asyncio.run(keystrokes({n: s.url for n, s in servers.items()}, docs, keys, 1, max_tokens, bar))
    for name, s in servers.items():
        proposed, accepted, steps = s.spec or (0, 0, 0)
        got[name].update(proposed=proposed, accepted=accepted, verify_steps=steps)
    if "ngram" in got:
        got["ttft_p50_ratio"] = round(got["ngram"]["ttft_p50_ms"] / got["plain"]["ttft_p50_ms"], 3)
        got["ttft_p95_ratio"] = round(got["ngram"]["ttft_p95_ms"] / got["plain"]["ttft_p95_ms"], 3)
    return got


# ----------------------------------------------------------------------------- models
def recipe_models(recipe_file: str, runs: str | None) -> dict[str, str]:
    """The recipe's final model, its MoE stage and the dense stage upcycled into that MoE (the draft)."""
    from smallcode.train.recipe import RecipeConfig, stage_final

    recipe = RecipeConfig.load(recipe_file)
    out = Path(runs or recipe.out)
    upcycle = next(s for s in recipe.stages if s.upcycle_from)
    moe = next(s for s in recipe.stages if s.init_from == upcycle.name and s.config)
    return {"model": str(stage_final(out, recipe.stages[-1].name)), "draft_target": str(stage_final(out, moe.name)),
            "draft": str(stage_final(out, upcycle.upcycle_from))}


def smoke_models(work: Path) -> dict[str, str]:
    """Random weights, the shared test size: an MoE target and a dense draft with the same tokenizer."""
    import torch

    from smallcode.corpus import stdlib_root
    from smallcode.model import ModelConfig, SmallCodeLM
    from smallcode.model.checkpoint import save_checkpoint
    from smallcode.tokenizer import load_tokenizer, train_tokenizer

    train_tokenizer([stdlib_root() / "json"], 2000, work / "tok", show_progress=False)
    tok_file = load_tokenizer(work / "tok").save(work / "tok-file")
    vocab = load_tokenizer(work / "tok").vocab_size

    def build() -> dict[str, str]:
        paths = {}
        for seed, (name, experts) in enumerate((("target", 4), ("draft", 1))):
            torch.manual_seed(seed)
            cfg = ModelConfig.preset("tiny", vocab_size=vocab, n_experts=experts, top_k=min(2, experts))
            paths[name] = str(save_checkpoint(SmallCodeLM(cfg), work / name, tokenizer_file=tok_file))
        return paths

    paths = built_in_thread(build)
    return {"model": paths["target"], "draft_target": paths["target"], "draft": paths["draft"]}


# ----------------------------------------------------------------------------- the run
def main() -> None:
    from smallcode.lsp.server import Settings

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", default=str(ROOT / "configs" / "nano" / "recipe.yaml"),
                   help="the recipe whose stages give the default models")
    p.add_argument("--runs", help="where that recipe wrote its stages (default: the recipe's out, e.g. runs/nano)")
    p.add_argument("--model", help="target of plain and n-gram (default: the recipe's final model)")
    p.add_argument("--draft-target", help="target of the draft model (default: the recipe's MoE stage)")
    p.add_argument("--draft", help="the draft model (default: the recipe's dense stage upcycled into the MoE)")
    p.add_argument("--small-draft", help="a cheaper draft for --model (default: the recipe's draft/final when "
                   "configs/nano/draft.yaml was trained there; 'none' leaves it out)")
    p.add_argument("--k", type=int, help="tokens proposed per step (default: the engine's own, adaptive)")
    p.add_argument("--threads", type=int, default=2, help="torch threads, here and in the servers")
    p.add_argument("--only", default="edit,fim,free,keystroke", help="comma-separated parts to run")
    p.add_argument("--edits", type=int, default=24)
    p.add_argument("--edit-max-tokens", type=int, default=256)
    p.add_argument("--fims", type=int, default=64)
    p.add_argument("--fim-max-tokens", type=int, default=Settings().auto_max_tokens,
                   help="default: the language server's, for a completion triggered while typing")
    p.add_argument("--frees", type=int, default=24)
    p.add_argument("--free-max-tokens", type=int, default=128)
    p.add_argument("--keystroke-files", type=int, default=12)
    p.add_argument("--keys", type=int, default=10, help="characters typed (one request each) per file")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--smoke", action="store_true", help="a tiny random model, a few short requests: every path "
                   "runs, the figures mean nothing")
    p.add_argument("--dry-run", action="store_true", help="build the prompts and say what would run; time nothing")
    p.add_argument("--out", type=Path, help="also write the JSON result here")
    args = p.parse_args()
    parts = {s.strip() for s in args.only.split(",") if s.strip()}
    unknown = parts - {*WORKLOADS, "keystroke"}
    if unknown:
        p.error(f"--only: unknown part(s) {', '.join(sorted(unknown))}; choose from {', '.join(WORKLOADS)}, keystroke")
    if args.smoke:
        args.edits, args.fims, args.frees, args.keystroke_files, args.keys = 2, 3, 2, 1, 3
        args.edit_max_tokens = args.free_max_tokens = 24

    import torch
    from tqdm import tqdm

    from smallcode.eval.heldout import held_out_set
    from smallcode.fileio import atomic_write_text

    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="specbench-") as tmp:
        work = Path(tmp)
        paths = smoke_models(work) if args.smoke else recipe_models(args.recipe, args.runs)
        for key in ("model", "draft_target", "draft"):
            if getattr(args, key):
                paths[key] = getattr(args, key)
        for key, path in paths.items():
            if not Path(path).exists():
                raise SystemExit(f"--{key.replace('_', '-')}: {path} does not exist (run `make run` first, or name "
                                 "the models)")
        small = args.small_draft
        trained = Path(paths["model"]).parents[1] / "draft" / "final"  # configs/nano/draft.yaml's --out
        if small is None and not args.smoke and trained.exists():
            small = str(trained)
        small = None if small == "none" else small
        paths_small = {"small_draft": small} if small else {}
        all_modes = modes(paths["model"], paths["draft_target"], paths["draft"], small)
        result: dict[str, Any] = {
            "benchmark": "speculative", **paths, **paths_small, "smoke": args.smoke,
            "k": args.k, "threads": args.threads, "cpus": os.cpu_count(),
            "loadavg_before": [round(x, 2) for x in os.getloadavg()], "goals": GOALS,
        }
        held = held_out_set()
        result["held_out"] = held.fingerprint
        files = list(zip(held.names, held.texts, strict=True))

        print("opening the engines ...", file=sys.stderr, flush=True)
        engines = {m.name: built_in_thread(lambda m=m: open_mode(m.path, m.speculate, args.k)) for m in all_modes}
        fmt = engines["plain"].prompt_format
        points = cursors(files, args.fims + args.keystroke_files, args.seed, min_rest=max(8, args.keys))
        jobs: dict[str, list[Job]] = {}
        if "edit" in parts:
            jobs["edit"] = edit_jobs(fmt, files, args.edits, args.edit_max_tokens, args.seed, work)
        if "fim" in parts:
            jobs["fim"] = fim_jobs(points[:args.fims], args.fim_max_tokens)
        if "free" in parts:
            jobs["free"] = free_jobs(files, args.frees, args.free_max_tokens, args.seed)
        key_points = points[args.fims:]
        result["prompts"] = {w: {"requests": len(js), "max_tokens": js[0].params.max_tokens,
                                 "stop": js[0].params.stop, "prompt_chars_mean": round(statistics.mean(
                                     j.prompt_chars for j in js)), "first": js[0].label} for w, js in jobs.items()}
        if args.dry_run:
            result["modes"] = [dataclasses.asdict(m) for m in all_modes]
            result["keystroke_files"] = [c.name for c in key_points] if "keystroke" in parts else []
            print(json.dumps(result))
            return

        # The servers first: this process has run no model yet, so its own OpenMP pool cannot slow theirs.
        if "keystroke" in parts:
            print("keystroke TTFT: starting the servers ...", file=sys.stderr, flush=True)
            result["keystroke"] = keystroke_ttft(all_modes, key_points, args.keys, args.fim_max_tokens, args.k,
                                                 args.threads)
        for workload, js in jobs.items():
            with tqdm(total=len(js) * len(engines), desc=workload, unit="req") as bar:
                result[workload] = run_workload(engines, all_modes, js, bar)
            for name in ("ngram", "draft", "draft_small"):
                if name in result[workload]:
                    result[workload][name]["goal_met"] = result[workload][name]["speedup"] >= GOALS[workload]
        result["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
        result["wall_s"] = round(time.perf_counter() - t_start, 1)

    print_tables(result)
    line = json.dumps(result)
    if args.out:
        atomic_write_text(args.out, line + "\n")
    print(line)


def print_tables(r: dict[str, Any]) -> None:
    """The result as markdown tables, goals beside the figures."""
    print("\n| workload | engine | requests | tokens | tokens/s | speedup | decode tokens/s | decode speedup | "
          "acceptance | identical to plain | copied lines | distinct-4 | goal |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for workload in WORKLOADS:
        for name, row in r.get(workload, {}).items():
            spec = name in ("ngram", "draft", "draft_small")
            goal = f">= {GOALS[workload]:g}x: {'met' if row['goal_met'] else 'not met'}" if spec else ""
            acc = "" if row["acceptance"] is None else f"{row['acceptance']:.0%}"
            print(f"| {workload} | {name} | {row['requests']} | {row['tokens']} | {row['tokens_per_s']:.1f} | "
                  f"{row['speedup']:.2f}x | {row['decode_tokens_per_s']:.1f} | {row['decode_speedup']:.2f}x | {acc} | "
                  f"{row['identical']}/{row['requests']} | {row['copied_lines']} | {row['distinct_4']} | {goal} |")
    if "keystroke" in r:
        k = r["keystroke"]
        print("\n| server | requests | TTFT p50 ms | TTFT p95 ms | prefilled tokens | proposed | accepted |")
        print("|---|---|---|---|---|---|---|")
        for name in ("plain", "ngram"):
            if name in k:
                row = k[name]
                print(f"| {name} | {row['requests']} | {row['ttft_p50_ms']:.1f} | {row['ttft_p95_ms']:.1f} | "
                      f"{row['prefilled_tokens_mean']:.0f} | {row['proposed']} | {row['accepted']} |")
        if "ngram" in k and not k["ngram"]["proposed"]:
            print("\nthe n-gram server proposed no token: its scheduler did not speculate")
        if "ttft_p50_ratio" in k:
            print(f"\nkeystroke TTFT, ngram / plain: p50 {k['ttft_p50_ratio']:.2f}, p95 {k['ttft_p95_ratio']:.2f} "
                  "(goal: unchanged within noise)")



if __name__ == "__main__":
    main()
