"""Options generated from a config: ``eval run`` takes every RunConfig field, documented by its docstring."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import click
import pytest
from click.testing import CliRunner

from smallcode.cli.eval import run as eval_run
from smallcode.cli.options import config_options, join_list, split_list
from smallcode.config import Config, ConfigError
from smallcode.eval.runner import RunConfig


def _options_by_field(command: click.Command) -> dict[str, click.Option]:
    return {p.name: p for p in command.params if isinstance(p, click.Option) and p.name is not None}


def test_every_run_config_field_is_an_eval_run_option_documented_by_its_docstring() -> None:
    options, docs = _options_by_field(eval_run), RunConfig.field_docs()
    for f in dataclasses.fields(RunConfig):
        assert f.name in options, f"RunConfig.{f.name} has no option on eval run"
        assert docs[f.name] and options[f.name].help == docs[f.name]
    text = CliRunner().invoke(eval_run, ["--help"], terminal_width=10_000).output
    for f in dataclasses.fields(RunConfig):
        flag = "--" + f.name.replace("_", "-")
        assert flag in text and docs[f.name] in " ".join(text.split()), f.name
    # options that are not RunConfig fields stay the command's own
    assert {"model", "endpoint", "samples_file", "out", "repo_file"} <= set(options)


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> dict:
    """``eval run`` with the runner stubbed: what config reaches ``evaluate``."""
    import smallcode.eval.runner as runner

    seen: dict = {}

    def load_tasks(suites: list[str], data_dir: str | None, limit: int | None, repo_file: str | None) -> list:
        seen["load_tasks"] = (suites, data_dir, limit)
        return []

    def evaluate(tasks: list, source: object, cfg: RunConfig, out: Path, name: str) -> dict:
        seen["cfg"] = cfg
        out.mkdir(parents=True, exist_ok=True)
        (out / "report.md").write_text("report\n")
        return {}

    monkeypatch.setattr(runner, "load_tasks", load_tasks)
    monkeypatch.setattr(runner, "evaluate", evaluate)
    return seen


def test_eval_run_builds_its_config_from_the_options(tmp_path: Path, captured: dict) -> None:
    base = ["--endpoint", "http://127.0.0.1:9/v1", "--out", str(tmp_path / "run")]
    result = CliRunner().invoke(eval_run, base)
    assert result.exit_code == 0, result.output
    assert captured["cfg"] == RunConfig()  # no options: the config's own defaults, the stop sequences included

    argv = [*base, "--suites", "humaneval,mbpp", "--suites", "repo", "--n", "4", "--k", "1, 2", "--mode", "compat",
            "--timeout", "5", "--no-security", "--limit", "2", "--stop", r"\nclass,\n\,x", "--isolation", "rlimits",
            "--memory-mb", "512", "--data-dir", str(tmp_path)]
    result = CliRunner().invoke(eval_run, argv)
    assert result.exit_code == 0, result.output
    assert captured["cfg"] == RunConfig(suites=["humaneval", "mbpp", "repo"], n=4, k=[1, 2], mode="compat",
                                        timeout_s=5.0, security_scan=False, limit=2, stop=["\nclass", "\n,x"],
                                        isolation="rlimits", memory_mb=512, data_dir=str(tmp_path))
    assert captured["load_tasks"] == (["humaneval", "mbpp", "repo"], str(tmp_path), 2)


@pytest.mark.parametrize(("args", "words"), [
    (["--mode", "lenient"], ["--mode", "lenient"]),
    (["--n", "three"], ["--n", "three"]),
    (["--k", "1,x"], ["--k", "x"]),
    (["--n", "0"], ["RunConfig", "n"]),  # click takes it; the config refuses it
    (["--data-dir", "/does/not/exist"], ["--data-dir"]),
])
def test_eval_run_refuses_bad_values_naming_the_option_or_field(tmp_path: Path, captured: dict, args: list[str],
                                                                words: list[str]) -> None:
    result = CliRunner().invoke(eval_run, ["--endpoint", "http://127.0.0.1:9/v1", "--out", str(tmp_path), *args])
    assert result.exit_code == 2 and "cfg" not in captured
    assert all(w in result.output for w in words), result.output


@pytest.mark.parametrize("items", [["a"], ["\nclass", "\ndef"], ["x,y", "back\\slash", "tab\t"], []])
def test_comma_lists_round_trip(items: list[str]) -> None:
    assert split_list(join_list(items)) == items


def test_split_list_strips_blanks_but_not_escapes() -> None:
    assert split_list(" a , ,b ") == ["a", "b"]
    assert split_list(r"\n, \t ") == ["\n", "\t"]
    assert split_list(r"a\,b,c\\") == ["a,b", "c\\"]
    assert split_list(r"\q") == [r"\q"]  # an unknown escape stays as written


@dataclass
class Small(Config):
    name: str
    """Required: no default."""
    level: Literal["low", "high"] = "low"
    """A choice."""
    fast: bool = False
    """A flag pair."""
    tags: list[str] | None = None
    """An optional list."""
    hidden: int = 7
    """Excluded from the options."""
    extra: dict[str, int] = field(default_factory=dict)
    """No option form: excluded too."""


def test_generated_options_for_a_small_config() -> None:
    seen: list[Small] = []

    @click.command()
    @click.option("--out")
    @config_options(Small, exclude=["hidden", "extra"], aliases={"fast": ["-f"]})
    def cmd(cfg: Small, out: str | None) -> None:
        seen.append(cfg)

    runner = CliRunner()
    assert runner.invoke(cmd, ["--name", "n"]).exit_code == 0 and seen[-1] == Small("n")
    assert runner.invoke(cmd, ["--name", "n", "-f", "--tags", "a,b", "--level", "high"]).exit_code == 0
    assert seen[-1] == Small("n", "high", True, ["a", "b"])
    missing = runner.invoke(cmd, [])
    assert missing.exit_code == 2 and "--name" in missing.output
    assert "--hidden" not in runner.invoke(cmd, ["--help"]).output

    with pytest.raises(TypeError, match="no option form"):
        config_options(Small, exclude=["hidden"])(lambda cfg: None)
    with pytest.raises(TypeError, match="no such field"):
        config_options(Small, aliases={"nmae": ["-n"]})


def test_a_config_error_is_a_usage_error() -> None:
    @dataclass
    class Bounded(Config):
        count: int = 1
        """At least one."""

        def __post_init__(self) -> None:
            if self.count < 1:
                raise ConfigError(f"Bounded.count must be >= 1, got {self.count}")

    @click.command()
    @config_options(Bounded)
    def cmd(cfg: Bounded) -> None:
        pass

    result = CliRunner().invoke(cmd, ["--count", "0"])
    assert result.exit_code == 2 and "Bounded.count must be >= 1" in result.output
