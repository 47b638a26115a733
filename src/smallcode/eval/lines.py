"""Line completion: does the model finish the line being typed, as the editor would show it?

``smallcode eval lines`` puts cursors in held-out third-party Python (``eval.heldout``, one split of
it) and asks the model, through the language server's own path, for the rest of the line:

* **Cursors** (``draw_cursors``). Every line that is not blank, not a comment and not inside a
  docstring or another string spanning lines is a candidate. Each candidate gets a key from
  ``sha256(seed, file name, line number)``; the ``n`` smallest keys are the tasks, so the choice
  depends on neither file order nor machine. Another byte of the hash puts the cursor at the line's
  start (after its indentation) or inside it (a point after the indentation, strictly before the
  last character, drawn from the hash too). The **target** is the rest of the line after the
  cursor; the model sees the file with that rest deleted (prefix: everything before the cursor;
  suffix: everything after the line's end).
* **The request** is the language server's (``lsp.server``): ``lsp.context.build_context`` lays out
  the prefix, suffix and extra files within the LSP's default ``Budget``; ``lsp.models`` asks the
  model (``LocalModel``: the engine in this process behind the server's scheduler; ``EndpointModel``:
  ``/infill`` or ``/v1/completions`` with ``suffix``), greedy, ``max_tokens`` (the LSP's automatic
  16) and streamed until ``lsp.postprocess.shape`` says the rest cannot change what is shown; the
  shaped text is what the editor would insert. Requests go one at a time, so latency is one
  request's, from building the context to the shaped completion; the first task is asked once more,
  unscored, before the timed run (its one-off costs are the model's start-up, not a keystroke's).
* **Cross-file** (``cross_file``): up to ``Budget.extra_files`` other files of the same package, laid
  out as the LSP lays other open documents (``<|file_sep|>`` blocks before the file). A file's score
  is how many distinct identifiers of the last ``QUERY_LINES`` lines before the cursor it contains
  (keywords and names under three characters left out); the best scores win, ties by name, the best
  one last (nearest the cursor's file). Each file's window is centred on its line holding the most
  of those identifiers (the LSP centres on a document's last edit).
* **Repository retrieval** (``repo``): an index (``smallcode.retrieval.RepoIndex``) of every Python
  file of the task's package, the task's own file taken out for the task (so that nothing after the
  cursor is seen, not even through the BM25 statistics), asked as the language server asks its
  workspace index: definitions of the names used near the cursor and similar chunks, within the
  extra files' budget (half of it when ``cross_file`` gives open files too). Retrieval is the
  server's work, so it is inside the timed request; its own time is ``retrieval_ms``.

The context mode (``context_mode``) is one of "in-file" (a: no other file), "cross-file" (b: other
files as open documents, ``cross_file``), "retrieval" (c, ``repo``) or "cross-file + retrieval" (both,
the language server's own setting).

Metrics, per task and summed (``score``), each on the completion's first line and the target, both
with trailing whitespace stripped:

* **exact match**: the two are equal;
* **edit similarity**: ``1 - Levenshtein(a, b) / max(len(a), len(b))`` (CodeXGLUE's and
  CrossCodeEval's definition; 1 when both are empty);
* **characters saved**: what an editor's inline completion spares the typist. A completion equal to
  the target is accepted whole (one keystroke, Tab). Otherwise the typist accepts it word by word
  (VS Code's *Accept Next Word*, JetBrains' *Insert next word*) as long as the words agree with the
  target: a word is optional whitespace then a run of identifier characters or a run of other
  characters (``WORD``); the characters saved are those of the longest run of whole words from the
  completion's start that the target starts with, and each accepted word costs one keystroke. The
  report gives characters saved per 100 characters of target (``chars_saved_per_100``) and the same
  less the accepting keystrokes (``keys_saved_per_100``).
* **latency** p50/p95 in milliseconds.

A run lives in a directory like ``eval run``'s: ``config.json`` (the settings, the model, the held-out
set's fingerprint), ``lines.jsonl`` (one row per task, appended and fsync'd, so a killed run resumes
without redoing a task), ``summary.json`` and ``report.md``. A directory holding tasks done with
other settings is refused.
"""

from __future__ import annotations

import ast
import asyncio
import hashlib
import json
import keyword
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from tqdm import tqdm

from smallcode.client import ClientError
from smallcode.errors import UserError
from smallcode.fileio import JsonlLog, atomic_write_text, read_jsonl
from smallcode.lsp.context import Budget, OtherFile, build_context, retrieval_budget
from smallcode.lsp.models import CompletionModel, FimRequest
from smallcode.lsp.postprocess import multiline, shape
from smallcode.retrieval import RepoIndex

AUTO_MAX_TOKENS = 16
"""The language server's limit for a completion triggered while typing (``lsp.server.Settings``)."""
QUERY_LINES = 20
"""Lines before the cursor whose identifiers choose the cross-file context."""
WORD = re.compile(r"\s*(?:\w+|[^\w\s]+)")
"""One word of word-by-word acceptance: optional whitespace, then identifier characters or other ones."""
IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
KINDS = ("mid", "start")
RESULTS = "lines.jsonl"


class LinesError(UserError, ValueError):
    """A line-completion run that cannot go on as asked (another run's directory, no tasks)."""


# ---------------------------------------------------------------------------------- cursors
@dataclass(frozen=True)
class LineTask:
    """One cursor: the file up to it, the file after its line, and the rest of the line to write."""

    task_id: str
    """``file:line:column`` (line 1-based, column 0-based in characters)."""
    file: str
    line: int
    col: int
    kind: str
    """"start" (after the indentation) or "mid" (inside the line)."""
    prefix: str
    suffix: str
    target: str
    """The rest of the line after the cursor, trailing whitespace stripped."""

    @property
    def package(self) -> str:
        return self.file.split("/", 1)[0]


def _string_lines(text: str) -> set[int]:
    """0-based lines inside docstrings and other strings spanning lines (not a file that does not parse:
    then none)."""
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):
        return set()
    out: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            out.update(range(node.lineno - 1, (node.end_lineno or node.lineno)))  # a bare string: all of it
        elif isinstance(node, ast.Constant | ast.JoinedStr) and (node.end_lineno or node.lineno) > node.lineno:
            out.update(range(node.lineno, node.end_lineno or node.lineno))  # its first line is code
    return out


def candidate_lines(text: str) -> list[int]:
    """The 0-based lines of ``text`` a cursor may be put in: not blank, not a comment, not in a string."""
    inside = _string_lines(text)
    out = []
    for i, line in enumerate(text.split("\n")):
        code = line.strip()
        if code and not code.startswith("#") and i not in inside:
            out.append(i)
    return out


def _key(seed: int, name: str, line: int) -> bytes:
    return hashlib.sha256(f"{seed}\0{name}\0{line}".encode()).digest()


def draw_cursors(files: Sequence[tuple[str, str]], n: int, seed: int = 0) -> list[LineTask]:
    """``n`` cursors in ``files`` (``(name, text)`` pairs), in file and line order (see the module
    docstring); fewer when the files hold fewer candidate lines."""
    drawn: list[tuple[bytes, str, str, int]] = []
    for name, text in sorted(files):
        for i in candidate_lines(text):
            drawn.append((_key(seed, name, i), name, text, i))
    drawn.sort(key=lambda d: d[0])
    tasks = [_task(h, name, text, i) for h, name, text, i in drawn[:n]]
    return sorted(tasks, key=lambda t: (t.file, t.line))


def _task(h: bytes, name: str, text: str, i: int) -> LineTask:
    starts = [0]
    for line in text.split("\n")[:-1]:
        starts.append(starts[-1] + len(line) + 1)
    line = text.split("\n")[i]
    code = line.rstrip()
    indent = len(code) - len(code.lstrip())
    room = len(code) - indent - 1  # columns strictly inside the code, so that both sides are non-empty
    if h[8] & 1 and room >= 1:
        kind, col = "mid", indent + 1 + int.from_bytes(h[9:13], "big") % room
    else:
        kind, col = "start", indent
    at = starts[i] + col
    end = starts[i] + len(line)
    return LineTask(f"{name}:{i + 1}:{col}", name, i + 1, col, kind, text[:at], text[end:], code[col:])


# ---------------------------------------------------------------------------------- metrics
def first_line(text: str) -> str:
    """The completion's first line, trailing whitespace stripped."""
    return text.split("\n", 1)[0].rstrip()


def exact_match(completion: str, target: str) -> bool:
    """Whether the completion's first line is the target (trailing whitespace ignored)."""
    return first_line(completion) == target.rstrip()


def edit_similarity(completion: str, target: str) -> float:
    """``1 - Levenshtein / max length`` of the completion's first line and the target (1.0 if both are empty)."""
    from rapidfuzz.distance import Levenshtein

    return float(Levenshtein.normalized_similarity(first_line(completion), target.rstrip()))


@dataclass(frozen=True)
class Saved:
    chars: int
    """Characters of the target the typist did not type."""
    accepts: int
    """Keystrokes spent accepting them (Tab once, or one per word)."""


def chars_saved(completion: str, target: str) -> Saved:
    """What accepting ``completion`` spares the typist of ``target`` (see the module docstring)."""
    got, want = first_line(completion), target.rstrip()
    if not want:
        return Saved(0, 0)
    if got == want:
        return Saved(len(want), 1)
    used = words = 0
    for word in WORD.findall(got):
        if not want.startswith(word, used):
            break
        used += len(word)
        words += 1
    return Saved(used, words)


# ---------------------------------------------------------------------------------- cross-file
def _identifiers(text: str) -> set[str]:
    return {w for w in IDENT.findall(text) if len(w) >= 3 and not keyword.iskeyword(w)}


@dataclass
class PackageFiles:
    """The files of one package that cross-file context is chosen from, with their identifiers."""

    files: Sequence[tuple[str, str]]
    idents: list[set[str]] = field(init=False)
    line_idents: list[list[set[str]]] = field(init=False)
    _index: RepoIndex | None = field(init=False, default=None, repr=False)

    def __post_init__(self) -> None:
        self.line_idents = [[_identifiers(line) for line in text.split("\n")] for _, text in self.files]
        self.idents = [set().union(*lines) if lines else set() for lines in self.line_idents]

    def repo_index(self) -> RepoIndex:
        """The package's index for repository retrieval (built on first use, then kept)."""
        if self._index is None:
            index = RepoIndex()
            for name, text in self.files:
                index.update(name, text)
            self._index = index
        return self._index

    def text(self, name: str) -> str | None:
        """The text of the package's file ``name`` (None for a file it does not hold)."""
        return next((text for n, text in self.files if n == name), None)

    def related(self, task: LineTask, k: int) -> list[OtherFile]:
        """Up to ``k`` files other than the task's own, as ``OtherFile`` s for ``build_context``: the
        best match last, each centred on its line sharing the most identifiers with the query."""
        query = _identifiers("\n".join(task.prefix.split("\n")[-QUERY_LINES:]))
        scored = [(-len(query & idents), name, j)
                  for j, ((name, _), idents) in enumerate(zip(self.files, self.idents, strict=True))
                  if name != task.file and query & idents]
        best = sorted(scored)[:k]
        out = []
        for rank, (_, name, j) in enumerate(reversed(best)):
            per_line = [len(query & ids) for ids in self.line_idents[j]]
            centre = per_line.index(max(per_line))
            out.append(OtherFile(name, self.files[j][1], edited_line=centre, edited_at=float(rank)))
        return out


# ---------------------------------------------------------------------------------- the run
@dataclass(frozen=True)
class LinesSettings:
    """What a run's tasks share; a run directory continues only with the same."""

    split: str = "report"
    n: int = 200
    seed: int = 0
    packages: list[str] = field(default_factory=list)
    """The packages drawn from ([] = every package of the split)."""
    cross_file: bool = False
    """Other files of the package as open documents (context mode b)."""
    repo: bool = False
    """Context retrieved from an index of the package (context mode c)."""
    max_tokens: int = AUTO_MAX_TOKENS
    stop_loops: bool = True
    """End a completion that repeats itself (the language server's default; an endpoint's ``/infill``
    does it itself)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def context_mode(settings: LinesSettings | dict[str, Any]) -> str:
    """The context a run gives: "in-file", "cross-file", "retrieval" or "cross-file + retrieval"."""
    s = settings.to_dict() if isinstance(settings, LinesSettings) else settings
    modes = [name for key, name in (("cross_file", "cross-file"), ("repo", "retrieval")) if s.get(key)]
    return " + ".join(modes) or "in-file"


def _settings_file(out: Path) -> Path:
    return out / "config.json"


def check_run_dir(out: Path, settings: LinesSettings) -> None:
    """Refuse ``out`` when it holds tasks done with other settings (one line naming them)."""
    path = _settings_file(out)
    if not path.is_file():
        return
    try:
        old = json.loads(path.read_text()).get("settings")
    except (ValueError, AttributeError) as e:
        raise LinesError(f"{path}: not a line-completion run's config.json ({e}); use another --out") from e
    if not isinstance(old, dict):
        raise LinesError(f"{path}: not a line-completion run's config.json; use another --out")
    new = settings.to_dict()
    defaults = LinesSettings().to_dict()  # a setting added since the run began had its default then
    changed = [k for k in new if old.get(k, defaults[k]) != new[k]]
    results = out / RESULTS
    if changed and results.is_file() and read_jsonl(results):
        raise LinesError(f"{out}: its tasks were done with other settings ({', '.join(changed)}: "
                         f"{', '.join(f'{old.get(k)!r}' for k in changed)}); use another --out")


async def complete_line(model: CompletionModel, task: LineTask, settings: LinesSettings,
                        package: PackageFiles | None = None, budget: Budget | None = None) -> dict[str, Any]:
    """Ask ``model`` for ``task`` as the language server would, and score the shaped answer: the task's
    row of ``lines.jsonl``."""
    budget = budget or Budget()
    # Which files are "open" is the editor's state, not the server's work: chosen before the clock starts.
    others = package.related(task, budget.extra_files) if package is not None and settings.cross_file else []
    index = package.repo_index() if package is not None and settings.repo else None
    own = package.text(task.file) if index is not None and package is not None else None
    if index is not None:
        index.remove(task.file)  # the task's file, with the line to write, is never seen (restored below)
    try:
        started = time.perf_counter()
        retrieved = index.context(task.prefix, task.file, retrieval_budget(budget, len(others))) \
            if index is not None else []
        retrieval_ms = (time.perf_counter() - started) * 1000
        ctx = build_context(task.prefix + task.suffix, len(task.prefix), path=task.file, language_id="python",
                            others=others, budget=budget, retrieved=retrieved)
        request = FimRequest(ctx.prefix, ctx.suffix, ctx.extra, settings.max_tokens, temperature=0.0, seed=0,
                             stop=[] if multiline(ctx) else ["\n"], stop_loops=settings.stop_loops)
        raw = await model.complete(request, lambda text: shape(text, ctx, final=False).done)
        shown = shape(raw, ctx).text
        latency_ms = (time.perf_counter() - started) * 1000
    finally:  # after the clock: putting the file back is the editor's saving it, not the request's work
        if index is not None and own is not None:
            index.update(task.file, own)
    saved = chars_saved(shown, task.target)
    row = {"task_id": task.task_id, "file": task.file, "kind": task.kind, "target": task.target,
           "completion": shown, "raw": raw, "extra": [p for p, _ in ctx.extra],
           "exact": exact_match(shown, task.target), "edit_sim": round(edit_similarity(shown, task.target), 6),
           "saved": saved.chars, "accepts": saved.accepts, "latency_ms": round(latency_ms, 3)}
    if index is not None:
        row["retrieved"] = [p for p, _ in retrieved]
        row["retrieval_ms"] = round(retrieval_ms, 3)
    return row


def fit_budget(budget: Budget, max_context: int | None, max_tokens: int) -> Budget:
    """``budget`` scaled down so that a prompt and its completion fit a model of ``max_context`` tokens
    (the language server's default asks for ~1,800 prompt tokens; a small model may hold fewer), with
    a quarter to spare for the estimate of characters per token."""
    asked = budget.prefix_tokens + budget.suffix_tokens + budget.extra_tokens
    if max_context is None or asked + max_tokens <= max_context:
        return budget
    room = max(0, max_context - max_tokens) * 3 // 4
    scale = room / asked
    return replace(budget, prefix_tokens=max(1, int(budget.prefix_tokens * scale)),
                   suffix_tokens=int(budget.suffix_tokens * scale), extra_tokens=int(budget.extra_tokens * scale))


async def _run(tasks: Sequence[LineTask], model: CompletionModel, settings: LinesSettings, log: JsonlLog,
               packages: dict[str, PackageFiles], progress: bool) -> None:
    # A model in process says how much it holds and how its tokenizer counts; an endpoint refuses what
    # does not fit, in one line.
    scheduler = getattr(model, "scheduler", None)
    budget = Budget()
    if scheduler is not None and tasks and fit_budget(budget, scheduler.max_context, settings.max_tokens) != budget:
        sample = tasks[0].prefix[-4000:] or "x"
        per_token = len(sample) / max(1, len(scheduler.engine.tokenizer.encode(sample)))
        budget = fit_budget(replace(budget, chars_per_token=min(budget.chars_per_token, per_token)),
                            scheduler.max_context, settings.max_tokens)
    done = {r["task_id"] for r in log.rows}
    todo = [t for t in tasks if t.task_id not in done]
    bar = tqdm(total=len(tasks), initial=len(tasks) - len(todo), desc="lines", unit="task", disable=not progress)
    try:
        if todo:  # a first request pays one-off costs (kernels compiled, caches sized): not a latency to report
            try:
                await complete_line(model, todo[0], settings, packages.get(todo[0].package), budget)
            except ClientError as e:
                raise ClientError(f"{e} (the first request, not yet scored)") from e
        for task in todo:
            try:
                row = await complete_line(model, task, settings, packages.get(task.package), budget)
            except ClientError as e:
                raise ClientError(f"{e} ({len(log.rows)} tasks finished before this are kept in {log.path})") from e
            log.append(row)
            bar.update(1)
    finally:
        bar.close()
        await model.close()


def run_lines(tasks: Sequence[LineTask], open_model: Callable[[], CompletionModel], settings: LinesSettings,
              out: str | Path, backend: str, *, held_out: str = "",
              packages: dict[str, PackageFiles] | None = None, progress: bool = True) -> dict[str, Any]:
    """Run (or resume) the tasks in ``out`` with the model ``open_model()`` makes (an ``lsp.models``
    adapter, opened inside the run's event loop); write ``summary.json`` and ``report.md`` and return
    the summary. ``packages``: each package's files, for the cross-file variant."""
    out = Path(out)
    if not tasks:
        raise LinesError("no line-completion tasks: the files hold no candidate line")
    ids = [t.task_id for t in tasks]
    if len(set(ids)) != len(ids):
        raise ValueError("the task list has duplicate task ids")
    out.mkdir(parents=True, exist_ok=True)
    check_run_dir(out, settings)
    meta = {"settings": settings.to_dict(), "backend": backend, "held_out": held_out}
    atomic_write_text(_settings_file(out), json.dumps(meta, indent=2) + "\n")

    async def main() -> None:
        model = open_model()
        if hasattr(model, "ready"):
            await model.ready()
        with JsonlLog(out / RESULTS) as log:
            await _run(tasks, model, settings, log, packages or {}, progress)

    asyncio.run(main())
    return report_lines(out, {t.task_id for t in tasks})


# ---------------------------------------------------------------------------------- reports
def score(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The summed metrics of task rows (see the module docstring)."""
    from smallcode.eval.report import percentile

    if not rows:
        return {"tasks": 0}
    typed = sum(len(r["target"]) for r in rows)
    saved = sum(r["saved"] for r in rows)
    keys = sum(r["saved"] - r["accepts"] for r in rows)
    latency = [float(r["latency_ms"]) for r in rows]
    retrieval = [float(r["retrieval_ms"]) for r in rows if "retrieval_ms" in r]
    extra = {"retrieval_p50_ms": round(percentile(retrieval, 50), 3),
             "retrieval_p95_ms": round(percentile(retrieval, 95), 3)} if retrieval else {}
    return {"tasks": len(rows), "exact_match": round(sum(bool(r["exact"]) for r in rows) / len(rows), 6),
            "edit_similarity": round(sum(r["edit_sim"] for r in rows) / len(rows), 6),
            "chars_saved_per_100": round(100 * saved / max(1, typed), 4),
            "keys_saved_per_100": round(100 * keys / max(1, typed), 4),
            "shown": round(sum(bool(r["completion"]) for r in rows) / len(rows), 6),
            "target_chars": typed, "chars_saved": saved,
            "latency_p50_ms": round(percentile(latency, 50), 3), "latency_p95_ms": round(percentile(latency, 95), 3),
            **extra}


def summarise_lines(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """All tasks, then by cursor kind and by package."""
    by_kind = {k: score([r for r in rows if r["kind"] == k]) for k in KINDS}
    pkgs = sorted({r["file"].split("/", 1)[0] for r in rows})
    by_pkg = {p: score([r for r in rows if r["file"].split("/", 1)[0] == p]) for p in pkgs}
    return {"all": score(rows), "by_kind": by_kind, "by_package": by_pkg}


def lines_markdown(summary: dict[str, Any]) -> str:
    """``report.md`` of a run's summary."""
    s = summary["settings"]
    lines = ["# Line completion report", "",
             f"Model: `{summary['backend']}`  ",
             f"Held-out split: **{s['split']}** ({', '.join(summary['packages'])}); "
             f"context: {summary['context']}; {summary['all']['tasks']} cursors "
             f"(n = {s['n']}, seed {s['seed']}); max tokens {s['max_tokens']}; stop loops "
             f"{s['stop_loops']}  ",
             f"Held-out set: {summary['held_out'] or 'n/a'}", "",
             "| cursors | tasks | exact match | edit similarity | chars saved / 100 | keys saved / 100 | shown "
             "| p50 | p95 |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    groups = [("all", summary["all"])] + [(f"{k}-line" if k == "mid" else "line start", v)
                                          for k, v in summary["by_kind"].items()]
    groups += [(f"`{p}`", v) for p, v in summary["by_package"].items()]
    for name, m in groups:
        if not m["tasks"]:
            continue
        lines.append(f"| {name} | {m['tasks']} | {100 * m['exact_match']:.1f}% | {m['edit_similarity']:.3f} | "
                     f"{m['chars_saved_per_100']:.1f} | {m['keys_saved_per_100']:.1f} | {100 * m['shown']:.0f}% | "
                     f"{m['latency_p50_ms']:.0f} ms | {m['latency_p95_ms']:.0f} ms |")
    if "retrieval_p50_ms" in summary["all"]:
        lines += ["", f"Retrieval (inside the latency above): p50 {summary['all']['retrieval_p50_ms']:.2f} ms, "
                      f"p95 {summary['all']['retrieval_p95_ms']:.2f} ms."]
    lines += ["", "Exact match and edit similarity compare the shaped completion's first line with the rest of "
              "the line; characters saved count what accepting it whole (when exact) or word by word (while "
              "the words agree) spares the typist, per 100 characters of target; keys saved take off one "
              "keystroke per acceptance. Latency: request to shaped completion, one request at a time."]
    return "\n".join(lines) + "\n"


def report_lines(out: str | Path, task_ids: set[str] | None = None) -> dict[str, Any]:
    """Rebuild ``summary.json`` and ``report.md`` of the run in ``out`` (only ``task_ids`` when given)."""
    out = Path(out)
    path = out / RESULTS
    if not path.is_file():
        raise LinesError(f"{out}: not a line-completion run (no {RESULTS})")
    meta = json.loads(_settings_file(out).read_text())
    rows = [r for r in read_jsonl(path) if task_ids is None or r["task_id"] in task_ids]
    settings = meta["settings"]
    from smallcode.eval.heldout import split_packages

    packages = settings.get("packages") or list(split_packages(settings["split"]))
    summary = {"settings": settings, "backend": meta.get("backend", ""), "held_out": meta.get("held_out", ""),
               "split": settings["split"], "context": context_mode(settings), "packages": packages,
               **summarise_lines(rows)}
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    atomic_write_text(out / "report.md", lines_markdown(summary))
    return summary


# ---------------------------------------------------------------------------------- the command
def held_out_tasks(settings: LinesSettings) -> tuple[list[LineTask], str, dict[str, PackageFiles]]:
    """The tasks ``settings`` ask for, the held-out set's fingerprint, and (open files, retrieval) each
    package's files: every Python file of the installed package, not only the sampled ones."""
    from smallcode.eval.heldout import held_out_set, split_packages

    in_split = split_packages(settings.split)
    unknown = [p for p in settings.packages if p not in in_split]
    if unknown:
        raise LinesError(f"package {unknown[0]!r} is not in the {settings.split!r} split "
                         f"({', '.join(in_split)})")
    chosen = [p for p in in_split if not settings.packages or p in settings.packages]
    held = held_out_set(chosen, split=settings.split)
    tasks = draw_cursors(list(zip(held.names, held.texts, strict=True)), settings.n, settings.seed)
    packages: dict[str, PackageFiles] = {}
    if settings.cross_file or settings.repo:
        for pkg in sorted({t.package for t in tasks}):
            whole = held_out_set([pkg], bytes_per_package=None)
            packages[pkg] = PackageFiles(list(zip(whole.names, whole.texts, strict=True)))
    return tasks, held.fingerprint, packages
