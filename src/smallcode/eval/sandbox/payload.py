"""The program that runs inside the sandbox: a zygote that forks one confined child per program.

The zygote is started once per :class:`~smallcode.eval.sandbox.harness.Sandbox` and reads one JSON
request per line on stdin. For every program it forks a fresh child which, before any untrusted code
runs: starts its own session and process group; drops to an unprivileged uid (when the zygote has
the rights to, i.e. the harness runs as root); sets rlimits on CPU time, address space, file size,
open files and processes; moves into a private, empty working directory; points stdin at /dev/null
and stdout/stderr at a size-limited capture file; closes every other descriptor but the pipe that
carries its result back (outside RLIMIT_FSIZE's reach). The zygote waits for the child with a
wall-clock deadline; on expiry it SIGKILLs the child's process group and then every other process
in the sandbox but itself (``kill(-1)``), so grandchildren that changed group or session die too.
It answers one JSON line per request. Forking from a warm zygote is why this is faster than starting
an interpreter per program. The zygote never runs untrusted code, is marked non-dumpable (no ptrace
or /proc/PID/mem from its children) and, under root, runs as a different uid from its children, so
they cannot signal it either.

In ``call`` mode the child calls the entry point on each decoded input and sends back wire
encodings of the results (:mod:`smallcode.tasks.values`); the verdict is computed in the harness,
never here. This module and ``values`` are standard library only: the harness ships their source
into the sandbox, where the checkout is not visible, and runs them with ``python -I -S``
(:func:`serve` is the entry point). Nothing here decides how the process is isolated
(``isolation.py``) or how it is started and spoken to (``harness.py``).
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import sys
import time
from typing import Any

from smallcode.tasks import values

# Modules the zygote imports before forking, so children need not read the interpreter's files
# (which an unprivileged uid may not be allowed to) and start faster. All are standard library.
PRELOAD = (
    "math cmath re collections collections.abc itertools functools heapq bisect string typing random "
    "statistics fractions decimal operator copy json hashlib datetime array struct textwrap "
    "unicodedata numbers enum dataclasses abc io contextlib traceback sys os time calendar queue "
    "keyword ast types weakref socket subprocess signal shutil tempfile pathlib glob threading encodings.idna"
).split()

_RESULT_FD = 3
"""The child's result pipe; pipes are not subject to RLIMIT_FSIZE."""
_RESULT_CAP = 256 << 20
"""Results larger than this are refused (a crash verdict) rather than read into memory."""


def _libc() -> Any:
    import ctypes

    return ctypes.CDLL(None, use_errno=True)


def _child(req: dict[str, Any], cfg: dict[str, Any], workdir: str, result_fd: int) -> None:
    """In the forked child: confine, run, write the result file, exit. Never returns."""
    import resource

    try:
        os.setsid()
        uid = cfg.get("child_uid")
        if uid is not None:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
        cpu = int(req["timeout"]) + 1
        for lim, val in (
            (resource.RLIMIT_CPU, (cpu, cpu + 1)),
            (resource.RLIMIT_AS, (req["memory"], req["memory"])),
            (resource.RLIMIT_FSIZE, (req["fsize"], req["fsize"])),
            (resource.RLIMIT_NOFILE, (req["nofile"], req["nofile"])),
            (resource.RLIMIT_NPROC, (req["nproc"], req["nproc"])),
            (resource.RLIMIT_CORE, (0, 0)),
        ):
            resource.setrlimit(lim, val)
        os.chdir(workdir)
        null = os.open(os.devnull, os.O_RDONLY)
        out = os.open(os.path.join(workdir, ".output"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(null, 0)
        os.dup2(out, 1)
        os.dup2(out, 2)
        # The result goes back through a pipe on fd 3: pipes are not subject to RLIMIT_FSIZE, so
        # large outputs still arrive while the program's own files stay capped.
        if result_fd != _RESULT_FD:
            os.dup2(result_fd, _RESULT_FD)
        os.closerange(_RESULT_FD + 1, 1 << 16)
        for s in (signal.SIGINT, signal.SIGTERM, signal.SIGPIPE, signal.SIGCHLD, signal.SIGALRM):
            signal.signal(s, signal.SIG_DFL)
        os.environ.clear()
        os.environ.update({"PATH": "/usr/bin:/bin", "HOME": workdir, "TMPDIR": workdir, "LANG": "C.UTF-8"})
        inputs = req["inputs"]
        program = req["program"]
        entry = req["entry_point"]
        mode = req["mode"]
    except BaseException as e:  # noqa: BLE001
        os.write(2, f"sandbox setup failed: {e!r}\n".encode())
        os._exit(121)

    def write_result(obj: dict[str, Any]) -> None:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except BaseException:  # noqa: BLE001 - the program may have replaced or closed them
                pass
        view = memoryview(json.dumps(obj).encode())
        while view:
            view = view[os.write(_RESULT_FD, view) :]
        os.close(_RESULT_FD)

    def describe(e: BaseException) -> str:
        try:
            return f"{type(e).__name__}: {str(e)[:300]}"
        except BaseException:  # noqa: BLE001
            return type(e).__name__

    try:
        g: dict[str, Any] = {}
        exec(compile(program, "<program>", "exec"), g)  # noqa: S102 - running it is the point
        if mode == "exec":
            write_result({"status": "ok"})
        else:
            fn = g.get(entry)
            if not callable(fn):
                raise NameError(f"entry point {entry!r} is not defined")
            outs = []
            for enc in inputs:
                args = values.decode(enc)
                try:
                    outs.append(values.encode_output(fn(*args)))
                except (MemoryError, RecursionError):
                    raise
                except Exception as e:  # noqa: BLE001
                    outs.append(["raise", type(e).__name__, str(e)[:200]])
            write_result({"status": "ok", "outputs": outs})
    except MemoryError:
        write_result({"status": "memory", "error": "MemoryError"})
    except BaseException as e:  # noqa: BLE001 - SystemExit included: exiting early is a failure
        try:
            write_result({"status": "exception", "error": describe(e)})
        except BaseException:  # noqa: BLE001
            pass
    os._exit(0)


def _wait(pid: int, deadline: float, rfd: int, buf: bytearray) -> int | None:
    """Wait for ``pid`` until ``deadline`` (monotonic), collecting what it writes to ``rfd`` into
    ``buf`` (up to a cap); its wait status, or None on timeout."""
    try:
        pfd: int | None = os.pidfd_open(pid)
    except (AttributeError, OSError):
        pfd = None
    os.set_blocking(rfd, False)
    watch = [rfd] if pfd is None else [rfd, pfd]
    try:
        while True:
            wpid, status = os.waitpid(pid, os.WNOHANG)
            if wpid == pid:
                _drain(rfd, buf)
                return status
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready = select.select(watch, [], [], left if pfd is not None else min(left, 0.002))[0]
            if rfd in ready and not _drain(rfd, buf):
                watch = [w for w in watch if w != rfd]  # EOF or over the cap: stop reading
    finally:
        if pfd is not None:
            os.close(pfd)


def _drain(rfd: int, buf: bytearray) -> bool:
    """Read what is available; False at EOF or once the cap is reached."""
    while True:
        try:
            chunk = os.read(rfd, 1 << 20)
        except BlockingIOError:
            return True
        if not chunk:
            return False
        buf += chunk
        if len(buf) > _RESULT_CAP:
            return False


def _sweep(cfg: dict[str, Any], pgid: int) -> None:
    """Kill the child's group and, where that cannot hit the harness, every other sandbox process."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except OSError:
        pass
    if cfg.get("pid_ns"):
        try:
            os.kill(-1, signal.SIGKILL)  # all but ourselves and the namespace's init
        except OSError:
            pass
    elif cfg.get("child_uid") is not None:
        # Without a PID namespace, kill what runs as the child's uid from a helper running as it.
        pid = os.fork()
        if pid == 0:
            try:
                os.setuid(cfg["child_uid"])
                os.kill(-1, signal.SIGKILL)
            finally:
                os._exit(0)
        os.waitpid(pid, 0)


def _reap(limit_s: float = 2.0) -> None:
    """Reap every child we have left. When we are the namespace's init (``unshare`` mode), killed
    orphans re-parent to us and must be reaped before they vanish; wait for all of them."""
    deadline = time.monotonic() + limit_s
    while True:
        try:
            if os.waitpid(-1, os.WNOHANG)[0] == 0:
                if time.monotonic() > deadline:
                    return
                time.sleep(0.001)
        except ChildProcessError:
            return


def _wait_until_alone(limit_s: float = 2.0) -> None:
    """In a PID namespace, wait until only init and we remain (killed processes are gone, zombies
    reaped), so no process of one program outlives its verdict."""
    me = os.getpid()
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        try:
            others = [p for p in os.listdir("/proc") if p.isdigit() and int(p) not in (1, me)]
        except OSError:
            return
        if not others:
            return
        time.sleep(0.001)


def serve(cfg: dict[str, Any]) -> None:
    """Preload, say ready, then answer one request per stdin line until stdin closes."""
    for name in PRELOAD:
        try:
            __import__(name)
        except ImportError:
            pass
    try:
        _libc().prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE=0: children may not ptrace or poke us
    except (OSError, AttributeError):
        pass
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    base = cfg["workdir"]
    out = sys.stdout.buffer
    out.write(b'{"ready": true}\n')
    out.flush()
    counter = 0
    for line in sys.stdin.buffer:
        req = json.loads(line)
        counter += 1
        workdir = os.path.join(base, f"w{counter}")
        os.mkdir(workdir, 0o700)
        if cfg.get("child_uid") is not None:
            os.chown(workdir, cfg["child_uid"], cfg["child_uid"])
        rfd, wfd = os.pipe()
        t0 = time.monotonic()
        pid = os.fork()
        if pid == 0:
            os.close(rfd)
            _child(req, cfg, workdir, wfd)
        os.close(wfd)
        buf = bytearray()
        status = _wait(pid, t0 + req["timeout"], rfd, buf)
        duration = time.monotonic() - t0
        _sweep(cfg, pid)
        if status is None:
            status_after = os.waitpid(pid, 0)[1]
            if not (os.WIFSIGNALED(status_after) and os.WTERMSIG(status_after) == signal.SIGKILL):
                status = status_after  # it finished in the instant between deadline and kill
        _reap()
        if cfg.get("pid_ns"):
            _wait_until_alone()
        os.close(rfd)
        resp: dict[str, Any]
        if len(buf) > _RESULT_CAP:
            resp = {"status": "crashed", "error": f"the outputs exceed {_RESULT_CAP >> 20} MiB"}
        elif not buf:
            resp = {"status": "crashed", "error": "the program ended without reporting"}
        else:
            try:
                resp = json.loads(bytes(buf))
                if not isinstance(resp, dict) or resp.get("status") not in ("ok", "exception", "memory"):
                    raise ValueError("not a result")
            except ValueError:
                resp = {"status": "crashed", "error": "the program wrote a malformed result"}
        if status is None:
            resp = {
                "status": "timeout",
                "error": f"wall time over {req['timeout']:.1f}s; process group killed",
            }
        elif resp["status"] == "crashed":
            if os.WIFSIGNALED(status):
                sig = os.WTERMSIG(status)
                name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else str(sig)
                if sig == signal.SIGXCPU or sig == signal.SIGKILL and duration >= req["timeout"] * 0.9:
                    resp = {"status": "timeout", "error": f"CPU time limit ({name})"}
                else:
                    resp["error"] += f" (killed by {name})"
            else:
                resp["error"] += f" (exit code {os.WEXITSTATUS(status)})"
        try:
            with open(os.path.join(workdir, ".output"), "rb") as f:
                resp["output"] = f.read(req["out_cap"]).decode("utf-8", errors="replace")
        except OSError:
            pass
        resp["duration"] = duration
        shutil.rmtree(workdir, ignore_errors=True)
        out.write(json.dumps(resp).encode() + b"\n")
        out.flush()
