"""Single-site mutations of Python source: the seeded bugs of the repair suites and the mutants of
the compat cross-check.

A mutation swaps one operator, constant or ``return`` at one place (``==`` for ``!=``, ``+`` for
``-``, ``True`` for ``False``, ``return x`` for ``return not x``, ...). The patterns are textual,
so a site may sit in a string or a comment; callers that need a mutation to matter check it
against tests (see :mod:`smallcode.eval.agent_bench`). Not here: deciding whether a mutant is
equivalent to the original.
"""

from __future__ import annotations

import random
import re

_MUTATIONS: tuple[tuple[str, str], ...] = (
    (r"==", "!="),
    (r"!=", "=="),
    (r"<=", "<"),
    (r">=", ">"),
    (r"(?<![<>=!-])<(?![<=])", "<="),
    (r"(?<![<>=!-])>(?![>=])", ">="),
    (r"(?<![+=])\+(?![+=])", "-"),
    (r"(?<![-=>e])-(?![-=>])", "+"),
    (r"\bTrue\b", "False"),
    (r"\bFalse\b", "True"),
    (r"\band\b", "or"),
    (r"\bor\b", "and"),
    (r"\b0\b", "1"),
    (r"\b1\b", "2"),
    (r"\b2\b", "1"),
    (r"\breturn\b", "return not"),
)


def mutation_sites(code: str) -> list[tuple[int, int, str]]:
    """Every place a mutation applies: ``(start, end, replacement)``, pattern by pattern."""
    return [(m.start(), m.end(), rep) for pat, rep in _MUTATIONS for m in re.finditer(pat, code)]


def apply_site(code: str, site: tuple[int, int, str]) -> str:
    """``code`` with the one mutation ``site`` applied."""
    a, b, rep = site
    return code[:a] + rep + code[b:]


def mutants(completion: str, seed: int, count: int) -> list[str]:
    """``count`` random single-site mutations of ``completion`` (operator, constant or return swaps)."""
    rng = random.Random(seed)
    sites = mutation_sites(completion)
    return [apply_site(completion, rng.choice(sites)) for _ in range(count)] if sites else []
