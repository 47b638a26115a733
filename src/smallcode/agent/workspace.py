"""The agent's copy of a repository: made, read, written, run in the sandbox, and turned into one diff.

:class:`Workspace` copies a repository's files (for a git work tree: the tracked files and the
untracked ones git does not ignore; otherwise every file but ``.git``) into a fresh temporary
directory and records that state in a private baseline repository kept *beside* the copy, where
nothing the agent runs can reach it. Every command runs under bubblewrap
(:func:`smallcode.sandbox.isolation.shell_argv`): the copy is the only writable host
directory, there is no network, and memory, processes, file sizes, CPU, wall time and output are
capped. As root, commands run as an unprivileged uid of their own that owns the copy.

Reads and writes made for the agent (file views, searches, edits) happen here, on the host, and
stay inside the copy: a path that leaves it (``..``, an absolute path, a symlink out) or that
enters ``.git`` is refused, and protected files (the tests) cannot be edited. What a command does
to protected files is not prevented but seen: :meth:`Workspace.protected_changes` compares them
with their hashes at the start.

The user's repository is read once, when the copy is made, and written only by
:meth:`Workspace.apply_to`, which applies the whole diff or nothing (``git apply --check`` first).
Not here: the loop (``loop.py``), parsing actions (``actions.py``).
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import select
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from smallcode.errors import UserError
from smallcode.fileio import atomic_write_text

# The evaluation sandbox's uid allocator: agent commands get uids no zygote of this process uses.
from smallcode.sandbox.isolation import allocate_uid, available, shell_argv

DEFAULT_PROTECT: tuple[str, ...] = (
    "tests/*", "test/*", "*/tests/*", "*/test/*", "test_*.py", "*/test_*.py", "*_test.py", "conftest.py",
    "*/conftest.py",
)
"""Glob patterns (relative POSIX paths) of the files an agent must not change: the tests."""

CommandStatus = Literal["ok", "failed", "timeout", "output_limit"]

# bwrap's note about the second --chdir that shell_argv adds to the sandbox's own: noise to the agent.
_BWRAP_NOISE = "bwrap: Only the last --chdir option will take effect\n"


class WorkspaceError(UserError, ValueError):
    """A request on the copy that is refused (a path outside it, a protected file); the message says why."""


@dataclass
class ShellLimits:
    """Limits of one command in the sandbox."""

    timeout_s: float = 30.0
    """Wall-clock seconds before the command and everything it started are killed."""
    memory_mb: int = 1024
    """Address space of each process, MiB."""
    processes: int = 64
    """Processes (threads included) the command may have at once."""
    file_size_mb: int = 64
    """Largest file a process may write, MiB."""
    output_bytes: int = 16384
    """Output (stdout and stderr together) kept; a command that prints more is killed."""


@dataclass
class CommandResult:
    """What one sandboxed command did."""

    status: CommandStatus
    """ok: exit code 0; failed: another exit code; timeout; output_limit: killed for printing too much."""
    exit_code: int | None
    output: str
    """The first ``output_bytes`` of stdout and stderr, interleaved."""
    seconds: float

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def describe(self) -> str:
        """A one-line verdict for people and models."""
        if self.status == "timeout":
            return f"killed after the time limit ({self.seconds:.1f}s)"
        if self.status == "output_limit":
            return "killed: it printed more than the output limit"
        return f"exit code {self.exit_code}"


def _repo_files(repo: Path) -> list[str]:
    """Relative paths of the files to copy."""
    inside = subprocess.run(["git", "-C", str(repo), "rev-parse", "--is-inside-work-tree"], capture_output=True,
                            text=True)
    if inside.returncode == 0 and inside.stdout.strip() == "true":
        out = subprocess.run(["git", "-C", str(repo), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                             capture_output=True, check=True)
        names = [n for n in out.stdout.decode("utf-8", "surrogateescape").split("\0") if n]
        return sorted(dict.fromkeys(n for n in names if os.path.lexists(repo / n)))
    files: list[str] = []
    for root, dirs, names in os.walk(repo):
        dirs[:] = [d for d in dirs if d != ".git"]
        files += [os.path.relpath(os.path.join(root, n), repo) for n in names]
    return sorted(files)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class Workspace:
    """A sandboxed copy of ``repo`` (see the module docstring). Use as a context manager or call :meth:`close`."""

    def __init__(self, repo: str | Path, protect: tuple[str, ...] = DEFAULT_PROTECT,
                 limits: ShellLimits | None = None) -> None:
        self.repo = Path(repo).resolve()
        if not self.repo.is_dir():
            raise WorkspaceError(f"{repo}: not a directory")
        if not available("bwrap"):
            raise RuntimeError("the agent runs commands only inside bubblewrap (bwrap), which is missing or "
                               "cannot create namespaces here; `make setup` installs it")
        self.protect = tuple(protect)
        self.limits = limits or ShellLimits()
        self.uid = allocate_uid(63000) if os.geteuid() == 0 else None
        self._tmp = Path(tempfile.mkdtemp(prefix="smallcode-agent-"))
        self.path = self._tmp / "repo"
        self._git_dir = self._tmp / "baseline.git"
        try:
            self.path.mkdir()
            for rel in _repo_files(self.repo):
                src, dst = self.repo / rel, self.path / rel
                dst.parent.mkdir(parents=True, exist_ok=True)
                if src.is_symlink():
                    os.symlink(os.readlink(src), dst)
                elif src.is_file():
                    shutil.copy2(src, dst)
            self._chown(self.path)
            self._git("init", "-q")
            self._git("add", "-A")
            self._git("commit", "-q", "--allow-empty", "-m", "baseline")
            self._protected = self._protected_hashes()
        except BaseException:
            self.close()  # a half-made copy is removed, not left in the temporary directory
            raise

    # ---- paths ----------------------------------------------------------------------------------
    def is_protected(self, rel: str) -> bool:
        return any(fnmatch.fnmatchcase(rel, p) for p in self.protect)

    def resolve(self, rel: str, write: bool = False) -> Path:
        """The host path of ``rel`` inside the copy; :class:`WorkspaceError` for a path that leaves it,
        enters ``.git`` or (when writing) is protected."""
        if not rel or rel.startswith(("/", "~")) or "\0" in rel:
            raise WorkspaceError(f"{rel!r}: give a path relative to the repository root")
        target = (self.path / rel).resolve()
        root = self.path.resolve()
        if target != root and root not in target.parents:
            raise WorkspaceError(f"{rel}: outside the repository")
        inner = target.relative_to(root).as_posix()
        if inner == ".git" or inner.startswith(".git/"):
            raise WorkspaceError(f"{rel}: the .git directory is off limits")
        if write and self.is_protected(inner):
            raise WorkspaceError(f"{rel}: a protected file (tests must not be changed); fix the code instead")
        return target

    def files(self) -> list[str]:
        """The copy's files, relative, ``.git`` left out."""
        out: list[str] = []
        for root, dirs, names in os.walk(self.path):
            dirs[:] = sorted(d for d in dirs if d not in (".git", "__pycache__"))
            out += [os.path.relpath(os.path.join(root, n), self.path) for n in sorted(names)]
        return out

    def read_text(self, rel: str) -> str:
        path = self.resolve(rel)
        if not path.is_file():
            raise WorkspaceError(f"{rel}: no such file")
        return path.read_text(encoding="utf-8", errors="replace")

    def write_text(self, rel: str, text: str) -> None:
        """Replace (or create) ``rel`` in one step, owned by the sandbox's uid."""
        path = self.resolve(rel, write=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, text)
        self._chown(self.path)

    # ---- running ---------------------------------------------------------------------------------
    def run(self, command: str, timeout_s: float | None = None) -> CommandResult:
        """Run the shell ``command`` in the copy, inside the sandbox."""
        lim = self.limits
        timeout = lim.timeout_s if timeout_s is None else max(0.1, min(timeout_s, lim.timeout_s))
        argv = shell_argv(str(self.path), command, uid=self.uid, memory_mb=lim.memory_mb, processes=lim.processes,
                          file_size_mb=lim.file_size_mb, cpu_s=max(1, int(timeout) + 1))
        t0 = time.monotonic()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                start_new_session=True, env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"})
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        out = bytearray()
        status: CommandStatus | None = None
        deadline = t0 + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                status = "timeout"
                break
            if not select.select([fd], [], [], left)[0]:
                continue
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                break
            out += chunk
            if len(out) > lim.output_bytes + len(_BWRAP_NOISE):
                status = "output_limit"
                break
        if status is not None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        code = proc.wait()
        proc.stdout.close()
        text = out.decode("utf-8", "replace").replace(_BWRAP_NOISE, "")[: lim.output_bytes]
        self._chown(self.path)  # a command may leave files the next one must be able to change
        if status is None:
            status = "ok" if code == 0 else "failed"
        return CommandResult(status, None if status in ("timeout", "output_limit") else code, text,
                             time.monotonic() - t0)

    # ---- the result --------------------------------------------------------------------------------
    def diff(self) -> str:
        """Every change made in the copy since it was made, as one git patch (binary-safe)."""
        self._git("add", "-A")
        return self._git("diff", "--cached", "--binary", "--no-color", "--no-ext-diff", "HEAD").stdout

    def protected_changes(self) -> list[str]:
        """Protected files added, removed or changed since the copy was made."""
        now = self._protected_hashes()
        return sorted(k for k in set(now) | set(self._protected) if now.get(k) != self._protected.get(k))

    def apply_to(self, target: str | Path | None = None) -> str:
        """Apply :meth:`diff` to ``target`` (default: the original repository), all of it or nothing;
        returns the diff. Raises :class:`WorkspaceError` when it does not apply cleanly."""
        patch = self.diff()
        dest = Path(target).resolve() if target is not None else self.repo
        if not patch:
            return patch
        # Stop git from finding a repository above ``dest``: paths in the patch are relative to ``dest``.
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "GIT_CEILING_DIRECTORIES": str(dest.parent),
               "HOME": str(self._tmp)}
        for args in (["--check"], []):
            r = subprocess.run(["git", "apply", "--binary", *args, "-"], cwd=dest, input=patch.encode(),
                               capture_output=True, env=env)
            if r.returncode != 0:
                raise WorkspaceError(f"the change does not apply to {dest}: {r.stderr.decode(errors='replace')[:500]}")
        return patch

    def close(self) -> None:
        shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- helpers -----------------------------------------------------------------------------------
    def _git(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self._tmp), "GIT_DIR": str(self._git_dir),
               "GIT_WORK_TREE": str(self.path), "GIT_CONFIG_NOSYSTEM": "1", "GIT_AUTHOR_NAME": "smallcode",
               "GIT_AUTHOR_EMAIL": "agent@localhost", "GIT_COMMITTER_NAME": "smallcode",
               "GIT_COMMITTER_EMAIL": "agent@localhost"}
        # The copy is untrusted after the first command: its own .gitattributes/.gitignore may steer
        # what git shows, but no hook or filter of ours runs, and the baseline lives outside it.
        return subprocess.run(["git", "-c", "core.hooksPath=/dev/null", "-c", "commit.gpgsign=false",
                               "-c", "core.autocrlf=false", *args], cwd=self._tmp, env=env, capture_output=True,
                              text=True, errors="surrogateescape", check=True)

    def _protected_hashes(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for rel in self.files():
            path = self.path / rel
            if self.is_protected(rel) and path.is_file() and not path.is_symlink():
                out[rel] = _sha(path)
            elif self.is_protected(rel):
                out[rel] = "link:" + os.readlink(path) if path.is_symlink() else "other"
        return out

    def _chown(self, top: Path) -> None:
        if self.uid is None:
            return
        for root, dirs, names in os.walk(top):
            for n in (root, *(os.path.join(root, d) for d in dirs), *(os.path.join(root, x) for x in names)):
                try:
                    os.lchown(n, self.uid, self.uid)
                except OSError:
                    pass
