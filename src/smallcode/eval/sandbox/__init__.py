"""Run untrusted generated programs and bring back what they produced.

``isolation``: the namespaces a program runs in and the probe for them; ``harness``: the
:class:`Sandbox` that keeps a zygote and sends it programs (and :func:`run_python` for trusted code);
``payload``: the zygote itself, the program that runs inside.
"""

from smallcode.eval.sandbox.harness import (
    Limits,
    RunMode,
    RunResult,
    Sandbox,
    Status,
    checking_limits,
    run_python,
)
from smallcode.sandbox.isolation import Isolation, available, resolve_isolation

__all__ = [
    "Isolation",
    "Limits",
    "RunMode",
    "RunResult",
    "Sandbox",
    "Status",
    "available",
    "checking_limits",
    "resolve_isolation",
    "run_python",
]
