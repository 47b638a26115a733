"""The HTTP server: the app around a scheduler and a prompt format, with the routes of each API family.

``create_app(scheduler, prompt_format, model_name=..., api_key=..., limits=...)`` builds a FastAPI
app around a ``smallcode.runtime.scheduler.Scheduler`` (the Hugging Face one is one too) and a
``smallcode.runtime.formats.PromptFormat``; both are injected, so tests and the CLI build them as
they like, and either may be attached later (``app.state.service.attach``) while ``/health``
answers ``loading``. The routes are those of ``serve.openai``, ``serve.mistral`` and
``serve.llamacpp``; this module adds ``/health`` and ``/metrics``, the gate in front of every route
and the error handlers.

Every 4xx and 5xx body is OpenAI's ``{"error": {"message", "type", "param", "code"}}``: a refused
request (:class:`~smallcode.serve.service.APIError`), a body that does not fit the schema (400, not
FastAPI's 422), an unknown route, and an unexpected failure (500). With an API key, every route but
``/health`` needs ``Authorization: Bearer KEY`` (compared in constant time).
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Collection
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from smallcode.runtime.formats import PromptFormat
from smallcode.runtime.scheduler import Scheduler
from smallcode.serve import llamacpp, mistral, openai
from smallcode.serve.responses import error_response
from smallcode.serve.service import APIError, Limits, Service

__all__ = ["Limits", "create_app"]


FAMILIES = {"openai": openai, "mistral": mistral, "llama.cpp": llamacpp}
"""The API families, each a module with its ``router``."""


def create_app(scheduler: Scheduler | None, prompt_format: PromptFormat | None, *, model_name: str = "smallcode",
               api_key: str | None = None, limits: Limits | None = None,
               registry: CollectorRegistry | None = None,
               families: Collection[str] = FAMILIES) -> FastAPI:
    """The server around ``scheduler`` and ``prompt_format`` (None while loading: see ``Service.attach``).

    ``families``: the API families whose routes it answers (names of ``FAMILIES``); a server
    without ``llama.cpp`` answers ``/infill`` with 404, as an OpenAI-only server would.

    ``registry``: the prometheus ``CollectorRegistry`` that ``/metrics`` shows (default: the
    scheduler's metrics' registry).
    """
    limits = limits or Limits()
    service = Service(scheduler, prompt_format, model_name, limits)
    app = FastAPI(title="smallcode serve", version="1", description="OpenAI-compatible completions, chat and "
                  "llama.cpp's /infill on a local smallcode model.")
    app.state.service = service
    app.state.registry = registry
    app.add_middleware(_Gate, api_key=api_key, max_body_bytes=limits.max_body_bytes)
    app.add_exception_handler(APIError, _api_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _invalid)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _crash)
    app.add_api_route("/health", health, methods=["GET"])
    app.add_api_route("/v1/health", health, methods=["GET"], include_in_schema=False)  # llama.cpp's alias
    app.add_api_route("/metrics", metrics, methods=["GET"])
    unknown = set(families) - set(FAMILIES)
    if unknown:
        raise ValueError(f"unknown API families {sorted(unknown)}; known: {', '.join(FAMILIES)}")
    for name, family in FAMILIES.items():
        if name in families:
            app.include_router(family.router)
    return app


async def health(request: Request) -> Any:
    """``{"status": "ok"}`` once the model is loaded; before, llama.cpp's answer: a 503 with an error
    body (Tabby's supervisor, for one, waits for a 2xx), which also says ``"status": "loading"``."""
    if request.app.state.service.ready:
        return {"status": "ok"}
    body = {"status": "loading", "error": {"message": "Loading model", "type": "unavailable_error", "param": None,
                                           "code": "model_loading"}}
    return JSONResponse(body, status_code=503, headers={"Retry-After": "1"})


async def metrics(request: Request) -> Response:
    scheduler = request.app.state.service.scheduler
    reg = request.app.state.registry or (None if scheduler is None else scheduler.metrics.registry)
    return Response(generate_latest(reg) if reg is not None else b"", media_type=CONTENT_TYPE_LATEST)


# ---------------------------------------------------------------------- errors in OpenAI's shape
async def _api_error(request: Request, e: APIError) -> JSONResponse:
    return error_response(e.status, e.message, param=e.param, code=e.code, type=e.type, headers=e.headers)


async def _invalid(request: Request, e: RequestValidationError) -> JSONResponse:
    errors = e.errors()
    first = errors[0] if errors else {}
    if first.get("type") == "json_invalid":
        return error_response(400, "the body is not valid JSON", code="json_invalid")
    loc = [str(x) for x in first.get("loc", ()) if x != "body"]
    message = first.get("msg", "invalid request")
    return error_response(400, f"{'.'.join(loc) + ': ' if loc else ''}{message}",
                          param=loc[0] if loc else None, code=first.get("type"))


async def _http(request: Request, e: StarletteHTTPException) -> JSONResponse:
    return error_response(e.status_code, str(e.detail), headers=getattr(e, "headers", None))


async def _crash(request: Request, e: Exception) -> JSONResponse:
    return error_response(500, f"internal error: {type(e).__name__}", type="server_error")


class _Gate:
    """ASGI middleware in front of every route: the API key (all but ``/health``), then the body size.

    The body is read here, up to the limit, and replayed to the app; a larger one is a 413 without
    being read further. Every body is read as JSON whatever its declared type, as llama.cpp's server
    reads it: ``curl -d '{...}'`` declares a form, and refusing it would help nobody.
    """

    def __init__(self, app: Any, *, api_key: str | None, max_body_bytes: int) -> None:
        self.app, self.max_body_bytes = app, max_body_bytes
        self.key = f"Bearer {api_key}".encode() if api_key else None

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        if self.key is not None and scope.get("path") not in ("/health", "/v1/health"):
            given = headers.get(b"authorization", b"")
            if not hmac.compare_digest(given, self.key):
                response = error_response(401, "a valid API key is needed: send Authorization: Bearer KEY",
                                          code="invalid_api_key", type="authentication_error",
                                          headers={"WWW-Authenticate": "Bearer"})
                return await response(scope, receive, send)
        too_large = error_response(413, f"the request body is larger than {self.max_body_bytes} bytes",
                                   code="body_too_large")
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_body_bytes):
            return await too_large(scope, receive, send)
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # disconnected before the body was complete
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > self.max_body_bytes:
                return await too_large(scope, receive, send)
        body, replayed = b"".join(chunks), False
        if body and scope.get("method") == "POST" and b"json" not in headers.get(b"content-type", b""):
            kept = [(k, v) for k, v in scope.get("headers") or [] if k != b"content-type"]
            scope = {**scope, "headers": [*kept, (b"content-type", b"application/json")]}

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)
