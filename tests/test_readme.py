"""The README's examples run as written from a fresh clone after ``make run``.

Every ``smallcode ...`` line of its shell blocks (and every ``$ smallcode ...`` line of its text
blocks) is parsed by click as the command line would be, nothing run: the verb exists, the options
exist and take the values given, the required ones are there. Each path the line reads must then
exist: in the repository, among what ``make run`` leaves (listed below from the recipe it runs), or
as the output of an earlier line, which the README says it reads. The lines are checked in a copy
of the clone's layout (links to its files) with stand-ins for those outputs, so click's own checks
of existing paths run too.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import click
import pytest
from click.core import ParameterSource

from smallcode.cli.main import cli
from smallcode.train.recipe import RecipeConfig

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
MAKE_RUN_RECIPE = "configs/nano/recipe.yaml"
"""What ``make run`` runs (the Makefile's ``run`` target: ``smallcode recipe`` of this file)."""

OUTPUT_PARAMS = {"out", "out_dir", "trajectory"}
"""Parameters that name what a command writes (never read, so they need not exist)."""


def make_run_outputs() -> list[Path]:
    """What ``make run`` leaves, relative to the clone: the recipe's tokenizer and shards, every stage's
    model (a training stage's ``final/``, a pruned or upcycled stage's directory itself: as
    ``smallcode.train.recipe.stage_final`` finds them) and the pipeline's evaluation and report."""
    recipe = RecipeConfig.load(REPO / MAKE_RUN_RECIPE)
    out = Path(recipe.out)
    made = [out / "tokenizer", out / "shards", out / "eval"]
    made += [out / s.name / "final" if s.config is not None else out / s.name for s in recipe.stages]
    return made


def example_lines(text: str) -> list[str]:
    """The ``smallcode`` command lines of the README's bash and text blocks, continuations joined."""
    lines = []
    for lang, body in re.findall(r"^```(bash|text)\n(.*?)^```", text, re.S | re.M):
        for line in body.replace("\\\n", " ").splitlines():
            line = line.strip()
            if lang == "text":
                if not line.startswith("$ smallcode "):
                    continue
                line = line[2:]
            if line.startswith("smallcode "):
                lines.append(line)
    return lines


def parse(argv: list[str]) -> tuple[click.Command, click.Context]:
    """The command ``argv`` (after ``smallcode``) names and its parsed context; click's usage errors raise."""
    command: click.Command = cli
    words = list(argv)
    names = ["smallcode"]
    while isinstance(command, click.Group):
        assert words, f"{' '.join(names)}: no subcommand"
        sub = command.get_command(click.Context(command), words[0])
        assert sub is not None, f"{' '.join(names)} has no command {words[0]!r}"
        names.append(words.pop(0))
        command = sub
    return command, command.make_context(" ".join(names), words)


def given_paths(command: click.Command, ctx: click.Context) -> tuple[list[str], list[str]]:
    """(read, written): the path values the command line gave, split by what the parameter does."""
    read: list[str] = []
    written: list[str] = []
    for param in command.params:
        if param.name is None or ctx.get_parameter_source(param.name) != ParameterSource.COMMANDLINE:
            continue
        value: Any = ctx.params[param.name]
        values = list(value) if isinstance(value, list | tuple) else [value]
        if param.name == "test_command":  # the test file it runs, in the repository it runs in
            read.append(str(Path(ctx.params["repo"]) / shlex.split(value)[-1]))
            continue
        paths = [str(v) for v in values if isinstance(param.type, click.Path) or
                 (isinstance(v, str) and "/" in v and "://" not in v and " " not in v)]
        (written if param.name in OUTPUT_PARAMS else read).extend(paths)
    return read, written


@pytest.fixture
def clone_after_make_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory laid out as the clone after ``make run``: links to the repository's files and
    empty stand-ins for what ``make run`` writes; the current directory while the test runs."""
    for entry in REPO.iterdir():
        if entry.name not in ("runs", ".git"):
            (tmp_path / entry.name).symlink_to(entry)
    for path in make_run_outputs():
        (tmp_path / path).mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_the_readme_names_the_outputs_of_make_run_and_the_shipped_examples() -> None:
    text = README.read_text()
    for needed in ("runs/nano/tokenizer", "runs/nano/shards", "runs/nano/finetune/final", "examples/"):
        assert needed in text


def test_every_example_parses_and_reads_only_what_exists(clone_after_make_run: Path) -> None:
    lines = example_lines(README.read_text())
    assert len(lines) >= 20  # the block of one example per command was found
    made: set[str] = set()
    for line in lines:
        argv = shlex.split(line, comments=True)[1:]
        try:
            command, ctx = parse(argv)
        except click.UsageError as e:
            pytest.fail(f"README: `{line}` does not parse: {e.format_message()}")
        read, written = given_paths(command, ctx)
        missing = [p for p in read if not Path(p).exists() and p.rstrip("/") not in made]
        assert not missing, f"README: `{line}` reads {missing}, which neither the clone nor make run nor an " \
                            "earlier example provides"
        for path in written:  # what later lines may read
            made.add(path.rstrip("/"))
            target = clone_after_make_run / path
            if not target.exists() and not target.suffix:
                target.mkdir(parents=True)
            elif not target.exists():  # a file: an empty stand-in, for click's own existence check
                target.parent.mkdir(parents=True, exist_ok=True)
                target.touch()


def test_the_check_catches_a_path_only_an_unmentioned_step_makes(clone_after_make_run: Path) -> None:
    """The issue's examples: `runs/tok` and `runs/shards` exist only after lines the README did not run."""
    command, ctx = parse(shlex.split("tokenizer stats --tokenizer runs/tok --files src/"))
    read, _ = given_paths(command, ctx)
    assert [p for p in read if not Path(p).exists()] == ["runs/tok"]
    with pytest.raises(click.UsageError):
        parse(shlex.split("agent fix --repo demo --test x"))  # click checks an existing --repo itself
