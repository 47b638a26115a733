"""Latency next to pass@k: what the runner records per sample and what the report makes of it.

An OpenAI-style server on 127.0.0.1 (started here, streaming server-sent events) answers each
prompt with a known completion after a known pause, so timings are checked only against lower
bounds the pauses guarantee; percentiles are checked against numpy's.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from smallcode.backends.openai import OpenAIBackend
from smallcode.eval.report import percentile, report_dir
from smallcode.eval.runner import RunConfig, evaluate
from smallcode.tasks.base import Task

PAUSE_S = 0.05  # before the first event of each answer, and again before its last


class CompletionServer:
    """Streams ``answers[prompt]`` as two pieces for each of the ``n`` choices."""

    def __init__(self, answers: dict[str, str]) -> None:
        self.answers = answers
        self.requests: list[dict] = []
        srv = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a: object) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                srv.requests.append(body)
                text = srv.answers.get(body["prompt"], "    pass\n")
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                half = len(text) // 2
                for piece, finish, pause in ((text[:half], None, PAUSE_S), (text[half:], "stop", PAUSE_S)):
                    time.sleep(pause)
                    choices = [{"index": i, "text": piece, "finish_reason": finish} for i in range(body["n"])]
                    self.wfile.write(b"data: " + json.dumps({"choices": choices}).encode() + b"\n\n")
                    self.wfile.flush()
                self.wfile.write(b"data: [DONE]\n\n")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        # a short poll, so that shutdown() at teardown returns at once (the default waits up to 0.5 s)
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True).start()


def make_tasks(n: int, suite: str = "toy") -> list[Task]:
    return [
        Task(task_id=f"{suite}/{i}", suite=suite, prompt=f"def f{i}(x):\n", entry_point=f"f{i}",
             reference=f"    return x * {i}\n", test=f"def check(c):\n    assert c(3) == {3 * i}\n",
             inputs=((1,), (2,)))
        for i in range(n)
    ]


@pytest.fixture
def tasks() -> list[Task]:
    return make_tasks(4) + make_tasks(3, suite="other")


@pytest.fixture
def server(tasks: list[Task]) -> Iterator[CompletionServer]:
    # Odd tasks get a wrong answer, so pass@1 is not trivially 1.
    s = CompletionServer({t.prompt: t.reference if i % 2 == 0 else "    return -1\n" for i, t in enumerate(tasks)})
    yield s
    s.httpd.shutdown()


def cfg(**kw: object) -> RunConfig:
    return RunConfig(**{"n": 2, "k": [1], "workers": 2, "timeout_s": 5.0, "security_scan": False, **kw})


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@given(st.lists(st.floats(0, 1e3, allow_nan=False), min_size=1, max_size=50), st.floats(0, 100))
def test_percentile_matches_numpy(xs: list[float], q: float) -> None:
    assert percentile(xs, q) == pytest.approx(float(np.percentile(xs, q)), rel=1e-9, abs=1e-9)


def test_percentile_refuses_nothing_and_out_of_range() -> None:
    with pytest.raises(ValueError, match="no values"):
        percentile([], 50)
    with pytest.raises(ValueError, match=r"\[0, 100\]"):
        percentile([1.0], 101)


def test_endpoint_run_records_and_reports_latency(tmp_path: Path, tasks: list[Task], server: CompletionServer
                                                  ) -> None:
    summary = evaluate(tasks, OpenAIBackend(server.url, backoff_s=0.01), cfg(), tmp_path, "endpoint", progress=False)
    samples = lines(tmp_path / "samples.jsonl")
    assert len(samples) == 2 * len(tasks) and all(r["stream"] for r in server.requests)
    for r in samples:
        # The first piece comes one pause after the request, the last one a pause later.
        assert PAUSE_S <= r["ttft_s"] <= r["gen_s"] and r["gen_s"] >= 2 * PAUSE_S
    for suite, n_tasks in (("toy", 4), ("other", 3)):
        s = summary["suites"][suite]
        assert s["pass@1"] == pytest.approx(((n_tasks + 1) // 2) / n_tasks)
        mine = [r for r in samples if r["task_id"].startswith(suite + "/")]
        for key in ("gen", "ttft"):
            xs = [r[f"{key}_s"] for r in mine]
            for q in (50, 95):
                assert s["latency"][f"{key}_p{q}_s"] == pytest.approx(float(np.percentile(xs, q)), abs=1e-6)
        assert s["latency"]["timed_samples"] == 2 * n_tasks
    report = (tmp_path / "report.md").read_text()
    header = "| suite | tasks | samples | passed | pass@1 | gen p50 | gen p95 | TTFT p50 | TTFT p95 | verdicts |"
    assert header in report
    assert "| toy | 4 | 8 | 4 | 50.0% | " in report
    assert json.loads((tmp_path / "summary.json").read_text())["suites"] == summary["suites"]
    # `eval report` rebuilds the same latency from the directory alone.
    assert report_dir(tmp_path)["suites"] == summary["suites"]


def test_backend_without_its_own_timing_gets_the_call_time(tmp_path: Path) -> None:
    class Slow:
        name = "slow"

        def generate(self, prompts, n, temperature, top_p, max_tokens, stop):  # noqa: ANN001, ANN201
            time.sleep(PAUSE_S)
            return [[f"    return x * {p.split('(')[0][len('def f'):]}\n"] * n for p in prompts]

    summary = evaluate(make_tasks(3), Slow(), cfg(generate_batch=2), tmp_path, "slow", progress=False)
    samples = lines(tmp_path / "samples.jsonl")
    assert all(r["gen_s"] >= PAUSE_S and "ttft_s" not in r for r in samples)
    # One call per batch of two prompts: its samples share the call's time.
    assert len({r["gen_s"] for r in samples[:4]}) == 1
    lat = summary["suites"]["toy"]["latency"]
    assert lat["timed_samples"] == 6 and "ttft_p50_s" not in lat
    assert "| toy | 3 | 6 | 6 | 100.0% | " in (tmp_path / "report.md").read_text()
    assert " | n/a | n/a | " in (tmp_path / "report.md").read_text()  # no time to first token


def test_pregenerated_samples_have_no_latency(tmp_path: Path) -> None:
    tasks = make_tasks(2)
    summary = evaluate(tasks, {t.task_id: [t.reference] for t in tasks}, cfg(n=1), tmp_path, progress=False)
    assert "latency" not in summary["suites"]["toy"]
    report = (tmp_path / "report.md").read_text()
    assert "TTFT" not in report and "| toy | 2 | 2 | 2 | 100.0% | " in report


def test_cli_eval_run_against_an_endpoint(tmp_path: Path) -> None:
    from smallcode.cli.main import main
    from smallcode.eval.runner import load_tasks

    humaneval = load_tasks(["humaneval"], limit=2)
    server = CompletionServer({t.prompt: t.reference for t in humaneval})
    try:
        out = tmp_path / "run"
        argv = ["eval", "run", "--suite", "humaneval", "--limit", "2", "--endpoint", server.url, "--out", str(out),
                "--n", "1", "--k", "1", "--no-security", "--workers", "1"]
        assert main(argv) == 0
    finally:
        server.httpd.shutdown()
    s = json.loads((out / "summary.json").read_text())["suites"]["humaneval"]
    assert s["pass@1"] == 1.0 and s["latency"]["timed_samples"] == 2 and s["latency"]["ttft_p50_s"] >= PAUSE_S
    # The backend sends its requests from several threads: their order is not fixed.
    assert sorted(r["prompt"] for r in server.requests) == sorted(t.prompt for t in humaneval)
