"""Schemathesis over the live server's own OpenAPI schema, a CI-sized run: requests that fit the
schema and requests that do not, on every operation; no 5xx, and every 4xx in OpenAI's error shape.
``benchmarks/serve_fuzz.py`` runs the same with 1,000 cases per operation and mode."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from app_helpers import CONTEXT, make_engine, running_server  # type: ignore[import-not-found]

from smallcode.tokenizer import CodeTokenizer

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from serve_fuzz import LIMITS, fuzz, judge  # type: ignore[import-not-found]  # noqa: E402

CASES = 12
"""Per operation and mode (positive, negative)."""


@pytest.fixture(scope="module")
def fuzzed(tokenizer: CodeTokenizer) -> Iterator[tuple[str, Any]]:
    with running_server(make_engine(tokenizer, CONTEXT), limits=LIMITS) as served:
        yield served


def test_generated_requests_get_no_5xx_and_openai_shaped_4xx(fuzzed: tuple[str, Any]) -> None:
    url, scheduler = fuzzed
    openapi = httpx.get(url + "/openapi.json").json()
    routes = ("/v1/completions", "/v1/chat/completions", "/v1/fim/completions", "/infill")
    assert {*routes, "/health"} <= set(openapi["paths"])
    for route in routes:  # errors documented as sent
        responses = openapi["paths"][route]["post"]["responses"]
        assert "422" not in responses
        error_schema = responses["400"]["content"]["application/json"]["schema"]
        assert error_schema == {"$ref": "#/components/schemas/ErrorResponse"}
    report = fuzz(url, openapi, CASES)
    assert report.failures == []
    for label, counts in report.statuses.items():
        assert sum(counts.values()) >= 1, label
    # Both kinds of answer were seen: the generated requests are not all refused. (Per route, a dozen
    # cases may all be refused: the schema's integers include 2.0, which the strict models refuse.)
    generating = [label for label in report.statuses if label.startswith("POST")]
    assert sum(report.statuses[label][200] for label in generating) > 0, report.statuses
    assert all(report.statuses[label][400] > 0 for label in generating if label.endswith("negative"))
    assert scheduler.metrics.value("smallcode_running_rows") == 0


@pytest.mark.parametrize(("status", "content"), [
    (500, b'{"error": {"message": "x", "type": "server_error", "param": null, "code": null}}'),
    (400, b"not json"),
    (400, b'{"detail": "bad"}'),
    (422, b'{"error": {"message": "x", "type": "t"}}'),
])
def test_the_judge_refuses_what_the_fuzz_must_not_see(status: int, content: bytes) -> None:
    assert judge(status, content) is not None
