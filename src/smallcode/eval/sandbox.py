"""Run untrusted generated programs in a sandbox and bring back what they produced.

How it works. A :class:`Sandbox` starts one long-lived *zygote* process inside an isolation layer
and keeps it for many programs. For every program the zygote forks a fresh child which, before any
untrusted code runs: starts its own session and process group; drops to an unprivileged uid (when
the zygote has the rights to, i.e. the harness runs as root); sets rlimits on CPU time, address
space, file size, open files and processes; moves into a private, empty working directory; points
stdin at /dev/null and stdout/stderr at a size-limited capture file; closes every other
descriptor but the pipe that carries its result back (outside RLIMIT_FSIZE's reach). The
zygote waits for the child with a wall-clock deadline; on expiry it SIGKILLs the child's process
group and then every other process in the sandbox but itself (``kill(-1)``), so grandchildren that
changed group or session die too. Forking from a warm zygote costs about a millisecond, which is
why this is faster than starting an interpreter per program. The zygote never runs untrusted code,
is marked non-dumpable (no ptrace or /proc/PID/mem from its children) and, under root, runs as a
different uid from its children, so they cannot signal it either.

This file is both the harness side (:class:`Sandbox`) and the zygote: the harness runs its own
source with ``python -I -S -c``. It therefore imports only the standard library.

Isolation layers (``Isolation``), best available chosen by ``auto``:

* ``bwrap`` (bubblewrap): new network, PID, IPC and UTS namespaces (no network at all, not even
  loopback to the host), a read-only view of only the system directories and the interpreter
  prefix (the checkout, home directories and run directories do not exist inside), a size-capped
  tmpfs for ``/tmp``. As root: children run as a per-sandbox unprivileged uid (no capabilities).
  As a normal user: an unprivileged user namespace; children keep the user's uid.
* ``unshare`` (util-linux, root only): network and PID namespaces, unprivileged uid for children;
  the host filesystem stays visible with ordinary permissions (root-only files are protected,
  world-readable files are readable). Modules not preloaded by the zygote can be imported only
  if the interpreter is readable by that uid.
* ``rlimits``: no namespaces and no uid change, only the per-child limits, groups and kill
  sweep of the process group. The network is reachable. Use only for trusted samples.

What it defends against: runaway CPU (also with SIGALRM/SIGXCPU ignored: the wall deadline and
the hard CPU limit end in SIGKILL), huge allocations, fork bombs, writes or deletions outside the
working directory, network access, leftover background processes, floods of output, and
tampering with the harness (the verdict is computed in the harness process, see ``check.py``).
What it does not defend against: kernel exploits and side channels; in ``unshare``/``rlimits``
modes, reading world-readable host files; in ``rlimits`` mode, network access and processes that
escape the process group. It is not a defence for a harness that passes secrets in the program.
"""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, OrderedDict, defaultdict, deque
from dataclasses import dataclass
from typing import Any, Literal

Isolation = Literal["auto", "bwrap", "unshare", "rlimits"]
RunMode = Literal["exec", "call"]
Status = Literal["ok", "exception", "timeout", "memory", "crashed", "sandbox"]

# Modules the zygote imports before forking, so children need not read the interpreter's files
# (which an unprivileged uid may not be allowed to) and start faster. All are standard library.
PRELOAD = (
    "math cmath re collections collections.abc itertools functools heapq bisect string typing random "
    "statistics fractions decimal operator copy json hashlib datetime array struct textwrap "
    "unicodedata numbers enum dataclasses abc io contextlib traceback sys os time calendar queue "
    "keyword ast types weakref socket subprocess signal shutil tempfile pathlib glob threading encodings.idna"
).split()

_SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")


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


@dataclass
class RunResult:
    """What a program did. ``outputs`` are the tagged encodings of ``call`` mode's return values."""

    status: Status
    """ok: finished and reported; exception: raised (``error``); timeout; memory; crashed: died
    without reporting (exit code/signal in ``error``); sandbox: the sandbox itself failed."""
    error: str = ""
    outputs: list[Any] | None = None
    output: str = ""
    """Captured stdout+stderr, up to ``Limits.output_bytes``; never used for a verdict."""
    duration_s: float = 0.0


def _bwrap_available() -> bool:
    if shutil.which("bwrap") is None:
        return False
    try:
        r = subprocess.run(
            # Every feature the real command line uses (--perms and --size need bwrap >= 0.5).
            [
                "bwrap",
                "--ro-bind",
                "/",
                "/",
                "--unshare-net",
                "--unshare-pid",
                "--proc",
                "/proc",
                "--size",
                "1048576",
                "--tmpfs",
                "/tmp",
                "--perms",
                "0755",
                "--dir",
                "/tmp/probe",
                *([] if os.geteuid() == 0 else ["--unshare-user"]),
                "true",
            ],
            capture_output=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0


def _unshare_available() -> bool:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    try:
        r = subprocess.run(
            ["unshare", "--net", "--pid", "--fork", "--kill-child", "--mount-proc", "true"],
            capture_output=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0


_PROBED: dict[str, bool] = {}


def available(isolation: Isolation) -> bool:
    """Whether ``isolation`` works on this machine (probed once per process)."""
    if isolation in ("auto", "rlimits"):
        return True
    if isolation not in _PROBED:
        _PROBED[isolation] = _bwrap_available() if isolation == "bwrap" else _unshare_available()
    return _PROBED[isolation]


def resolve_isolation(isolation: Isolation = "auto") -> Isolation:
    """The concrete layer for ``isolation``; ``auto`` picks the strongest one that works here."""
    if isolation == "auto":
        for cand in ("bwrap", "unshare"):
            if available(cand):  # type: ignore[arg-type]
                return cand  # type: ignore[return-value]
        return "rlimits"
    if not available(isolation):
        raise RuntimeError(f"sandbox isolation {isolation!r} is not available on this machine")
    return isolation


def _ancestors(path: str) -> list[str]:
    parts = path.strip("/").split("/")[:-1]
    return ["/" + "/".join(parts[: i + 1]) for i in range(len(parts))]


_uid_lock = threading.Lock()
_next_slot = 0


def _allocate_uid(base: int) -> int:
    global _next_slot
    with _uid_lock:
        # Distinct per sandbox of this process (up to 64 at once) and, very likely, across processes.
        uid = base + (os.getpid() % 4096) * 64 + _next_slot % 64
        _next_slot += 1
        return uid


class Sandbox:
    """One zygote; run programs one at a time with :meth:`run` (use one Sandbox per worker thread).

    ``uid_base``: under root, children run as ``uid_base + k`` (a uid nobody else uses, so the
    process limit counts only this sandbox's processes). Use as a context manager or call
    :meth:`close`.
    """

    def __init__(self, isolation: Isolation = "auto", limits: Limits | None = None, uid_base: int = 61000) -> None:
        self.isolation = resolve_isolation(isolation)
        self.limits = limits or Limits()
        self.root = os.geteuid() == 0
        self.child_uid = _allocate_uid(uid_base) if self.root else None
        self._proc: subprocess.Popen[bytes] | None = None
        self._hostdir: str | None = None
        self._start()

    # ---- lifecycle -------------------------------------------------------------------------------
    def _command(self) -> list[str]:
        src = open(__file__, encoding="utf-8").read()
        py = os.path.realpath(sys.executable)
        cfg = {"child_uid": self.child_uid, "pid_ns": self.isolation != "rlimits"}
        if self.isolation == "rlimits":
            import tempfile

            self._hostdir = tempfile.mkdtemp(prefix="smallcode-sbx-")
            os.chmod(self._hostdir, 0o711)
            cfg["workdir"] = self._hostdir
            return [py, "-I", "-S", "-B", "-c", src, json.dumps(cfg)]
        if self.isolation == "unshare":
            import tempfile

            self._hostdir = tempfile.mkdtemp(prefix="smallcode-sbx-")
            os.chmod(self._hostdir, 0o711)
            cfg["workdir"] = self._hostdir
            return [
                "unshare",
                "--net",
                "--pid",
                "--fork",
                "--kill-child",
                "--mount-proc",
                py,
                "-I",
                "-S",
                "-B",
                "-c",
                src,
                json.dumps(cfg),
            ]
        cfg["workdir"] = "/tmp"
        cmd = [
            "bwrap",
            "--unshare-net",
            "--unshare-pid",
            "--unshare-ipc",
            "--unshare-uts",
            "--die-with-parent",
            "--new-session",
            "--proc",
            "/proc",
            "--dev",
            "/dev",
            "--size",
            str(256 << 20),
            "--tmpfs",
            "/tmp",
            "--chdir",
            "/tmp",
            "--hostname",
            "sandbox",
            "--clearenv",
        ]
        if self.root:
            cmd += [
                "--cap-add",
                "CAP_SETUID",
                "--cap-add",
                "CAP_SETGID",
                "--cap-add",
                "CAP_KILL",
                "--cap-add",
                "CAP_CHOWN",
                "--cap-add",
                "CAP_FOWNER",
                "--cap-add",
                "CAP_DAC_OVERRIDE",
            ]
        else:
            cmd += ["--unshare-user"]
        binds: list[str] = []
        for d in _SYSTEM_DIRS:
            if os.path.islink(d):
                cmd += ["--symlink", os.readlink(d), d]
            elif os.path.isdir(d):
                cmd += ["--ro-bind", d, d]
                binds.append(d)
        prefix = os.path.realpath(sys.base_prefix)
        pybin = os.path.dirname(py)
        for extra in (prefix, pybin):
            if any(extra == b or extra.startswith(b + "/") for b in binds):
                continue
            # Parents (e.g. /root, mode 0700 on the host) are recreated traversable; nothing else
            # of them is visible.
            for p in _ancestors(extra):
                if any(p == b or p.startswith(b + "/") for b in binds):
                    continue
                cmd += ["--perms", "0755", "--dir", p]
            cmd += ["--ro-bind", extra, extra]
            binds.append(extra)
        return cmd + [py, "-I", "-S", "-B", "-c", src, json.dumps(cfg)]

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
        :func:`encode`); ``outputs`` holds one encoded return value (or ``["raise", type, msg]``)
        per input; very large outputs come back as digests (see :func:`encode_output`). Inputs reach
        the child; nothing else of the caller's does. ``timeout_s``/``memory_mb`` override the
        sandbox's limits for this run.
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


# ======================================================================================
# Everything below runs inside the sandbox (the zygote and its children), never in the harness
# process except for encode/decode, which the harness uses to send inputs.
# ======================================================================================

_MAX_DEPTH = 200


def encode(x: Any, _depth: int = 0) -> Any:
    """Tagged, type-exact JSON encoding of a value: tuple vs list, int vs bool vs float all kept.

    Only exact built-in types (and collections' Counter, defaultdict, OrderedDict, deque) are
    encoded; anything else (subclasses included, so an ``int`` subclass with a lying ``__eq__``
    cannot pass for an int) becomes ``["other", typename]``.
    """
    if _depth > _MAX_DEPTH:
        return ["other", "too deep"]
    t = type(x)
    if x is None:
        return ["none"]
    if t is bool:
        return ["bool", x]
    if t is int:
        return ["int", hex(x)]  # hex: no str-conversion digit limit, exact
    if t is float:
        return ["float", x.hex()]
    if t is complex:
        return ["complex", x.real.hex(), x.imag.hex()]
    if t is str:
        return ["str", x]
    if t is bytes:
        return ["bytes", x.hex()]
    if t is list or t is tuple or t is set or t is frozenset:
        return [t.__name__, [encode(v, _depth + 1) for v in x]]
    if t is dict or t is Counter or t is defaultdict or t is OrderedDict:
        # Dict-likes from collections keep their own tag (a Counter is not a dict here); an
        # OrderedDict compares in order, the others as mappings. defaultdict's factory is dropped.
        return [t.__name__, [[encode(k, _depth + 1), encode(v, _depth + 1)] for k, v in x.items()]]
    if t is deque:
        return ["deque", [encode(v, _depth + 1) for v in x]]
    if t is re.Match:
        # A match is its subject, span and groups (the pattern that found it may differ).
        return ["Match", encode((x.string, x.span(), x.groups()), _depth + 1)]
    try:
        name = str(t.__qualname__)[:100]
    except Exception:  # noqa: BLE001 - hostile types may raise anything
        name = "?"
    return ["other", name]


DIGEST_OVER = 4096
"""Outputs costlier than this (a unit per node, per 64 characters, per 512 bits) come back as a
digest (see :func:`encode_output`)."""


def _nodes_over(x: Any, limit: int) -> bool:
    """Whether ``x`` costs more than ``limit`` units (walks at most ``limit`` nodes)."""
    todo, seen = [x], 0
    while todo:
        v = todo.pop()
        seen += 1
        t = type(v)
        if t is str or t is bytes:
            seen += len(v) >> 6
        elif t is int:
            seen += v.bit_length() >> 9
        if seen > limit:
            return True
        if t is list or t is tuple or t is set or t is frozenset or t is deque:
            todo.extend(v)
        elif t is dict or t is Counter or t is defaultdict or t is OrderedDict:
            todo.extend(v.keys())
            todo.extend(v.values())
    return False


_SCALARS = frozenset({int, float, bool, type(None), str, bytes, complex})


def _repr_into(x: Any, h: Any) -> bool:
    """Hash a sequence of exact scalars by its repr, which is exact and type-faithful for them
    (``1``, ``1.0``, ``True``, ``'1'`` all differ) and runs at C speed; False where repr cannot
    (ints beyond the str-conversion digit limit)."""
    try:
        text = repr(x)
    except ValueError:
        return False
    h.update(b"r:" + text.encode("utf-8", "surrogatepass"))
    return True


def _hash_into(x: Any, h: Any, depth: int = 0) -> None:
    """Feed a type-exact, order-canonical serialisation of ``x`` to hash ``h`` without building it."""
    import hashlib

    if depth > _MAX_DEPTH:
        raise ValueError("too deep")
    t = type(x)
    if x is None:
        h.update(b"N;")
    elif t is bool:
        h.update(b"B1;" if x else b"B0;")
    elif t is int:
        h.update(b"I" + hex(x).encode() + b";")
    elif t is float:
        h.update(b"F" + x.hex().encode() + b";")
    elif t is complex:
        h.update(b"C" + x.real.hex().encode() + b"," + x.imag.hex().encode() + b";")
    elif t is str:
        b = x.encode("utf-8", "surrogatepass")
        h.update(b"S%d:" % len(b) + b)
    elif t is bytes:
        h.update(b"Y%d:" % len(x) + x)
    elif t is re.Match:
        h.update(b"M:")
        _hash_into((x.string, x.span(), x.groups()), h, depth + 1)
    elif t is OrderedDict:
        h.update(b"O%d:" % len(x))
        for item in x.items():
            _hash_into(item, h, depth + 1)
    elif t is list or t is tuple or t is deque:
        h.update({list: b"L%d:", tuple: b"T%d:", deque: b"Q%d:"}[t] % len(x))
        kinds = set(map(type, x))
        # Homogeneous sequences of scalars take a C-speed path (a million floats in HumanEval+);
        # which path runs depends only on the value, so equal values still hash equal.
        if kinds == {float}:
            from array import array

            h.update(b"f:" + array("d", x).tobytes())
        elif kinds <= _SCALARS and _repr_into(x, h):
            pass
        else:
            for v in x:
                _hash_into(v, h, depth + 1)
    elif t is set or t is frozenset or t is dict or t is Counter or t is defaultdict:
        parts = []
        for item in x.items() if t is dict else x:
            sub = hashlib.sha256()
            _hash_into(item, sub, depth + 1)  # a dict item hashes as the (key, value) tuple
            parts.append(sub.digest())
        tags = {set: b"E%d:", frozenset: b"Z%d:", dict: b"D%d:", Counter: b"C%d:", defaultdict: b"V%d:"}
        h.update(tags[t] % len(x) + b"".join(sorted(parts)))
    else:
        raise ValueError(t.__qualname__)


def encode_output(x: Any) -> Any:
    """:func:`encode` for values up to DIGEST_OVER nodes; bigger ones become ``["digest", sha256]``
    of a type-exact, order-canonical serialisation, computed without materialising an encoding
    (HumanEval+ has outputs of a million elements). Digests compare by exact equality, so the
    float tolerance applies only to outputs below the threshold."""
    if not _nodes_over(x, DIGEST_OVER):
        return encode(x)
    import hashlib

    h = hashlib.sha256()
    try:
        _hash_into(x, h)
    except ValueError as e:
        return ["other", f"large value containing {e}"]
    except RecursionError:
        return ["other", "too deep"]
    return ["digest", h.hexdigest()]


def decode(e: Any) -> Any:
    """Inverse of :func:`encode` for the encodable types."""
    tag = e[0]
    if tag == "none":
        return None
    if tag == "bool":
        return bool(e[1])
    if tag == "int":
        return int(e[1], 16)
    if tag == "float":
        return float.fromhex(e[1])
    if tag == "complex":
        return complex(float.fromhex(e[1]), float.fromhex(e[2]))
    if tag == "str":
        return str(e[1])
    if tag == "bytes":
        return bytes.fromhex(e[1])
    if tag == "list":
        return [decode(v) for v in e[1]]
    if tag == "tuple":
        return tuple(decode(v) for v in e[1])
    if tag == "set":
        return {decode(v) for v in e[1]}
    if tag == "frozenset":
        return frozenset(decode(v) for v in e[1])
    if tag == "dict":
        return {decode(k): decode(v) for k, v in e[1]}
    if tag in ("Counter", "OrderedDict"):
        return (Counter if tag == "Counter" else OrderedDict)((decode(k), decode(v)) for k, v in e[1])
    if tag == "defaultdict":
        return defaultdict(None, ((decode(k), decode(v)) for k, v in e[1]))
    if tag == "deque":
        return deque(decode(v) for v in e[1])
    if tag == "Match":
        return ("Match", *decode(e[1]))  # a stand-in: matches cannot be rebuilt
    raise ValueError(f"cannot decode value tagged {tag!r}")


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
                args = decode(enc)
                try:
                    outs.append(encode_output(fn(*args)))
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


_RESULT_FD = 3
_RESULT_CAP = 256 << 20


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


def _serve(cfg: dict[str, Any]) -> None:
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


if __name__ == "__main__":
    _serve(json.loads(sys.argv[1]))


__all__ = [
    "Isolation",
    "Limits",
    "RunResult",
    "Sandbox",
    "available",
    "decode",
    "encode",
    "resolve_isolation",
]
