"""One base for the errors a user can cause: the CLI prints them as one line, and a bug keeps its traceback.

Also walks every ``smallcode`` module and lists the exception classes that do not derive
``smallcode.errors.UserError``, against a short allow-list of internal ones.
"""

from __future__ import annotations

import importlib
import inspect
import os
import pkgutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

import smallcode
from smallcode.cli import main as cli_main_module
from smallcode.cli.main import main
from smallcode.errors import UserError

SRC = Path(smallcode.__file__).resolve().parents[1]

# Exceptions that never reach a user as a message of their own: each is turned into something else
# (an HTTP answer, a JSON-RPC error, a retry) by the module that raises it.
INTERNAL = {
    "smallcode.serve.service.APIError",  # the HTTP error body of a request; serve answers it, never raises it out
    "smallcode.serve.handles.ClientGone",  # a streaming client hung up: stops the stream
    "smallcode.lsp.server.RequestFailed",  # a JSON-RPC error answer sent to the editor
    "smallcode.client.http._Missing",  # a server without /infill: the client falls back to /v1/completions
    "smallcode.client.http._Retry",  # a transient HTTP failure: retried, then a ClientError
    "smallcode.agent.actions.ActionError",  # a malformed model reply: sent back to the model as its error
    "smallcode.eval.expected.ReferenceFailure",  # a reference solution that fails: a bug in the packaged data
    "smallcode.tasks.values.CodecError",  # a value the sandbox cannot carry: the sample's verdict, not the user's
}


def _one_line_error(err: str) -> str:
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_a_user_error_is_one_line_and_exit_1_from_the_installed_command(tmp_path: Path) -> None:
    path = [str(SRC), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
    proc = subprocess.run([sys.executable, "-m", "smallcode.cli.main", "upcycle", str(tmp_path / "missing"),
                           "--experts", "2", "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 1 and proc.stdout == ""
    assert "missing" in _one_line_error(proc.stderr) and "does not exist" in proc.stderr


@pytest.mark.parametrize("argv", [
    ["params", "nano", "--set", "n_heads=7"],  # a value the config refuses
    ["params", "nano", "--set", "n_heads"],  # not key=value
    ["export", "hf", "{tmp}/missing", "{tmp}/out"],  # no checkpoint there
])
def test_user_errors_print_one_line_and_exit_1(argv: list[str], tmp_path: Path, capsys) -> None:
    assert main([a.format(tmp=tmp_path) for a in argv]) == 1
    captured = capsys.readouterr()
    _one_line_error(captured.err)


def test_a_bad_set_on_a_stage_names_the_field_and_what_is_allowed(tmp_path: Path, capsys) -> None:
    stage = tmp_path / "stage.yaml"
    stage.write_text("model: tiny\nmodel_overrides: {d_ff: 512}\n")
    assert main(["train", str(stage), "--out", str(tmp_path / "run"), "--set", "model_overrides.nope=1"]) == 1
    err = _one_line_error(capsys.readouterr().err)
    assert "unknown field 'nope'" in err and "'d_model'" in err
    assert not (tmp_path / "run").exists()


def test_a_click_exception_from_a_verb_is_spelled_like_every_other_error(monkeypatch, capsys) -> None:
    monkeypatch.setitem(cli_main_module.VERBS, "ghost", "smallcode.cli.ghost_that_does_not_exist:ghost")
    assert main(["ghost"]) == 1
    assert "'ghost' is not available in this build" in _one_line_error(capsys.readouterr().err)


def test_usage_errors_keep_clicks_form_and_exit_2(capsys) -> None:
    assert main(["params"]) == 2  # PRESET missing
    err = capsys.readouterr().err
    assert err.startswith("Usage: smallcode params") and "Missing argument 'PRESET'" in err


@pytest.mark.parametrize("bug", [RuntimeError("boom"), ValueError("boom"), KeyError("boom")])
def test_a_bug_keeps_its_traceback(bug: Exception, monkeypatch, capsys) -> None:
    from smallcode.model.config import ModelConfig

    def broken(*args: object, **kwargs: object) -> None:
        raise bug

    monkeypatch.setattr(ModelConfig, "preset", broken)
    with pytest.raises(type(bug), match="boom"):
        main(["params", "nano"])
    assert "error:" not in capsys.readouterr().err


def _modules(top: str) -> list[ModuleType]:
    """``top`` and every module under it, leaving out those whose optional dependencies are missing."""
    out: list[ModuleType] = []
    names = [top]
    package = importlib.import_module(top)
    if hasattr(package, "__path__"):
        names += [m.name for m in pkgutil.walk_packages(package.__path__, f"{top}.")]
    for name in names:
        try:
            out.append(importlib.import_module(name))
        except ModuleNotFoundError as e:
            if e.name and e.name.split(".")[0] == "smallcode":
                raise
    return out


def _exceptions(module: ModuleType) -> list[type[BaseException]]:
    return [obj for obj in vars(module).values()
            if inspect.isclass(obj) and issubclass(obj, BaseException) and obj.__module__ == module.__name__]


@pytest.mark.parametrize("top", sorted(f"smallcode.{m.name}" for m in pkgutil.iter_modules(smallcode.__path__)))
def test_every_exception_class_is_a_user_error_or_listed_as_internal(top: str) -> None:
    outside = [f"{cls.__module__}.{cls.__qualname__}" for module in _modules(top) for cls in _exceptions(module)
               if not issubclass(cls, UserError)]
    missing = sorted(set(outside) - INTERNAL)
    assert not missing, f"derive these from smallcode.errors.UserError (or list them in INTERNAL): {missing}"


def test_the_internal_list_names_existing_classes_that_are_not_user_errors() -> None:
    for qualified in sorted(INTERNAL):
        module, name = qualified.rsplit(".", 1)
        try:
            cls = getattr(importlib.import_module(module), name)
        except ModuleNotFoundError as e:
            if e.name and e.name.split(".")[0] == "smallcode":
                raise
            continue  # an optional dependency is missing: nothing to check here
        assert issubclass(cls, BaseException) and not issubclass(cls, UserError), qualified
