"""The config base: every field checked against its annotation, however the config is made.

(Named ``test_config_base`` because ``tests/model/test_config.py`` already holds the basename.)
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import pytest

from smallcode.config import Config, ConfigError, Partial

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Inner(Config):
    name: str
    """A required field."""
    how: Literal["a", "b"] = "a"
    """A choice."""


@dataclass
class Outer(Config):
    """A config with one field of every shape the base checks."""

    count: int = 1
    """An integer."""
    scale: float = 1.0
    """A float; an int is taken as one."""
    flag: bool = False
    """A bool."""
    style: Literal["x", "y"] = "x"
    """A Literal."""
    maybe_style: Literal["x", "y"] | None = None
    """A Literal or None."""
    inner: Inner | None = None
    """A nested config."""
    inners: list[Inner] = field(default_factory=list)
    """A list of nested configs."""
    ints: list[int] = field(default_factory=lambda: [1])
    """A list of integers."""
    pair: tuple[float, float] = (0.0, 1.0)
    """Exactly two floats."""
    table: dict[str, int] = field(default_factory=dict)
    """A mapping to integers."""
    inner_changes: Annotated[dict[str, Any], Partial(Inner)] = field(default_factory=dict)
    """Some of Inner's fields, to apply later."""
    seen: list[str] = field(default_factory=list)
    """Filled by __post_init__, which runs after the base's checks."""

    def __post_init__(self) -> None:
        if self.count < 0:  # compares without a type check of its own: the base has checked count
            raise ConfigError(f"Outer.count must be >= 0, got {self.count}")


@pytest.mark.parametrize(("data", "words"), [
    ({"style": "z"}, ["Outer.style", "'x', 'y'", "'z'"]),
    ({"maybe_style": "z"}, ["Outer.maybe_style", "'x', 'y'", "'z'"]),
    ({"inner": {"name": "n", "how": "c"}}, ["Outer.inner", "Inner.how", "'a', 'b'", "'c'"]),
    ({"inners": [{"name": "n"}, {"name": "m", "how": "c"}]}, ["Outer.inners[1]", "Inner.how", "'c'"]),
])
def test_literals_are_checked_everywhere_and_the_error_names_class_field_choices_and_value(data, words) -> None:
    for make in (lambda: Outer.from_dict(data), lambda: Outer(**data)):
        with pytest.raises(ConfigError) as e:
            make()
        assert all(w in str(e.value) for w in words), str(e.value)


@pytest.mark.parametrize(("data", "where"), [
    ({"count": "3"}, "Outer.count"),
    ({"count": True}, "Outer.count"),
    ({"count": 2.0}, "Outer.count"),
    ({"scale": "1e3"}, "Outer.scale"),
    ({"flag": 1}, "Outer.flag"),
    ({"ints": [1, "2"]}, "Outer.ints[1]"),
    ({"ints": 3}, "Outer.ints"),
    ({"pair": [1.0]}, "Outer.pair"),
    ({"pair": [1.0, "b"]}, "Outer.pair[1]"),
    ({"table": {"a": 1.5}}, "Outer.table.a"),
    ({"inner": "n"}, "Outer.inner"),
    ({"style": None}, "Outer.style"),
])
def test_wrong_types_name_the_field(data: dict, where: str) -> None:
    with pytest.raises(ConfigError, match=where.replace("[", r"\[").replace("]", r"\]")):
        Outer.from_dict(data)


def test_values_are_converted_only_where_unambiguous() -> None:
    c = Outer.from_dict({"scale": 2, "pair": [0, 1], "inner": {"name": "n"}, "inners": [{"name": "m"}],
                         "maybe_style": None})
    assert c.scale == 2.0 and type(c.scale) is float
    assert c.pair == (0.0, 1.0) and type(c.pair) is tuple
    assert c.inner == Inner("n") and c.inners == [Inner("m")]
    assert Outer(inner={"name": "n"}).inner == Inner("n")  # the constructor builds nested configs too
    assert Outer.from_dict(c.to_dict()) == c


def test_unknown_and_missing_fields_name_the_class() -> None:
    with pytest.raises(ConfigError, match=r"Outer.inner: Inner: missing required field\(s\) \['name'\]"):
        Outer.from_dict({"inner": {"how": "a"}})
    with pytest.raises(ConfigError, match=r"Outer.inner: Inner: unknown field\(s\) \['nmae'\]"):
        Outer.from_dict({"inner": {"nmae": "n"}})


def test_subclass_checks_run_after_the_base_and_cannot_skip_it() -> None:
    with pytest.raises(ConfigError, match="must be >= 0"):
        Outer(count=-1)
    with pytest.raises(ConfigError, match="Outer.count must be int"):
        Outer(count="-1")  # a str: the base refuses it before the subclass compares it with 0

    @dataclass
    class Child(Outer):
        extra: Literal["p", "q"] = "p"
        """A child's own Literal."""

        def __post_init__(self) -> None:  # does not call super(): the base's checks run regardless
            pass

    with pytest.raises(ConfigError, match="Child.extra"):
        Child(extra="r")
    with pytest.raises(ConfigError, match="Child.style"):
        Child(style="z")


def test_overrides_are_checked_like_everything_else() -> None:
    c = Outer()
    assert c.with_overrides(["count=4"]).count == 4
    assert Outer(inner=Inner("n")).with_overrides({"inner.how": "b"}).inner == Inner("n", "b")
    with pytest.raises(ConfigError, match="Outer.inner: Inner.how"):
        Outer(inner=Inner("n")).with_overrides({"inner.how": "c"})
    with pytest.raises(ConfigError, match="Outer.count"):
        c.with_overrides(["count=four"])
    with pytest.raises(ConfigError, match="Outer.style"):
        c.replace(style="w")


def test_any_field_of_a_partial_mapping_can_be_set_by_its_dotted_name() -> None:
    # the mapping names only some fields; the others are settable all the same, and checked
    c = Outer(inner_changes={"how": "b"})
    assert c.with_overrides(["inner_changes.name=x"]).inner_changes == {"how": "b", "name": "x"}
    assert Outer().with_overrides({"inner_changes.how": "a"}).inner_changes == {"how": "a"}
    with pytest.raises(ConfigError, match=r"unknown field 'nope'; allowed: \['how', 'name'\]"):
        c.with_overrides(["inner_changes.nope=1"])
    with pytest.raises(ConfigError, match="Outer.inner_changes.how must be one of 'a', 'b'"):
        c.with_overrides(["inner_changes.how=c"])


def test_a_model_field_can_be_set_over_a_stage_that_names_another(tmp_path: Path) -> None:
    from smallcode.model.config import ModelConfig
    from smallcode.train.config import TrainConfig

    stage = tmp_path / "stage.yaml"
    stage.write_text("model: tiny\nmodel_overrides: {d_ff: 512}\n")
    cfg = TrainConfig.load(stage).with_overrides(["model_overrides.d_model=128"])
    assert cfg.model_overrides == {"d_ff": 512, "d_model": 128}
    with pytest.raises(ConfigError, match="unknown field 'nope'; allowed: .*'d_model'") as refused:
        TrainConfig.load(stage).with_overrides(["model_overrides.nope=1"])
    assert all(repr(f) in str(refused.value) for f in ModelConfig.__dataclass_fields__)
    with pytest.raises(ConfigError, match="TrainConfig.model_overrides.d_model must be int"):
        TrainConfig.load(stage).with_overrides(["model_overrides.d_model=1.5"])


def test_check_partial_checks_names_and_types_without_building() -> None:
    assert Outer.check_partial({"scale": 3}, "where") == {"scale": 3.0}
    with pytest.raises(ConfigError, match=r"where: unknown Outer field\(s\) \['scael'\]"):
        Outer.check_partial({"scael": 3}, "where")
    with pytest.raises(ConfigError, match="where.style"):
        Outer.check_partial({"style": "z"}, "where")


def test_a_partial_mapping_is_checked_against_its_config() -> None:
    assert Outer(inner_changes={"how": "b"}).inner_changes == {"how": "b"}  # "name", required in Inner, may be left out
    with pytest.raises(ConfigError, match=r"Outer.inner_changes: unknown Inner field\(s\) \['nmae'\]"):
        Outer.from_dict({"inner_changes": {"nmae": "x"}})
    with pytest.raises(ConfigError, match="Outer.inner_changes.how must be one of 'a', 'b'; got 'c'"):
        Outer.from_dict({"inner_changes": {"how": "c"}})


def test_field_docs_are_the_strings_under_the_fields() -> None:
    docs = Outer.field_docs()
    assert docs["count"] == "An integer."
    assert docs["seen"] == "Filled by __post_init__, which runs after the base's checks."
    assert set(docs) == {f for f in Outer.__dataclass_fields__}

    @dataclass
    class Child(Outer):
        count: int = 2
        """The child's own words."""

    assert Child.field_docs()["count"] == "The child's own words." and Child.field_docs()["scale"] == docs["scale"]


def test_save_writes_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "c.yaml"
    Outer(count=1).save(path)
    before = path.read_bytes()

    def crash(*args: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)  # the write dies before the new file takes the old one's place
    with pytest.raises(OSError, match="disk full"):
        Outer(count=2).save(path)
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml"]
    monkeypatch.undo()
    Outer(count=2).save(path)
    assert Outer.load(path).count == 2


def test_every_shipped_config_loads() -> None:
    from smallcode.data.config import PrepareConfig
    from smallcode.train.config import TrainConfig
    from smallcode.train.recipe import RecipeConfig

    files = sorted((REPO / "configs").glob("*/*.yaml"))
    assert files
    for path in files:
        cls = RecipeConfig if path.stem == "recipe" else PrepareConfig if path.parent.name == "data" else TrainConfig
        cls.load(path)
