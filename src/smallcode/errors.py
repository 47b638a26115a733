"""The one base class for errors a user can cause and fix.

Every exception whose message tells the user what to change (a bad config value, a missing or
corrupt file, a request the model cannot serve, an endpoint that is down) derives from
:class:`UserError`, usually beside the builtin it always was (``class ConfigError(UserError,
ValueError)``), so existing ``except ValueError`` clauses keep working. The CLI prints a
``UserError`` as one line (``error: ...``, exit 1); anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """An error the user can fix; its message says what is wrong and, where it can, what to do."""
