"""Isolation below every caller that runs untrusted code: the bubblewrap / unshare / rlimits command
lines (``isolation``) that eval's harness and the agent's workspace both build on."""

from smallcode.sandbox.isolation import Isolation, allocate_uid, available, resolve_isolation, shell_argv, wrap

__all__ = ["Isolation", "allocate_uid", "available", "resolve_isolation", "shell_argv", "wrap"]
