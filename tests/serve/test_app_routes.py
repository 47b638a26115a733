"""The app is a thin factory over one router per API family: each route lives in its family's module."""

from __future__ import annotations

from smallcode.serve import llamacpp, mistral, openai
from smallcode.serve.app import create_app


def test_each_route_comes_from_its_api_family() -> None:
    families = {openai: {"/v1/models", "/v1/completions", "/v1/chat/completions"},
                mistral: {"/v1/fim/completions"}, llamacpp: {"/infill"}}
    for family, paths in families.items():
        assert {route.path for route in family.router.routes} == paths, family.__name__  # type: ignore[attr-defined]
    served = set(create_app(None, None).openapi()["paths"])
    assert served == {"/health", "/metrics"}.union(*families.values())
