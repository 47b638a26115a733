"""The isolation layers: the command line that puts a program inside one, and whether it works here.

Layers (``Isolation``), the best available chosen by ``auto``:

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

:func:`wrap` is the one builder of these command lines; :func:`available` probes a layer by running
the interpreter through that same command line. What runs inside, and the limits it sets, are the
payload's business (``payload.py``); starting and talking to it is the harness's (``harness.py``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from typing import Literal

Isolation = Literal["auto", "bwrap", "unshare", "rlimits"]

_SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
_TMP_BYTES = 256 << 20
"""Size of the tmpfs that holds the working directories under bwrap."""
SANDBOX_WORKDIR = "/tmp"
"""Where working directories live inside a bwrap sandbox (its private tmpfs)."""


def interpreter() -> str:
    """The real path of this interpreter: the one that runs inside the sandbox."""
    return os.path.realpath(sys.executable)


def _ancestors(path: str) -> list[str]:
    parts = path.strip("/").split("/")[:-1]
    return ["/" + "/".join(parts[: i + 1]) for i in range(len(parts))]


def environment_paths() -> tuple[str, ...]:
    """Real paths of the running environment's own package directories (a virtual environment's
    site-packages; nothing when the interpreter runs without one), the read-only binds a sandboxed
    program needs to import what is installed here, e.g. a repository's test dependencies."""
    import site

    base = os.path.realpath(sys.base_prefix)
    found: list[str] = []
    for d in site.getsitepackages():
        real = os.path.realpath(d)
        if os.path.isdir(real) and not (real == base or real.startswith(base + "/")) and real not in found:
            found.append(real)
    return tuple(found)


def venv_root() -> str | None:
    """The real path of the virtual environment this interpreter runs in, or None outside one."""
    if sys.prefix == sys.base_prefix:
        return None
    return os.path.realpath(sys.prefix)


def _bind(cmd: list[str], binds: list[str], path: str, option: str = "--ro-bind") -> None:
    """Add a bind of the host ``path`` at the same path; parents (e.g. /root, mode 0700 on the host)
    are recreated traversable, and nothing else of them is visible."""
    if option == "--ro-bind" and any(path == b or path.startswith(b + "/") for b in binds):
        return
    for p in _ancestors(path):
        if any(p == b or p.startswith(b + "/") for b in binds):
            continue
        cmd += ["--perms", "0755", "--dir", p]
    cmd += [option, path, path]
    binds.append(path)


def _bwrap(argv: list[str], ro_binds: tuple[str, ...] = (), rw_binds: tuple[str, ...] = ()) -> list[str]:
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
        str(_TMP_BYTES),
        "--tmpfs",
        SANDBOX_WORKDIR,
        "--chdir",
        SANDBOX_WORKDIR,
        "--hostname",
        "sandbox",
        "--clearenv",
    ]
    if os.geteuid() == 0:
        # The zygote needs these to drop its children to another uid and to clean up after them.
        for cap in ("CAP_SETUID", "CAP_SETGID", "CAP_KILL", "CAP_CHOWN", "CAP_FOWNER", "CAP_DAC_OVERRIDE"):
            cmd += ["--cap-add", cap]
    else:
        cmd += ["--unshare-user"]
    binds: list[str] = []
    for d in _SYSTEM_DIRS:
        if os.path.islink(d):
            cmd += ["--symlink", os.readlink(d), d]
        elif os.path.isdir(d):
            cmd += ["--ro-bind", d, d]
            binds.append(d)
    for extra in (os.path.realpath(sys.base_prefix), os.path.dirname(interpreter())):
        _bind(cmd, binds, extra)
    # Extra paths a caller asks for (a repository to test, the environment's packages): read-only,
    # then the writable ones (a copy the program may change), each at its host path.
    for extra in ro_binds:
        _bind(cmd, binds, os.path.realpath(extra))
    for extra in rw_binds:
        _bind(cmd, binds, os.path.realpath(extra), "--bind")
    return cmd + argv


def wrap(isolation: Isolation, argv: list[str], ro_binds: tuple[str, ...] = (),
         rw_binds: tuple[str, ...] = ()) -> list[str]:
    """The command line that runs ``argv`` inside ``isolation`` (a concrete layer, not ``auto``).

    ``ro_binds`` / ``rw_binds``: host paths made visible (read-only / writable) at the same path under
    ``bwrap``; the other layers see the host filesystem anyway (with ordinary permissions)."""
    if isolation == "bwrap":
        return _bwrap(argv, ro_binds, rw_binds)
    if isolation == "unshare":
        return ["unshare", "--net", "--pid", "--fork", "--kill-child", "--mount-proc", *argv]
    if isolation == "rlimits":
        return list(argv)
    raise ValueError(f"unknown isolation {isolation!r}; use auto, bwrap, unshare or rlimits")


def _probe(isolation: Isolation) -> bool:
    tool = {"bwrap": "bwrap", "unshare": "unshare"}[isolation]
    if shutil.which(tool) is None or (isolation == "unshare" and os.geteuid() != 0):
        return False
    try:
        r = subprocess.run(
            wrap(isolation, [interpreter(), "-I", "-S", "-c", "pass"]),
            capture_output=True,
            timeout=10,
            env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
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
        _PROBED[isolation] = _probe(isolation)
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


SHELL_WORKDIR = "/repo"
"""Where :func:`shell_argv` mounts the one writable directory inside the sandbox."""


def shell_argv(
    workdir: str,
    command: str,
    *,
    uid: int | None = None,
    memory_mb: int = 1024,
    processes: int = 64,
    file_size_mb: int = 64,
    open_files: int = 256,
    cpu_s: int = 60,
) -> list[str]:
    """The bwrap command line that runs the shell ``command`` with ``workdir`` (a host directory)
    mounted writable at :data:`SHELL_WORKDIR` and the working directory there.

    Everything :func:`wrap` gives a bwrap program holds (no network, new PID namespace, read-only
    system directories and interpreter, a capped private ``/tmp``; the virtual environment smallcode
    runs in, if any, read-only and first on ``PATH``); ``workdir`` is the only host
    directory that can be written. Limits are set with ``prlimit`` on the shell (inherited by what it
    starts). As root, the shell runs as ``uid`` (required then) with no capabilities, so the process
    limit counts only this sandbox's processes and nothing may change ownership or permissions
    outside ``workdir``; ``workdir`` must be owned by ``uid``. Wall time is the caller's to enforce
    (kill the process group: ``--die-with-parent`` and the PID namespace take everything with it).
    """
    # The interpreter's directory first on PATH: `python` inside is the one running smallcode. In a
    # virtual environment, its bin directory before that (bound read-only), so that `python -m pytest`
    # finds what is installed here, as the repository's own tests need.
    interp_dir = os.path.dirname(interpreter())
    venv = venv_root()
    path = f"{venv}/bin:{interp_dir}" if venv else interp_dir
    env = ["--setenv", "PATH", f"{path}:/usr/local/bin:/usr/bin:/bin", "--setenv", "HOME", SANDBOX_WORKDIR,
           "--setenv", "LANG", "C.UTF-8", "--setenv", "PYTHONDONTWRITEBYTECODE", "1"]
    limits = ["prlimit", f"--as={memory_mb << 20}", f"--nproc={processes}", f"--fsize={file_size_mb << 20}",
              f"--nofile={open_files}", f"--cpu={cpu_s}", "--core=0", "--"]
    drop: list[str] = []
    if os.geteuid() == 0:
        if uid is None:
            raise ValueError("shell_argv as root needs the unprivileged uid to run the command as")
        drop = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--inh-caps=-all",
                "--bounding-set=-all", "--"]
    # /tmp is bwrap's size-capped tmpfs; opened to the unprivileged uid like a host's /tmp.
    options = ["--bind", workdir, SHELL_WORKDIR, "--chdir", SHELL_WORKDIR, "--chmod", "1777", SANDBOX_WORKDIR, *env]
    return _bwrap([*options, *drop, *limits, "/bin/bash", "-c", command], ro_binds=(venv,) if venv else ())


_uid_lock = threading.Lock()
_next_slot = 0


def allocate_uid(base: int) -> int:
    """A uid for one sandbox's children: ``base`` plus a slot of this process (see ``Sandbox``)."""
    global _next_slot
    with _uid_lock:
        # Distinct per sandbox of this process (up to 64 at once) and, very likely, across processes.
        uid = base + (os.getpid() % 4096) * 64 + _next_slot % 64
        _next_slot += 1
        return uid
