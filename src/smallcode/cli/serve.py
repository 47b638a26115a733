"""``smallcode serve CKPT``: the completion server (OpenAI API and llama.cpp's ``/infill``) on a local model.

CKPT (or ``--model PATH``) is a smallcode checkpoint, an ONNX export or a Hugging Face model directory,
opened by ``runtime.load.open_engine`` and served by the continuous-batching
``runtime.scheduler.Scheduler`` whatever its kind. A Hugging Face model of a family smallcode imports
(Llama, Mistral, Qwen2, ...) is imported in memory and runs on our engine (batched, prompt reuse) with its
own tokenizer; any other runs on transformers, one request at a time (``--runtime hf`` forces that). The server
listens at once and ``/health`` says ``loading`` until the model is ready. Binding anything but a loopback address
without an API key prints a warning: anyone who can reach the port can use the model.
"""

from __future__ import annotations

import ipaddress
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import click

from smallcode.cli.generate import speculate_options

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from smallcode.runtime.formats import PromptFormat
    from smallcode.runtime.scheduler import Scheduler
    from smallcode.runtime.speculative import Speculation


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine (a name other than localhost may not)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def load(checkpoint: Path, *, device: str, max_batch: int, max_queue: int,
         registry: CollectorRegistry, runtime: str | None = None,
         speculate: Speculation | None = None) -> tuple[Scheduler, PromptFormat]:
    """The scheduler and the prompt format for the model in ``checkpoint`` (any kind ``open_engine`` opens;
    ``runtime`` forces one; ``speculate`` turns speculative decoding on)."""
    from smallcode.runtime.load import open_engine
    from smallcode.runtime.metrics import Metrics
    from smallcode.runtime.scheduler import Scheduler

    engine = open_engine(checkpoint, device=device, runtime=runtime, speculate=speculate)  # type: ignore[arg-type]
    scheduler = Scheduler(engine, max_batch=max_batch, max_queue=max_queue, metrics=Metrics(registry))
    return scheduler, engine.prompt_format


_MODEL_DIR = click.Path(exists=True, file_okay=False, path_type=Path)


@click.command()
@click.argument("checkpoint", required=False, type=_MODEL_DIR)
@click.option("--model", "model_dir", type=_MODEL_DIR, default=None,
              help="The model directory, as an option (the same as CHECKPOINT; give one of the two).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535), help="Port to listen on.")
@click.option("--api-key", envvar="SMALLCODE_API_KEY", default=None,
              help="Require 'Authorization: Bearer KEY' on every route but /health (default: $SMALLCODE_API_KEY).")
@click.option("--max-batch", default=16, show_default=True, type=click.IntRange(1), help="Most rows decoded together.")
@click.option("--max-queue", default=64, show_default=True, type=click.IntRange(0),
              help="Most requests waiting for a row; beyond it, 503 with Retry-After.")
@click.option("--model-name", default=None, help="The model id clients see (default: the directory's name).")
@click.option("--device", default="cpu", show_default=True, help="Where the model runs.")
@click.option("--runtime", type=click.Choice(["torch", "onnx", "hf"]), default=None,
              help="Force a runtime (default: by the directory; 'hf' serves a Hugging Face model on transformers "
                   "instead of importing it).")
@speculate_options
def serve(checkpoint: Path | None, model_dir: Path | None, host: str, port: int, api_key: str | None,
          max_batch: int, max_queue: int, model_name: str | None, device: str, runtime: str | None,
          speculate: Speculation | None) -> None:
    """Serve the model in CHECKPOINT (or --model) over HTTP: /v1/completions, /v1/chat/completions, /infill."""
    import uvicorn
    from prometheus_client import CollectorRegistry

    from smallcode.errors import UserError
    from smallcode.model.checkpoint import model_directory_kind
    from smallcode.runtime.load import runtime_of
    from smallcode.serve.app import create_app

    if (checkpoint is None) == (model_dir is None):
        raise click.UsageError("give the model once: as CHECKPOINT or as --model PATH")
    checkpoint = checkpoint or model_dir
    assert checkpoint is not None
    if not api_key and not is_loopback(host):
        click.echo(f"warning: serving on {host} without an API key: anyone who can reach this port can use "
                   "the model (set --api-key or SMALLCODE_API_KEY)", err=True)
    if (runtime or runtime_of(checkpoint)) == "torch":  # a directory that is no model at all fails here, not later
        model_directory_kind(checkpoint)
    registry = CollectorRegistry()
    app = create_app(None, None, model_name=model_name or checkpoint.resolve().name, api_key=api_key,
                     registry=registry)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="info"))
    failure: list[BaseException] = []

    def load_then_attach() -> None:
        try:
            app.state.service.attach(*load(checkpoint, device=device, max_batch=max_batch, max_queue=max_queue,
                                           registry=registry, runtime=runtime, speculate=speculate))
        except BaseException as e:  # noqa: BLE001 - reported by the main thread once the server stops
            failure.append(e)
            server.should_exit = True

    threading.Thread(target=load_then_attach, name="load-model", daemon=True).start()
    try:
        server.run()
    except KeyboardInterrupt:  # uvicorn re-raises the Ctrl+C it stopped on; for a server that is a clean stop
        pass
    finally:
        scheduler = app.state.service.scheduler
        if scheduler is not None:
            scheduler.close()
    if failure:
        error = failure[0]
        if isinstance(error, UserError | OSError):  # the files, not the code: say so in one line
            raise click.ClickException(f"cannot serve {checkpoint}: {error}") from error
        raise error
