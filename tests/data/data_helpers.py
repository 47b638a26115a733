"""Helpers shared by the data tests (a module of its own: 'conftest' is an ambiguous import name)."""

from __future__ import annotations


def make_module(i: int, lines: int = 40) -> str:
    """A distinct, realistic-looking Python module (distinct enough not to be a near-duplicate)."""
    body = [f'"""Module number {i}: helpers for case {i * 7919 % 1000}."""', "", "import math", ""]
    for j in range(lines):
        body.append(f"def f_{i}_{j}(x_{j}, y={(i * 31 + j * 17) % 97}):")
        body.append(f"    return math.sqrt(x_{j} ** {j % 5 + 1} + y * {i + j})  # note {(i * j) % 13}")
    return "\n".join(body) + "\n"
