"""Schemathesis over the server's OpenAPI schema: many generated requests per operation, counted.

Starts the server on loopback (a tiny random model behind the real scheduler, the small ``LIMITS``
so that every accepted request is cheap), loads its OpenAPI schema from ``/openapi.json``, and for every operation sends
``--cases`` requests that fit the schema and ``--cases`` that do not (schemathesis's positive and
negative generation, driven by Hypothesis). A request passes when the answer is not a 5xx and every
4xx is in OpenAI's error shape. Prints, per operation and mode, the cases sent and the count per
status; then every failure; the last line is one JSON object. Exit status 1 when anything failed.

``fuzz`` is also what ``tests/serve/test_app_schema.py`` runs, with a CI-sized number of cases.

    python benchmarks/serve_fuzz.py --cases 1000

Figures (2 idle CPU cores, 1,000 cases per operation and mode, about 6 minutes; main after the
Mistral FIM route and the tiny-temperature fix):

    operation                  mode       200    400   5xx
    POST /v1/completions       positive   189    811     0
    POST /v1/chat/completions  positive   446    554     0
    POST /v1/fim/completions   positive   359    641     0
    POST /infill               positive   426    574     0
    each of the four           negative     0   1000     0
    GET /health, /v1/models, /metrics: one case each (no input), 200.

Every 4xx was in OpenAI's shape. An earlier run (before the fix in ``sampling.choose``) found 11
500s, all from temperatures below float32's range (1e-100, 5e-324) giving NaN probabilities, and one
before that 38, from those and from a top_p of 5e-324.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import schemathesis
from hypothesis import HealthCheck, Phase, Verbosity, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from smallcode.serve.app import Limits

LIMITS = Limits(max_tokens=16, max_n=4, time_limit_s=5.0)
"""The fuzzed server's limits: every request it accepts is cheap."""


@dataclass
class FuzzReport:
    statuses: dict[str, Counter[int]] = field(default_factory=dict)
    """Per "METHOD /path mode": how many answers had each status."""
    failures: list[str] = field(default_factory=list)
    """One line per answer that was a 5xx or a 4xx not in OpenAI's error shape."""
    no_input: list[str] = field(default_factory=list)
    """Operations and modes with nothing to generate (negative requests to a route without input)."""

    def cases(self, label: str) -> int:
        return sum(self.statuses.get(label, Counter()).values())


def judge(status: int, content: bytes) -> str | None:
    """Why an answer is wrong, or None: no 5xx, and every 4xx is ``{"error": {message, type, param, code}}``."""
    if status >= 500:
        return f"status {status}: {content[:300]!r}"
    if status >= 400:
        try:
            body = json.loads(content)
        except ValueError:
            return f"status {status} with a body that is not JSON: {content[:300]!r}"
        error = body.get("error") if isinstance(body, dict) else None
        if set(body) != {"error"} or not isinstance(error, dict) or \
                set(error) != {"message", "type", "param", "code"} or not error["message"]:
            return f"status {status} not in OpenAI's error shape: {content[:300]!r}"
    return None


def fuzz(url: str, openapi: dict[str, Any], cases: int, *, headers: dict[str, str] | None = None) -> FuzzReport:
    """Send ``cases`` positive and ``cases`` negative requests per operation of ``openapi`` to ``url``."""
    report = FuzzReport()
    for result in schemathesis.openapi.from_dict(openapi).get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            _fuzz_one(report, f"{operation.label} {mode.value}", operation.as_strategy(generation_mode=mode),
                      url, cases, headers)
    return report


def _fuzz_one(report: FuzzReport, label: str, strategy: Any, url: str, cases: int,
              headers: dict[str, str] | None) -> None:
    counts = report.statuses.setdefault(label, Counter())

    # Nothing is raised inside, so every case is sent and counted; derandomized, so every run sends
    # the same cases.
    @settings(max_examples=cases, deadline=None, database=None, derandomize=True, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck), verbosity=Verbosity.quiet)
    @given(case=strategy)
    def send(case: Any) -> None:
        response = case.call(base_url=url, headers=headers, timeout=60)
        counts[response.status_code] += 1
        why = judge(response.status_code, response.content)
        if why is not None:
            report.failures.append(f"{label}: {why}; body sent: {str(case.body)[:300]}")

    try:
        send()
    except Unsatisfiable:  # negative mode on an operation with no input: nothing can be wrong with it
        report.statuses.pop(label)
        report.no_input.append(label)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", type=int, default=1000, help="Requests per operation and mode.")
    args = parser.parse_args()

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "serve"))
    from app_helpers import CONTEXT, make_engine, make_tokenizer, running_server  # type: ignore[import-not-found]

    with tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(make_tokenizer(Path(tmp)), CONTEXT)
        with running_server(engine, limits=LIMITS) as (url, _):
            report = fuzz(url, httpx.get(url + "/openapi.json").json(), args.cases)
    for label, counts in report.statuses.items():
        by_status = "  ".join(f"{status}: {n}" for status, n in sorted(counts.items()))
        print(f"{label:45s} {sum(counts.values()):6d} cases  {by_status}")
    for line in report.failures:
        print("FAIL", line)
    print(json.dumps({"cases_per_operation_and_mode": args.cases,
                      "sent": {label: sum(c.values()) for label, c in report.statuses.items()},
                      "failures": len(report.failures)}))
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
