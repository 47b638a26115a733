"""The repository-problem miner on a tiny package written into tmp_path (never the whole stdlib)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from smallcode.eval.check import compat_program
from smallcode.eval.mining.repo import load_mined, mine_candidates, mine_repo, task_sha256, wrong_bodies
from smallcode.eval.runner import load_tasks
from smallcode.eval.sandbox import run_python
from smallcode.tasks import DataFileError

MATHY = '''
"""A tiny module whose doctests exercise some of its functions.

>>> uses_helper([1, 2])
[2, 4]
"""


def add(a, b):
    """Add two numbers.

    >>> add(2, 3)
    5
    >>> add(-1, 1)
    0
    """
    return a + b


def noop(x):
    """Doctest that a `pass` body also satisfies, so it tells nothing.

    >>> noop(1)
    """
    x = x + 1


def uses_helper(xs):
    """Double each item with a private helper defined later in the module."""
    return [_twice(x) for x in xs]


def _twice(x):
    return 2 * x


class Box:
    """A value in a box.

    >>> Box(3).double()
    6
    """

    def __init__(self, v):
        self.v = v

    def double(self):
        """Twice the value."""
        return self.v * 2


def no_doctest(x):
    """No examples here."""
    return x


if __name__ == "__main__":
    raise SystemExit("never part of a program")
'''


@pytest.fixture(scope="module")
def mined(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list]:
    root = tmp_path_factory.mktemp("src") / "tinypkg"
    root.mkdir()
    (root / "__init__.py").write_text("")
    (root / "mathy.py").write_text(textwrap.dedent(MATHY))
    out = mine_repo(root, tmp_path_factory.mktemp("out") / "tiny.jsonl", workers=2, progress=False)
    return out, load_mined(out)


def test_candidates_are_the_functions_doctests_call(mined: tuple[Path, list]) -> None:
    out, _ = mined
    _, candidates = mine_candidates(_src(out))
    assert sorted(c.qualname for c in candidates) == ["Box.double", "add", "noop", "uses_helper"]


def _src(out: Path) -> Path:
    # the fixture's source dir sits next to the output dir under the same basetemp
    return next(out.parent.parent.glob("src*/tinypkg"))


def test_kept_problems_and_rejections(mined: tuple[Path, list]) -> None:
    out, tasks = mined
    ids = sorted(t.task_id for t in tasks)
    # noop is dropped: its doctest passes with a `pass` body too.
    assert ids == [f"repo/tinypkg.mathy/{q}" for q in ("Box.double", "add", "uses_helper")]
    header = json.loads(out.read_text().splitlines()[0])["header"]
    assert header["candidates"] == 4 and header["verified"] == 3 and header["tasks"] == 3


def test_problem_shape(mined: tuple[Path, list]) -> None:
    _, tasks = mined
    add = next(t for t in tasks if t.entry_point == "add")
    assert add.prompt.endswith('    0\n    """\n') and "def add(a, b):" in add.prompt
    assert add.reference.strip() == "return a + b"
    assert "return a + b" not in add.preamble and "def add" not in add.preamble
    assert "__main__" not in add.preamble  # the main block is dropped
    assert add.inputs == ((2, 3), (-1, 1))  # literal-argument doctest calls become strict inputs
    box = next(t for t in tasks if t.entry_point == "double")
    assert box.prompt.startswith("# tinypkg.mathy: method of class Box")
    assert box.prompt.splitlines()[1] == "def double(self):"  # dedented out of the class
    assert box.inputs == ()  # methods are compat only


def test_reference_passes_and_wrong_bodies_fail(mined: tuple[Path, list]) -> None:
    _, tasks = mined
    for t in tasks:
        assert run_python(compat_program(t, t.reference)).ok, t.task_id
        for wrong in wrong_bodies(t):
            assert not run_python(compat_program(t, wrong)).ok, (t.task_id, wrong)
    add = next(t for t in tasks if t.entry_point == "add")
    assert not run_python(compat_program(add, "    return a - b\n")).ok


def test_mined_file_is_hash_checked(mined: tuple[Path, list], tmp_path: Path) -> None:
    out, tasks = mined
    assert [t.task_id for t in load_tasks(["repo"], repo_file=out)] == [t.task_id for t in tasks]
    lines = out.read_text().splitlines()
    rec = json.loads(lines[2])
    rec["reference"] += "    # edited\n"
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join([*lines[:2], json.dumps(rec), *lines[3:]]) + "\n")
    with pytest.raises(DataFileError, match=r"bad\.jsonl:3: content hash mismatch"):
        load_mined(bad)
    bad.write_text(lines[0] + "\n{not json\n")
    with pytest.raises(DataFileError, match=r"bad\.jsonl:2: not valid JSON"):
        load_mined(bad)
    assert all(task_sha256(t) == json.loads(ln)["sha256"] for t, ln in zip(tasks, lines[1:], strict=True))


def test_limit_and_bad_source(tmp_path: Path, mined: tuple[Path, list]) -> None:
    out, _ = mined
    two = mine_repo(_src(out), tmp_path / "two.jsonl", limit=2, workers=1, progress=False)
    assert len(load_mined(two)) == 2
    with pytest.raises(DataFileError, match="not a directory and not an importable"):
        mine_repo("no_such_package_xyz", tmp_path / "x.jsonl", progress=False)
