"""Errors a user can cause and fix are UserErrors (printed as one line by the CLI) and keep the builtin
base they always had, so existing ``except ValueError`` / ``except RuntimeError`` clauses still catch them."""

from __future__ import annotations

import pytest

from smallcode.agent.workspace import WorkspaceError
from smallcode.corpus import DataError
from smallcode.errors import UserError
from smallcode.eval.heldout import HeldOutError, held_out_set
from smallcode.eval.security import SecurityScanError
from smallcode.fileio import JsonlError
from smallcode.tasks import DataFileError


@pytest.mark.parametrize(("error", "builtin"), [
    (DataError, ValueError), (DataFileError, ValueError), (JsonlError, ValueError), (WorkspaceError, ValueError),
    (HeldOutError, RuntimeError), (SecurityScanError, RuntimeError),
])
def test_user_errors_keep_their_builtin_base(error: type[Exception], builtin: type[Exception]) -> None:
    assert issubclass(error, UserError) and issubclass(error, builtin)


def test_a_missing_held_out_package_is_a_user_error() -> None:
    with pytest.raises(UserError, match="'no_such_package_here' is not installed"):
        held_out_set(["no_such_package_here"])
