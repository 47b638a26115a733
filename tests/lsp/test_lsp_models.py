"""``LocalModel``: the scheduler in process stops a cancelled completion within a decode step."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from smallcode.client import ClientError
from smallcode.lsp.models import FimRequest, LocalModel

pytestmark = pytest.mark.asyncio


async def test_cancelling_the_task_stops_the_model(checkpoint: Path) -> None:
    model = LocalModel(checkpoint)
    try:
        await model.ready()
        started = asyncio.Event()

        def enough(text: str) -> bool:
            started.set()
            return False

        request = FimRequest("def f(x):\n    return ", "\n", max_tokens=400)
        task = asyncio.ensure_future(model.complete(request, enough))
        await asyncio.wait_for(started.wait(), 30)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        metrics = model.scheduler.metrics
        for _ in range(200):  # the loop thread ends the row at its next step
            if metrics.value("smallcode_requests_total", outcome="cancelled") == 1:
                break
            await asyncio.sleep(0.01)
        assert metrics.value("smallcode_requests_total", outcome="cancelled") == 1
        assert metrics.value("smallcode_completion_tokens_total") < 400
        assert model.calls == 1
    finally:
        await model.close()


async def test_a_directory_without_a_model_is_a_model_error(tmp_path: Path) -> None:

    model = LocalModel(tmp_path)
    with pytest.raises(ClientError, match="could not be loaded"):
        await model.complete(FimRequest("a", "b"), lambda text: False)
    assert model.calls == 0
