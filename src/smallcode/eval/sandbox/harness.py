"""The harness side of the sandbox: start the payload inside an isolation layer, send it programs,
bring back what they produced. Also the one way to run *trusted* Python without a sandbox.

A :class:`Sandbox` starts one long-lived zygote (``payload.py``) inside an isolation layer
(``isolation.py``) and keeps it for many programs; :meth:`Sandbox.run` sends one program and returns
a :class:`RunResult`. The payload's source and that of :mod:`smallcode.tasks.values` travel on the
command line (the checkout is not visible inside bwrap), so the sandbox needs only the interpreter.

What it defends against: runaway CPU (also with SIGALRM/SIGXCPU ignored: the wall deadline and
the hard CPU limit end in SIGKILL), huge allocations, fork bombs, writes or deletions outside the
working directory, network access, leftover background processes, floods of output, and
tampering with the harness (the verdict is computed in the harness process, see ``check.py``).
What it does not defend against: kernel exploits and side channels; in ``unshare``/``rlimits``
modes, reading world-readable host files; in ``rlimits`` mode, network access and processes that
escape the process group. It is not a defence for a harness that passes secrets in the program.

:func:`run_python` is not a sandbox: it runs code we trust (reference solutions, the miner's test
tracer) in a fresh interpreter with a timeout and nothing else.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from smallcode.sandbox.isolation import SANDBOX_WORKDIR, Isolation, allocate_uid, interpreter, resolve_isolation, wrap

RunMode = Literal["exec", "call"]
Status = Literal["ok", "exception", "timeout", "memory", "crashed", "sandbox"]

# Modules shipped into the sandbox, in import order: each is standard library only.
_SHIPPED = ("smallcode.tasks.values", "smallcode.eval.sandbox.payload")
_PACKAGES = ("smallcode", "smallcode.tasks", "smallcode.eval", "smallcode.eval.sandbox")

# Runs under ``python -I -S -B -c``: registers the shipped sources under their package names (with
# empty parent packages, so nothing else of smallcode is importable) and hands over to the payload.
_BOOTSTRAP = """
import json, sys, types
cfg = json.loads(sys.argv[1])
for name in cfg.pop("packages"):
    pkg = sys.modules[name] = types.ModuleType(name)
    pkg.__path__ = []
for name, source in zip(cfg.pop("modules"), sys.argv[2:]):
    mod = sys.modules[name] = types.ModuleType(name)
    mod.__file__ = "<" + name + ">"
    exec(compile(source, mod.__file__, "exec"), mod.__dict__)
    parent, _, leaf = name.rpartition(".")
    setattr(sys.modules[parent], leaf, mod)
sys.modules["smallcode.eval.sandbox.payload"].serve(cfg)
"""


def _source(module: str) -> str:
    path = Path(__file__).resolve().parents[2].joinpath(*module.split(".")[1:]).with_suffix(".py")
    return path.read_text(encoding="utf-8")


@dataclass
class Limits:
    """Per-program limits."""

    timeout_s: float = 3.0
    """Wall-clock seconds the program may run; the CPU limit is derived from it."""
    memory_mb: int = 1024
    """Address-space limit (RLIMIT_AS) of the child, MiB."""
    file_size_mb: int = 16
    """Largest file the child may write (RLIMIT_FSIZE), MiB."""
    open_files: int = 64
    """RLIMIT_NOFILE."""
    processes: int = 32
    """RLIMIT_NPROC: processes (threads included) of the child's uid."""
    output_bytes: int = 16384
    """How much of the child's stdout+stderr comes back."""


def checking_limits(timeout_s: float, repositories: tuple[str, ...] = (), memory_mb: int = 1024) -> Limits:
    """The limits a problem's check runs under: a small function's by default; where the check runs a
    repository's own tests (``repositories`` bound in), the room pytest needs to start and collect."""
    if not repositories:
        return Limits(timeout_s=timeout_s, memory_mb=memory_mb)
    return Limits(timeout_s=timeout_s, memory_mb=max(memory_mb, 2048), open_files=256, file_size_mb=64)


@dataclass
class RunResult:
    """What a program did, in the sandbox or through :func:`run_python`."""

    status: Status
    """ok: finished and reported (or exited 0); exception: raised (``error``); timeout; memory;
    crashed: died without reporting (exit code/signal in ``error``); sandbox: the sandbox itself
    failed."""
    error: str = ""
    outputs: list[Any] | None = None
    """``call`` mode: the wire encodings of the return values (see ``smallcode.tasks.values``)."""
    output: str = ""
    """Captured stdout+stderr (:func:`run_python`: stderr), up to a cap; never used for a verdict."""
    duration_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == "ok"




class Sandbox:
    """One zygote; run programs one at a time with :meth:`run` (use one Sandbox per worker thread).

    ``uid_base``: under root, children run as ``uid_base + k`` (a uid nobody else uses, so the
    process limit counts only this sandbox's processes). Use as a context manager or call
    :meth:`close`. ``ro_paths`` / ``rw_paths``: host directories programs may read / also write, at
    their host paths (under bwrap nothing else of the host is visible; the other layers see the host
    anyway). As root, a writable one must be writable by :attr:`child_uid`.
    """

    ro_paths: tuple[str, ...] = ()
    rw_paths: tuple[str, ...] = ()

    def __init__(self, isolation: Isolation = "auto", limits: Limits | None = None, uid_base: int = 61000,
                 ro_paths: tuple[str, ...] = (), rw_paths: tuple[str, ...] = ()) -> None:
        self.isolation = resolve_isolation(isolation)
        self.limits = limits or Limits()
        self.ro_paths, self.rw_paths = tuple(ro_paths), tuple(rw_paths)
        self.root = os.geteuid() == 0
        self.child_uid = allocate_uid(uid_base) if self.root else None
        self._proc: subprocess.Popen[bytes] | None = None
        self._hostdir: str | None = None
        self._start()

    # ---- lifecycle -------------------------------------------------------------------------------
    def _command(self) -> list[str]:
        cfg: dict[str, Any] = {
            "child_uid": self.child_uid,
            "pid_ns": self.isolation != "rlimits",
            "packages": list(_PACKAGES),
            "modules": list(_SHIPPED),
        }
        if self.isolation == "bwrap":
            cfg["workdir"] = SANDBOX_WORKDIR
        else:
            # Without a private tmpfs the working directories live in a fresh host directory that
            # the child uid may enter but not list.
            self._hostdir = tempfile.mkdtemp(prefix="smallcode-sbx-")
            os.chmod(self._hostdir, 0o711)
            cfg["workdir"] = self._hostdir
        argv = [interpreter(), "-I", "-S", "-B", "-c", _BOOTSTRAP, json.dumps(cfg), *map(_source, _SHIPPED)]
        return wrap(self.isolation, argv, self.ro_paths, self.rw_paths)

    def _start(self) -> None:
        self._proc = subprocess.Popen(
            self._command(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONHASHSEED": "0"},
            start_new_session=True,
            close_fds=True,
        )
        # Drain stderr so a chatty failure can never block the zygote.
        self._stderr_tail = b""
        threading.Thread(target=self._drain, args=(self._proc.stderr,), daemon=True).start()
        ready = self._read_line(30.0)
        if ready is None or json.loads(ready).get("ready") is not True:
            err = self._stderr_tail.decode(errors="replace")[-2000:]
            self.close()
            raise RuntimeError(f"sandbox ({self.isolation}) failed to start: {err or 'no answer'}")

    def _drain(self, stream: Any) -> None:
        for line in stream:
            self._stderr_tail = (self._stderr_tail + line)[-4096:]

    def _read_line(self, timeout: float) -> bytes | None:
        assert self._proc is not None and self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        chunks: list[bytes] = []  # joined once at the end: answers can be hundreds of MB
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return None
            chunk = os.read(fd, 1 << 22)
            if not chunk:
                return None
            chunks.append(chunk)
            if chunk.endswith(b"\n"):  # one JSON line per answer; JSON escapes inner newlines
                return b"".join(chunks)

    def close(self) -> None:
        """Kill the zygote and everything it started."""
        if self._proc is not None:
            try:
                os.killpg(self._proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            self._proc.wait()
            for s in (self._proc.stdin, self._proc.stdout, self._proc.stderr):
                if s is not None:
                    s.close()
            self._proc = None
        if self._hostdir is not None:
            shutil.rmtree(self._hostdir, ignore_errors=True)
            self._hostdir = None

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- running -------------------------------------------------------------------------------
    def run(
        self,
        program: str,
        mode: RunMode = "exec",
        entry_point: str = "",
        inputs: list[Any] | None = None,
        timeout_s: float | None = None,
        memory_mb: int | None = None,
    ) -> RunResult:
        """Run ``program``.

        ``exec``: execute it; ``ok`` means it finished without raising. ``call``: execute it, then
        call ``entry_point(*args)`` for each encoded argument tuple in ``inputs`` (see
        :func:`smallcode.tasks.values.encode`); ``outputs`` holds one encoded return value (or
        ``["raise", type, msg]``) per input; very large outputs come back as digests (see
        :func:`smallcode.tasks.values.encode_output`). Inputs reach the child; nothing else of the
        caller's does. ``timeout_s``/``memory_mb`` override the sandbox's limits for this run.
        """
        if self._proc is None or self._proc.poll() is not None:
            self.close()
            self._start()
        lim = self.limits
        timeout = lim.timeout_s if timeout_s is None else timeout_s
        req = {
            "program": program,
            "mode": mode,
            "entry_point": entry_point,
            "inputs": inputs or [],
            "timeout": timeout,
            "memory": (memory_mb or lim.memory_mb) << 20,
            "fsize": lim.file_size_mb << 20,
            "nofile": lim.open_files,
            "nproc": lim.processes,
            "out_cap": lim.output_bytes,
        }
        assert self._proc is not None and self._proc.stdin is not None
        t0 = time.monotonic()
        try:
            self._proc.stdin.write(json.dumps(req).encode() + b"\n")
            self._proc.stdin.flush()
            line = self._read_line(timeout + 10.0)
        except (BrokenPipeError, OSError):
            line = None
        if line is None:
            self.close()
            return RunResult("sandbox", "sandbox did not answer; restarted", duration_s=time.monotonic() - t0)
        try:
            resp = json.loads(line)
        except json.JSONDecodeError:
            self.close()
            return RunResult("sandbox", "sandbox answered garbage; restarted")
        return RunResult(
            status=resp["status"],
            error=resp.get("error", ""),
            outputs=resp.get("outputs"),
            output=resp.get("output", ""),
            duration_s=resp.get("duration", time.monotonic() - t0),
        )


def _trusted_env() -> dict[str, str]:
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "SYSTEMROOT", "TMPDIR")
    env = {k: v for k, v in os.environ.items() if k in keep}
    env["PYTHONHASHSEED"] = "0"  # set iteration order feeds into some outputs; make it repeatable
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def run_python(source: str, timeout: float = 30.0, args: tuple[str, ...] = ()) -> RunResult:
    """Run trusted ``source`` with this interpreter in a fresh temporary directory; kill it (and
    its process group) on timeout. Status ``ok`` (exit 0), ``exception`` (non-zero exit; the exit
    code in ``error``) or ``timeout``; ``output`` holds the last few KiB of stderr."""
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="smallcode-run-") as tmp:
        path = os.path.join(tmp, "program.py")
        with open(path, "w", encoding="utf-8") as f:
            f.write(source)
        proc = subprocess.Popen(
            [sys.executable, "-s", path, *args],
            cwd=tmp,
            env=_trusted_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        try:
            _, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            _, err = proc.communicate()
            tail = err.decode("utf-8", "replace")[-4000:]
            return RunResult("timeout", f"ran past {timeout}s", output=tail, duration_s=time.monotonic() - t0)
    tail = err.decode("utf-8", "replace")[-4000:]
    status: Status = "ok" if proc.returncode == 0 else "exception"
    error = "" if proc.returncode == 0 else f"exit code {proc.returncode}"
    return RunResult(status, error, output=tail, duration_s=time.monotonic() - t0)
