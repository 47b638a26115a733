"""Import direction of ``src/smallcode``, read with ``ast`` rather than by importing anything.

Every import of a ``smallcode`` module counts, wherever it is written: at module level, inside a
function, under ``if TYPE_CHECKING:``, relative or absolute, and a module named by a string to
``importlib.import_module`` or in a lazy-import table (a string constant that is exactly a module's
name, or ``module:attribute``). ``from smallcode.a import b`` where ``b`` is a submodule imports
``smallcode.a.b``. Three rules, no exceptions:

- no import cycle between modules;
- no upward import between the top-level parts (``LAYERS`` below says what each part sits on);
- no import of another package's private ``_name``.

A failure lists every violation as ``file:line: importer -> imported (rule)``. What an import pulls
in at run time, which ``ast`` cannot see, is checked in fresh interpreters by ``tasks/test_tasks_leaf.py``.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
ROOT = "(root)"  # the package's own __init__: __version__ and nothing else, importable from anywhere

# What each top-level part sits directly on; it may import those parts and everything they sit on
# (the closure), never anything else. From the design's import direction: the leaves (errors,
# fileio, config, tasks, then corpus, which holds the repo suite's modules out of the corpus); model,
# tokenizer, data and sandbox above them (a checkpoint carries its tokenizer, data tokenizes and
# decontaminates against the benchmarks); export (the one place that knows Hugging Face's and ONNX's
# names) on model and tokenizer; runtime on model, tokenizer and export (it loads what export writes,
# and Hugging Face directories); client above runtime, backends above client; serve on runtime;
# retrieval (the repository index) on corpus (its walker); lsp and agent on client, runtime, sandbox and
# retrieval; eval on backends, client, runtime, tasks and sandbox, and on agent and lsp, which it
# benchmarks (line completion asks the model as the language server does); train on data, model,
# tasks and export (a Hugging Face teacher), never eval or runtime; pipeline, demo and cli on top.
LAYERS: dict[str, set[str]] = {
    ROOT: set(),
    "errors": set(),
    "fileio": {"errors"},
    "config": {"fileio"},
    "corpus": {"config", "tasks"},
    "tokenizer": {"corpus"},
    "model": {"tokenizer"},
    "tasks": {"fileio"},
    "sandbox": {"config"},
    "data": {"tokenizer", "tasks"},
    "export": {"model", "tokenizer"},
    "runtime": {"model", "tokenizer", "export"},
    "client": {"runtime"},
    "backends": {"client", "export"},
    "train": {"data", "model", "tasks", "export"},
    "serve": {"runtime"},
    "retrieval": {"corpus"},
    "lsp": {"client", "runtime", "sandbox", "retrieval"},
    "agent": {"client", "runtime", "sandbox", "retrieval"},
    "eval": {"backends", "client", "runtime", "tasks", "sandbox", "agent", "lsp"},
    "pipeline": {"train", "eval", "export", "serve", "lsp", "agent", "data"},
    "demo": {"train", "eval", "export", "serve", "lsp", "agent", "data"},
    "cli": {"pipeline", "demo", "train", "eval", "export", "serve", "lsp", "agent", "data"},
}

# Stated outright in the design; the table above must imply them (checked below), so that widening
# the table cannot quietly break one.
NEVER: dict[str, set[str]] = {
    "model": {"runtime"},
    "tasks": set(LAYERS) - {ROOT, "tasks", "fileio", "errors"},
    "runtime": {"serve", "client", "eval", "lsp", "agent", "train"},
    "train": {"eval", "runtime"},
    "eval": {"train"},
    "serve": {"train"},
    "lsp": {"train"},
    "agent": {"train", "eval"},
}


@functools.cache
def allowed(part: str) -> frozenset[str]:
    """The parts ``part`` may import: itself, the root, and the closure of what it sits on."""
    out = {part, ROOT}
    for below in LAYERS[part]:
        out |= allowed(below)
    return frozenset(out)


@dataclass(frozen=True)
class Import:
    importer: str
    imported: str
    file: Path
    line: int
    private: str = ""  # the private name imported, if any

    def where(self) -> str:
        return f"{self.file.relative_to(SRC.parent) if self.file.is_relative_to(SRC) else self.file}:{self.line}"


def part(module: str) -> str:
    pieces = module.split(".")
    return pieces[1] if len(pieces) > 1 else ROOT


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


@functools.cache
def modules(src: Path = SRC) -> dict[str, tuple[Path, bool]]:
    """Every module under ``src/smallcode``: dotted name -> (file, is a package)."""
    out = {}
    for path in sorted((src / "smallcode").rglob("*.py")):
        pieces = list(path.relative_to(src).with_suffix("").parts)
        package = pieces[-1] == "__init__"
        out[".".join(pieces[:-1] if package else pieces)] = (path, package)
    return out


def imports_of(module: str, src: Path = SRC) -> Iterator[Import]:
    known = modules(src)
    path, package = known[module]
    own_package = module if package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "smallcode":
                    private = next((p for p in alias.name.split(".") if is_private(p)), "")
                    yield Import(module, alias.name, path, node.lineno, private)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = own_package.split(".")[: len(own_package.split(".")) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            if source.split(".")[0] != "smallcode":
                continue
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                target = submodule if submodule in known else source
                yield Import(module, target, path, node.lineno, alias.name if is_private(alias.name) else "")
        else:
            # importlib.import_module("smallcode.x"), or a lazy-import table {"name": "smallcode.x:attr"}
            if isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in (
                    "import_module", "__import__"):
                named = node.args[:1]
            elif isinstance(node, ast.Dict):
                named = node.values
            else:
                continue
            for value in named:
                if isinstance(value, ast.Constant) and isinstance(value.value, str):
                    name = value.value.partition(":")[0]
                    if name in known and name != module:
                        yield Import(module, name, path, value.lineno)


@functools.cache
def all_imports() -> tuple[Import, ...]:
    return tuple(imp for module in modules() for imp in imports_of(module))


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_every_part_is_in_the_table() -> None:
    parts = {part(m) for m in modules()}
    assert parts <= set(LAYERS), f"parts with no row in LAYERS: {sorted(parts - set(LAYERS))}"
    assert {"runtime", "train", "eval", "tasks", "model"} <= parts  # the walk found the package


def test_the_table_keeps_the_stated_rules() -> None:
    broken = [f"{p} may import {q}" for p, never in NEVER.items() for q in sorted(never & allowed(p))]
    assert not broken, "LAYERS contradicts the design: " + "; ".join(broken)


def test_no_import_cycle() -> None:
    edges: dict[str, set[str]] = {}
    for imp in all_imports():
        if imp.imported != imp.importer:
            edges.setdefault(imp.importer, set()).add(imp.imported)
    found = cycles(edges)
    lines = []
    for component in found:
        members = set(component)
        lines.append(" <-> ".join(component))
        lines += sorted({f"    {i.where()}: {i.importer} -> {i.imported}" for i in all_imports()
                         if i.importer in members and i.imported in members and i.importer != i.imported})
    assert not found, f"{len(found)} import cycle(s):\n" + "\n".join(lines)


def test_no_upward_import() -> None:
    bad = sorted({f"{i.where()}: {i.importer} -> {i.imported} ({part(i.importer)} may not import {part(i.imported)})"
                  for i in all_imports() if part(i.imported) not in allowed(part(i.importer))})
    assert not bad, f"{len(bad)} upward import(s):\n" + "\n".join(bad)


def test_no_private_name_from_another_package() -> None:
    bad = []
    for i in all_imports():
        if not i.private:
            continue
        own_package = i.importer if modules()[i.importer][1] else i.importer.rpartition(".")[0]
        if i.imported != own_package and not i.imported.startswith(own_package + "."):
            bad.append(f"{i.where()}: {i.importer} -> {i.imported}.{i.private} (private name of another package)")
    assert not bad, f"{len(bad)} private import(s):\n" + "\n".join(bad)


def test_the_reader_sees_every_kind_of_import(tmp_path: Path) -> None:
    """On a made-up tree: relative, function-level, TYPE_CHECKING, submodule, by-name and private imports."""
    pkg = tmp_path / "smallcode"
    (pkg / "low").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "low" / "__init__.py").write_text("")
    (pkg / "low" / "deep.py").write_text("from . import sub\nfrom .sub import _hidden\n")
    (pkg / "low" / "sub.py").write_text("_hidden = 1\n")
    (pkg / "high.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "import importlib\n"
        "if TYPE_CHECKING:\n"
        "    import smallcode.low.deep\n"
        "def f():\n"
        "    from smallcode.low import sub, _private\n"
        "    return importlib.import_module('smallcode.low')\n"
        "LAZY = {'g': 'smallcode.low.sub:g', 'text': 'not smallcode.low'}\n"
        "SHIPPED = ('smallcode.low',)  # a name, not an import\n"
    )
    found = {(i.importer, i.imported, i.line, i.private) for m in modules(tmp_path) for i in imports_of(m, tmp_path)}
    assert found == {
        ("smallcode.low.deep", "smallcode.low.sub", 1, ""),
        ("smallcode.low.deep", "smallcode.low.sub", 2, "_hidden"),
        ("smallcode.high", "smallcode.low.deep", 4, ""),
        ("smallcode.high", "smallcode.low.sub", 6, ""),
        ("smallcode.high", "smallcode.low", 6, "_private"),
        ("smallcode.high", "smallcode.low", 7, ""),
        ("smallcode.high", "smallcode.low.sub", 8, ""),
    }


def test_the_rules_fire() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    assert "runtime" not in allowed("train") and "model" in allowed("runtime") and "errors" in allowed("cli")
    assert "eval" not in allowed("agent") and "agent" in allowed("eval")
