"""``LocalModel``: the scheduler in process stops a cancelled completion within a decode step."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest

from smallcode.client import ClientError
from smallcode.lsp.models import FimRequest, LocalModel

pytestmark = pytest.mark.asyncio


class Gate:
    """The engine's model behind a gate: while it is closed, the scheduler's loop waits at its next
    model call (everything else is the model's own)."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.open = threading.Event()
        self.open.set()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.open.wait()
        return self.model(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)


async def test_cancelling_the_task_stops_the_model(checkpoint: Path) -> None:
    model = LocalModel(checkpoint)
    try:
        await model.ready()
        engine = model.scheduler.engine
        gate = engine.model = Gate(engine.model)
        started = asyncio.Event()

        def enough(text: str) -> bool:
            started.set()
            return False

        request = FimRequest("def f(x):\n    return ", "\n", max_tokens=400)
        task = asyncio.ensure_future(model.complete(request, enough))
        await asyncio.wait_for(started.wait(), 30)
        metrics = model.scheduler.metrics
        # The loop is held at its next model call from the cancel until the tokens are counted, so
        # that it cannot run steps in between: the one step already past its check of the
        # cancellation may add a token, no later one (the module's promise: within one decode step).
        gate.open.clear()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task  # the stream is closed and the request's handle cancelled when the task ends
        tokens_at_cancel = metrics.value("smallcode_completion_tokens_total")
        gate.open.set()
        for _ in range(200):  # the loop thread ends the row at its next step
            if metrics.value("smallcode_requests_total", outcome="cancelled") == 1:
                break
            await asyncio.sleep(0.01)
        assert metrics.value("smallcode_requests_total", outcome="cancelled") == 1
        assert tokens_at_cancel <= metrics.value("smallcode_completion_tokens_total") <= tokens_at_cancel + 1
        assert model.calls == 1
    finally:
        await model.close()


async def test_a_directory_without_a_model_is_a_model_error(tmp_path: Path) -> None:

    model = LocalModel(tmp_path)
    with pytest.raises(ClientError, match="could not be loaded"):
        await model.complete(FimRequest("a", "b"), lambda text: False)
    assert model.calls == 0


async def test_a_speculating_local_model_completes_as_the_plain_one(checkpoint: Path) -> None:
    request = FimRequest("import json\nimport os\nimport json\n", "\n", max_tokens=40)
    texts = []
    for speculate in (None, "ngram"):
        model = LocalModel(checkpoint, speculate=speculate)
        try:
            await model.ready()
            texts.append(await model.complete(request, lambda text: False))
            if speculate:
                assert model.scheduler.engine.speculator is not None
        finally:
            await model.close()
    assert texts[0] == texts[1]
