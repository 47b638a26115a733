"""One client for every model consumer: the runtime in this process, or a server over HTTP.

* ``base``: the requests (:class:`Text`, :class:`Fim`, :class:`Chat`), :class:`Sampling`, the answers
  (:class:`Completion`, streamed :class:`Delta` s), the :class:`Client` protocol and the one error
  type, :class:`ClientError` (:class:`ClientBusy` for a full queue).
* ``local.LocalClient`` / ``local.open_local(path)``: the runtime's ``Scheduler`` and ``PromptFormat``
  (a smallcode checkpoint, an ONNX export, a Hugging Face directory, or an ``Engine`` given).
* ``http.HttpClient``: any OpenAI-compatible server, and llama.cpp's ``/infill`` (httpx).
* ``sse``: the one server-sent-events parser.

``open_client(spec)`` opens either from a model directory or an http(s) URL. Importing this package
imports neither torch nor httpx: each transport's module is imported when it is opened.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from smallcode.client.base import (
    GREEDY,
    Chat,
    Client,
    ClientBusy,
    ClientError,
    Completion,
    Delta,
    Fim,
    Request,
    Sampling,
    StopCut,
    Text,
    truncate_at_stop,
)

__all__ = ["GREEDY", "Chat", "Client", "ClientBusy", "ClientError", "Completion", "Delta", "Fim", "Request", "Sampling",
           "StopCut", "Text", "open_client", "truncate_at_stop"]


def open_client(spec: str | Path, **options: Any) -> Client:
    """An http(s) URL: ``http.HttpClient(spec, **options)``; a model directory:
    ``local.open_local(spec, **options)``."""
    if str(spec).startswith(("http://", "https://")):
        from smallcode.client.http import HttpClient

        return HttpClient(str(spec), **options)
    from smallcode.client.local import open_local

    return open_local(spec, **options)
