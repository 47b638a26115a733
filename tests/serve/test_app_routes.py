"""The app is a thin factory over one router per API family: each route lives in its family's module."""

from __future__ import annotations

from typing import Any

import pytest

from smallcode.serve import llamacpp, mistral, openai
from smallcode.serve.app import create_app


def test_each_route_comes_from_its_api_family() -> None:
    families = {openai: {"/v1/models", "/v1/completions", "/v1/chat/completions"},
                mistral: {"/v1/fim/completions"},
                llamacpp: {"/infill", "/completion", "/tokenize", "/detokenize", "/props", "/slots"}}
    hidden = {"/completions", "/slots/{id_slot}"}  # aliases and refusals, out of the schema
    for family, paths in families.items():
        routes = {route.path for route in family.router.routes}  # type: ignore[attr-defined]
        assert routes - hidden == paths, family.__name__
    served = set(create_app(None, None).openapi()["paths"])
    assert served == {"/health", "/metrics"}.union(*families.values())


def test_a_server_without_a_family_answers_its_routes_with_404(tiny_tokenizer: Any) -> None:
    """``families`` leaves a family's routes out (the clients' fallback tests rely on a real 404)."""
    from fastapi.testclient import TestClient

    from smallcode.runtime.formats import prompt_format

    app = create_app(None, prompt_format(tiny_tokenizer), families=("openai", "mistral"))
    with TestClient(app) as client:
        assert client.post("/infill", json={"input_prefix": "a", "input_suffix": "b"}).status_code == 404
        assert client.get("/health").status_code == 503  # no scheduler attached: still loading
    with pytest.raises(ValueError, match="unknown API families"):
        create_app(None, None, families=("openai", "ollama"))


def test_no_route_waits_for_the_thread_pool() -> None:
    """FastAPI runs a plain ``def`` endpoint or dependency in its thread pool: a thread hop per
    request, which the model loop's thread slows down (a keystroke paid about 3 ms at p50). Every
    endpoint and dependency of the API routes is a coroutine function."""
    import inspect

    def calls(dependant: Any) -> list[Any]:
        return [dependant.call, *(c for d in dependant.dependencies for c in calls(d))]

    for family in (openai, mistral, llamacpp):
        for route in family.router.routes:
            for call in calls(route.dependant):  # type: ignore[attr-defined]
                if call is not None and not inspect.isclass(call):
                    assert inspect.iscoroutinefunction(call), f"{route.path}: {call.__qualname__} is not async"  # type: ignore[attr-defined]
