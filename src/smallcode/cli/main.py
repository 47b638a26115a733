"""The ``smallcode`` command: a table from verb to the click command that implements it.

Verbs are imported only when invoked, so ``smallcode params`` never pays for importing
transformers or the evaluation harness. An error the user can fix (a ``smallcode.errors.UserError``:
a bad config value, a missing checkpoint, an endpoint that is down; or a missing file) prints one
line, ``error: ...``, and exits 1; any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys

import click

from smallcode.errors import UserError

# verb -> "module:attribute" of a click.Command
VERBS: dict[str, str] = {
    "params": "smallcode.cli.params:params",
    "demo": "smallcode.cli.demo:demo",
    "tokenizer": "smallcode.cli.tokenizer:tokenizer",
    "data": "smallcode.cli.data:data",
    "eval": "smallcode.cli.eval:eval_",
    "generate": "smallcode.cli.generate:generate",
    "complete": "smallcode.cli.generate:complete",
    "teacher-cache": "smallcode.cli.teacher:teacher_cache",
    "train": "smallcode.cli.train:train",
    "recipe": "smallcode.cli.recipe:recipe",
    "estimate": "smallcode.cli.estimate:estimate",
    "upcycle": "smallcode.cli.upcycle:upcycle",
    "export": "smallcode.cli.export:export",
    "import": "smallcode.cli.import_:import_",
    "serve": "smallcode.cli.serve:serve",
    "agent": "smallcode.cli.agent:agent",
    "lsp": "smallcode.cli.lsp:lsp",
    "stats": "smallcode.cli.stats:stats",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        # Verbs whose module is not part of this build are left out of --help.
        return sorted(v for v, t in VERBS.items() if importlib.util.find_spec(t.split(":")[0]) is not None)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = VERBS.get(name)
        if target is None:
            return None
        module, attr = target.split(":")
        try:
            return getattr(importlib.import_module(module), attr)
        except ModuleNotFoundError as e:
            if e.name and e.name.startswith("smallcode"):
                raise click.ClickException(f"'{name}' is not available in this build ({e.name} missing)") from e
            raise click.ClickException(
                f"'{name}' needs the optional package {e.name!r}; install it with pip install 'smallcode[dev]'"
            ) from e


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="smallcode")
def cli() -> None:
    """smallcode: small sparse code models, built and run locally."""


def main(argv: list[str] | None = None) -> int:
    """Run one verb; the exit status: 0, 1 for an error the user can fix, 2 for a usage error, 130 on Ctrl+C.

    A :class:`UserError` (and a missing or forbidden file) is printed as one line, ``error: ...``;
    so is a ``ClickException`` a verb raises. Click's usage errors keep click's own form (the usage,
    then the message). Anything else is a bug and propagates with its traceback.
    """
    try:
        cli.main(args=argv, prog_name="smallcode", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    except click.UsageError as e:
        e.show()
        return e.exit_code
    except click.ClickException as e:
        click.echo(f"error: {e.format_message()}", err=True)
        return e.exit_code
    except (UserError, FileNotFoundError, PermissionError) as e:
        click.echo(f"error: {e}", err=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
