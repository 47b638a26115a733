"""The runtime package's own rules: no module imports or subclasses another module's private name
(tests included), and the runtime imports none of its consumers."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RUNTIME = ROOT / "src" / "smallcode" / "runtime"
FILES = sorted([*RUNTIME.glob("*.py"), *Path(__file__).parent.glob("*.py")])
CONSUMERS = ("serve", "client", "eval", "lsp", "agent", "train", "backends", "cli", "pipeline", "demo")


def private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


@pytest.mark.parametrize("path", FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_no_private_name_of_another_module_and_no_consumer(path: Path) -> None:
    tree = ast.parse(path.read_text(), str(path))
    modules: set[str] = set()  # names bound to imported modules
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            assert not any(private(a.name) for a in node.names), f"{path.name}:{node.lineno} imports a private name"
            modules |= {a.asname or a.name for a in node.names}
            if path.parent == RUNTIME:
                assert not node.module.startswith(tuple(f"smallcode.{c}" for c in CONSUMERS)), \
                    f"{path.name}:{node.lineno} imports {node.module}"
        elif isinstance(node, ast.Import):
            modules |= {(a.asname or a.name).split(".")[0] for a in node.names}
            if path.parent == RUNTIME:
                assert not any(a.name.startswith(tuple(f"smallcode.{c}" for c in CONSUMERS)) for a in node.names)
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            for base in node.bases:
                name = base.attr if isinstance(base, ast.Attribute) else getattr(base, "id", "")
                assert not private(name), f"{path.name}:{node.lineno} subclasses {name}"
        # module._name, e.g. cpu_decode._library: reaching into another module
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in modules:
            assert not private(node.attr), f"{path.name}:{node.lineno} uses {node.value.id}.{node.attr}"
