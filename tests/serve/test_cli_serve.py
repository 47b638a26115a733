"""``smallcode serve``: a real process on a tiny checkpoint, the options, and the loading state."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from app_helpers import make_engine, running_server, serve  # type: ignore[import-not-found]
from click.testing import CliRunner

import smallcode
from smallcode.cli.serve import is_loopback, load
from smallcode.cli.serve import serve as serve_command
from smallcode.model import ModelConfig, SmallCodeLM
from smallcode.model.checkpoint import save_checkpoint
from smallcode.serve.app import create_app
from smallcode.tokenizer import CodeTokenizer

TOKENIZER_FILE = "tokenizer.json"


@pytest.fixture(scope="module")
def checkpoint(tokenizer: CodeTokenizer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random model saved with the project's checkpoint writer."""
    out = tmp_path_factory.mktemp("serve-ckpt")
    tokenizer.save(out / "tokenizer")
    torch.manual_seed(0)
    model = SmallCodeLM(ModelConfig.preset("tiny", vocab_size=512))
    return save_checkpoint(model, out / "ckpt", tokenizer_file=out / "tokenizer" / TOKENIZER_FILE)


@contextmanager
def smallcode_serve(*args: str, **env: str) -> Iterator[tuple[str, list[str]]]:
    """``smallcode serve ARGS --port 0`` in a subprocess; (base URL, its log lines so far); stopped with
    Ctrl+C (SIGINT) on exit, which must end it cleanly."""
    env = {**os.environ, "PYTHONPATH": str(Path(smallcode.__file__).parents[1]), **env}
    command = [sys.executable, "-c", "import sys; from smallcode.cli.main import main; sys.exit(main())",
               "serve", *args, "--port", "0"]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log: list[str] = []
    bound = threading.Event()

    def read() -> None:  # uvicorn logs the port it bound; reading on keeps the pipe from filling
        assert proc.stdout is not None
        for line in proc.stdout:
            log.append(line)
            if "Uvicorn running on" in line:
                bound.set()

    threading.Thread(target=read, daemon=True).start()
    try:
        if not bound.wait(120):
            raise AssertionError("the server did not start:\n" + "".join(log))
        port = re.search(r"Uvicorn running on http://127\.0\.0\.1:(\d+)", "".join(log))
        assert port is not None, "".join(log)
        yield f"http://127.0.0.1:{port.group(1)}", log
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            assert proc.wait(30) == 0, "".join(log)
        finally:
            if proc.poll() is None:
                proc.kill()


def wait_until_ready(url: str, log: list[str]) -> None:
    statuses = []
    deadline = time.monotonic() + 60
    while not statuses or statuses[-1] != "ok":
        assert time.monotonic() < deadline, "".join(log)
        response = httpx.get(url + "/health")  # open without the key
        statuses.append(response.json()["status"])
        assert response.status_code == (200 if statuses[-1] == "ok" else 503)  # llama.cpp's 503 while loading
    # "loading" while the model loads (often over before the first poll on a model this small), then ok.
    assert set(statuses) <= {"loading", "ok"} and statuses == sorted(statuses)


def test_the_server_process_gets_ready_and_serves_with_the_key(checkpoint: Path) -> None:
    with smallcode_serve(str(checkpoint), "--model-name", "tiny-ckpt", SMALLCODE_API_KEY="k3y") as (url, log):
        wait_until_ready(url, log)
        body = {"prompt": "def foo(", "max_tokens": 4, "temperature": 0}
        assert httpx.post(url + "/v1/completions", json=body, timeout=60).status_code == 401
        wrong = httpx.post(url + "/v1/completions", json=body, headers={"Authorization": "Bearer no"}, timeout=60)
        assert wrong.status_code == 401
        response = httpx.post(url + "/v1/completions", json=body, headers={"Authorization": "Bearer k3y"},
                              timeout=60)
        assert response.status_code == 200, response.text
        data = response.json()
        assert data["model"] == "tiny-ckpt" and data["usage"]["completion_tokens"] == 4
        assert "warning" not in "".join(log)  # loopback: no warning


def test_a_hugging_face_directory_loads_behind_the_same_app(tmp_path: Path) -> None:
    # What the command's loader does with --model HF_DIR, in-process (a second server process would
    # pay for importing transformers again).
    from prometheus_client import CollectorRegistry
    from transformers import LlamaConfig, LlamaForCausalLM

    from hf_tokenizers import family_tokenizer  # type: ignore[import-not-found]

    tok = family_tokenizer("qwen2.5-coder")
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         eos_token_id=tok.eos_token_id, bos_token_id=None, pad_token_id=None)
    LlamaForCausalLM(config).save_pretrained(tmp_path / "hf")
    tok.save_pretrained(tmp_path / "hf")
    registry = CollectorRegistry()
    scheduler, fmt = load(tmp_path / "hf", device="cpu", max_batch=2, max_queue=2, registry=registry)
    try:
        app = create_app(scheduler, fmt, model_name="hf", registry=registry)
        with serve(app) as url:
            response = httpx.post(url + "/infill", json={"input_prefix": "def f(", "input_suffix": "):\n",
                                                         "n_predict": 3, "temperature": 0}, timeout=60)
            assert response.status_code == 200, response.text
            assert response.json()["tokens_predicted"] == 3
            assert "smallcode_requests_total" in httpx.get(url + "/metrics").text
    finally:
        scheduler.close()


def test_health_says_loading_until_the_model_is_attached(tokenizer: CodeTokenizer, prompt_format: Any) -> None:
    # What the command does: listen first, attach the scheduler and prompt format once loaded.
    app = create_app(None, None, model_name="tiny")
    with serve(app) as url:
        assert httpx.get(url + "/health").json()["status"] == "loading"
        assert httpx.post(url + "/v1/completions", json={"prompt": "x"}).status_code == 503
        with running_server(make_engine(tokenizer)) as (_, scheduler):
            app.state.service.attach(scheduler, prompt_format)
            assert httpx.get(url + "/health").json() == {"status": "ok"}
            response = httpx.post(url + "/v1/completions", json={"prompt": "x", "max_tokens": 2}, timeout=60)
            assert response.status_code == 200, response.text
            # a random model may end its text at once; otherwise it makes the two tokens asked for
            choice, used = response.json()["choices"][0], response.json()["usage"]["completion_tokens"]
            assert used == 2 if choice["finish_reason"] == "length" else used < 2


@pytest.mark.parametrize(("host", "loopback"), [("127.0.0.1", True), ("127.1.2.3", True), ("::1", True),
                                                ("localhost", True), ("0.0.0.0", False), ("::", False),
                                                ("192.168.1.20", False), ("example.com", False)])
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_a_non_loopback_address_without_a_key_warns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The directory holds no model, so each run fails before anything binds.
    monkeypatch.delenv("SMALLCODE_API_KEY", raising=False)
    runner = CliRunner()
    warned = runner.invoke(serve_command, [str(tmp_path), "--host", "0.0.0.0"])
    assert warned.exit_code != 0 and "warning: serving on 0.0.0.0 without an API key" in warned.output
    for args in (["--host", "0.0.0.0", "--api-key", "k"], ["--host", "127.0.0.1"]):
        quiet = runner.invoke(serve_command, [str(tmp_path), *args])
        assert quiet.exit_code != 0 and "warning" not in quiet.output
    monkeypatch.setenv("SMALLCODE_API_KEY", "k")
    assert "warning" not in runner.invoke(serve_command, [str(tmp_path), "--host", "0.0.0.0"]).output


def test_the_model_is_given_exactly_once(checkpoint: Path) -> None:
    runner = CliRunner()
    for args in ([], [str(checkpoint), "--model", str(checkpoint)]):
        result = runner.invoke(serve_command, args)
        assert result.exit_code == 2 and "give the model once" in result.output


def test_a_model_that_fails_to_load_stops_the_server_with_one_line(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')  # a Hugging Face config, no weights
    result = CliRunner().invoke(serve_command, [str(tmp_path), "--port", "0"])
    assert result.exit_code == 1
    assert f"cannot serve {tmp_path}" in result.output


def test_an_onnx_export_is_served_through_the_same_scheduler(checkpoint: Path, tmp_path: Path) -> None:
    """The command's loader on an ONNX export: the batching scheduler runs onnxruntime, and the answers
    are the torch checkpoint's own (greedy, the same prompt)."""
    from prometheus_client import CollectorRegistry

    from smallcode.export.onnx import export_onnx
    from smallcode.runtime import Engine, SamplingParams
    from smallcode.runtime.scheduler import Scheduler

    export_onnx(checkpoint, tmp_path / "onnx")
    registry = CollectorRegistry()
    scheduler, fmt = load(tmp_path / "onnx", device="cpu", max_batch=4, max_queue=4, registry=registry)
    try:
        assert isinstance(scheduler, Scheduler) and type(scheduler.engine.model).__name__ == "OnnxModel"
        app = create_app(scheduler, fmt, model_name="onnx", registry=registry)
        prompts = ["def foo(", "import json\n\ndef load(path):\n"]
        with serve(app) as url:
            body = {"prompt": prompts, "max_tokens": 12, "temperature": 0}
            response = httpx.post(url + "/v1/completions", json=body, timeout=60)
        assert response.status_code == 200, response.text
        texts = [c["text"] for c in sorted(response.json()["choices"], key=lambda c: c["index"])]
        reference = Engine.from_checkpoint(checkpoint)
        assert texts == [c.text for c in reference.generate(prompts, SamplingParams(max_tokens=12, temperature=0))]
    finally:
        scheduler.close()
