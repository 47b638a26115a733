"""What the sandbox guarantees, checked from inside it: isolation per layer, limits, the probe."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_sandbox_helpers import require_bwrap

from smallcode.eval.sandbox import Limits, Sandbox, available, resolve_isolation
from smallcode.tasks.values import decode, encode


def test_bwrap_is_installed() -> None:
    """In CI a missing bwrap is a failure, not a silent downgrade of the sandbox."""
    require_bwrap()
    assert resolve_isolation("auto") == "bwrap"


@pytest.fixture(scope="module")
def bwrap() -> Iterator[Sandbox]:
    require_bwrap()
    with Sandbox("bwrap", Limits(timeout_s=2.0)) as sb:
        yield sb


def _probe(sb: Sandbox, code: str) -> dict:
    """Run ``code`` which assigns ``result``; return it through the call-mode channel."""
    r = sb.run(code + "\ndef probe():\n    return result\n", mode="call", entry_point="probe", inputs=[encode(())])
    assert r.status == "ok", r
    return json.loads(decode(r.outputs[0]))


INSIDE = """
import json, os, socket
def net():
    try:
        socket.create_connection(("1.1.1.1", 53), timeout=1)
        return "connected"
    except OSError as e:
        return type(e).__name__
result = json.dumps({
    "uid": os.getuid(), "gid": os.getgid(), "cwd": os.getcwd(), "env": sorted(os.environ),
    "files": os.listdir("."), "root": sorted(os.listdir("/")), "net": net(),
    "interfaces": [n for _, n in socket.if_nameindex()],
    "repo_visible": os.path.exists(REPO), "home_visible": os.path.exists("/root/.bashrc"),
    "pid": os.getpid(), "pgid": os.getpgid(0), "sid": os.getsid(0),
})
"""


def test_bwrap_isolation(bwrap: Sandbox) -> None:
    repo = str(Path(__file__).resolve().parents[2])
    info = _probe(bwrap, f"REPO = {repo!r}\n" + INSIDE)
    assert info["net"] != "connected"
    assert info["interfaces"] == ["lo"]  # a fresh network namespace: loopback only
    assert not info["repo_visible"] and not info["home_visible"]
    assert set(info["root"]) <= {
        "usr",
        "bin",
        "sbin",
        "lib",
        "lib32",
        "lib64",
        "libx32",
        "tmp",
        "dev",
        "proc",
        "root",
        "home",
        "opt",
        "work",
    }  # system dirs + the interpreter's prefix path
    assert info["files"] == [".output"]  # a private, empty working directory
    assert set(info["env"]) <= {"PATH", "HOME", "TMPDIR", "LANG"}
    assert info["pgid"] == info["pid"] == info["sid"]  # own session and process group
    if os.geteuid() == 0:
        assert info["uid"] != 0 and info["gid"] != 0
        assert info["uid"] == bwrap.child_uid


def test_work_dirs_are_fresh_for_each_program(bwrap: Sandbox) -> None:
    first = _probe(bwrap, "import os, json\nopen('left.txt', 'w').write('x')\nresult = json.dumps(os.getcwd())")
    second = _probe(bwrap, "import os, json\nresult = json.dumps([os.getcwd(), os.listdir('.')])")
    assert second[1] == [".output"]
    assert first != second[0]


def test_rlimits_layer_still_limits(tmp_path: Path) -> None:
    # The weakest layer: no namespaces, but limits, groups and verdict channel still work.
    with Sandbox("rlimits", Limits(timeout_s=1.0, memory_mb=256)) as sb:
        assert sb.run("x = 1").status == "ok"
        assert sb.run("while True: pass").status == "timeout"
        assert sb.run("x = bytearray(1 << 30)").status == "memory"
        assert sb.run("raise ValueError('boom')").error == "ValueError: boom"


def test_unavailable_isolation_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import smallcode.sandbox.isolation as sbm

    monkeypatch.setitem(sbm._PROBED, "bwrap", False)
    with pytest.raises(RuntimeError, match="not available"):
        resolve_isolation("bwrap")
    assert available("rlimits")


@pytest.mark.parametrize("layer", ["bwrap", "unshare"])
def test_probe_runs_the_sandbox_command_line(layer: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The availability probe must exercise every option the real sandbox uses, not a lookalike."""
    import subprocess
    from types import SimpleNamespace

    import smallcode.sandbox.isolation as iso
    from smallcode.eval.sandbox.harness import Sandbox as HarnessSandbox

    seen: list[list[str]] = []

    def fake_run(argv: list[str], **kwargs: object) -> SimpleNamespace:
        seen.append(argv)
        return SimpleNamespace(returncode=0)

    monkeypatch.setattr(iso, "subprocess", SimpleNamespace(run=fake_run, TimeoutExpired=subprocess.TimeoutExpired))
    monkeypatch.setattr(iso.os, "geteuid", lambda: 0)
    monkeypatch.setattr(iso.shutil, "which", lambda tool: f"/usr/bin/{tool}")
    assert iso._probe(layer)  # type: ignore[arg-type]
    sb = HarnessSandbox.__new__(HarnessSandbox)
    sb.isolation, sb.child_uid, sb._hostdir = layer, None, None
    try:
        real = sb._command()
    finally:
        if sb._hostdir is not None:
            os.rmdir(sb._hostdir)
    py = iso.interpreter()
    assert seen[0][: seen[0].index(py)] == real[: real.index(py)]
    assert seen[0][0] == layer


def test_cpu_limit_with_ignored_signals(bwrap: Sandbox) -> None:
    code = (
        "import signal\nfor s in (signal.SIGXCPU, signal.SIGALRM):\n    signal.signal(s, signal.SIG_IGN)\n"
        "while True:\n    pass\n"
    )
    r = bwrap.run(code, timeout_s=1.0)
    assert r.status == "timeout" and r.duration_s < 3.0


def test_file_size_and_open_files_limits(bwrap: Sandbox) -> None:
    r = bwrap.run("open('big', 'wb').write(b'x' * (64 << 20))")
    assert r.status != "ok"
    r = bwrap.run("fs = [open('f%d' % i, 'w') for i in range(1000)]")
    assert r.status == "exception" and "Too many open files" in r.error


def test_missing_bwrap_fails_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    import smallcode.sandbox.isolation as sbm

    monkeypatch.setitem(sbm._PROBED, "bwrap", False)
    monkeypatch.setenv("CI", "1")
    with pytest.raises(pytest.fail.Exception, match="bubblewrap"):
        require_bwrap()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception):
        require_bwrap()
