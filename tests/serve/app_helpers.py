"""The real server on loopback for the app tests: the shared tiny model (``factories.make_model``),
the real scheduler and prompt format, uvicorn in a thread on a free port, stopped by the caller."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import uvicorn

from factories import make_model, tiny_tokenizer  # type: ignore[import-not-found]
from smallcode.runtime.engine import Engine
from smallcode.runtime.formats import prompt_format
from smallcode.runtime.scheduler import Scheduler
from smallcode.serve.app import Limits, create_app
from smallcode.tokenizer import CodeTokenizer

CONTEXT = 1024
"""The context of the shared test server (tokens)."""


def make_tokenizer(out: Path) -> CodeTokenizer:
    """The shared test tokenizer (``factories.tiny_tokenizer``), saved in ``out`` as well.

    Kept for ``tests/lsp/conftest.py``, which can take the ``tiny_tokenizer`` fixture instead."""
    tokenizer = tiny_tokenizer()
    tokenizer.save(out)
    return tokenizer


def make_engine(tokenizer: CodeTokenizer, max_context: int | None = None) -> Engine:
    """An engine on a fresh copy of the shared tiny model (the same weights every time)."""
    return Engine(make_model(), tokenizer, max_context=max_context)


@contextmanager
def serve(app: Any) -> Iterator[str]:
    """Run ``app`` with uvicorn on 127.0.0.1 (a free port) in a thread; yield its base URL."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("the server did not start")
            thread.join(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


def metric(scheduler: Scheduler, name: str, **labels: str) -> float:
    return scheduler.metrics.value(name, **labels)


def model_work(scheduler: Scheduler) -> dict[str, float]:
    """The counters that move when the model loop takes a request or runs the model."""
    names = ("smallcode_prompt_tokens_total", "smallcode_prefill_steps_total", "smallcode_decode_steps_total",
             "smallcode_completion_tokens_total")
    return {name: metric(scheduler, name) for name in names}


@contextmanager
def running_server(engine: Engine, *, api_key: str | None = None, limits: Limits | None = None,
                   **scheduler_options: Any) -> Iterator[tuple[str, Scheduler]]:
    """The real scheduler on ``engine`` behind the app, served on loopback; everything stopped on exit."""
    scheduler = Scheduler(engine, **scheduler_options)
    try:
        app = create_app(scheduler, prompt_format(engine.tokenizer), model_name="tiny", api_key=api_key,
                         limits=limits)
        with serve(app) as url:
            yield url, scheduler
    finally:
        scheduler.close()
