"""Pre-generated samples files: good ones load in order, bad ones fail naming the line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from smallcode.backends.samples import SamplesError, read_samples

KNOWN = {"HumanEval/0", "HumanEval/1"}


def write(tmp_path: Path, lines: list[bytes | str]) -> Path:
    p = tmp_path / "samples.jsonl"
    p.write_bytes(b"\n".join(x if isinstance(x, bytes) else x.encode() for x in lines) + b"\n")
    return p


def row(tid: str, comp: str, **extra: object) -> str:
    return json.dumps({"task_id": tid, "completion": comp, **extra})


def test_reads_in_order(tmp_path: Path) -> None:
    p = write(tmp_path, [row("HumanEval/0", "a"), "", row("HumanEval/1", "b"), row("HumanEval/0", "c")])
    assert read_samples(p, KNOWN) == {"HumanEval/0": ["a", "c"], "HumanEval/1": ["b"]}
    # identical completions are distinct samples when their ids differ
    p = write(tmp_path, [row("HumanEval/0", "a", completion_id=0), row("HumanEval/0", "a", completion_id=1)])
    assert read_samples(p, KNOWN) == {"HumanEval/0": ["a", "a"]}


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ([row("HumanEval/0", "a"), row("HumanEval/9", "b")], r"samples.jsonl:2: unknown task id 'HumanEval/9'"),
        ([row("HumanEval/0", "a"), '{"task_id": "HumanEval/1"}'], r":2: missing field 'completion'"),
        (['{"completion": "x"}'], r":1: missing field 'task_id'"),
        ([row("HumanEval/0", "a"), b'{"task_id": "HumanEval/1", "completion": "\xff"}'], r":2: not valid UTF-8"),
        ([row("HumanEval/0", "a"), "{not json"], r":2: not valid JSON"),
        (["[1, 2]"], r":1: expected a JSON object"),
        ([json.dumps({"task_id": "HumanEval/0", "completion": 5})], r":1: field 'completion' must be a string"),
        (
            [row("HumanEval/0", "a"), row("HumanEval/1", "b"), row("HumanEval/0", "a")],
            r":3: duplicate sample for HumanEval/0 \(the same row as line 1\)",
        ),
        (
            [row("HumanEval/0", "a", completion_id=3), row("HumanEval/0", "b", completion_id=3)],
            r":2: duplicate sample for HumanEval/0 \(completion_id 3 as line 1\)",
        ),
        ([""], r"no samples"),
    ],
)
def test_bad_input_names_the_line(tmp_path: Path, lines: list, message: str) -> None:
    with pytest.raises(SamplesError, match=message):
        read_samples(write(tmp_path, lines), KNOWN)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SamplesError, match="cannot read"):
        read_samples(tmp_path / "nope.jsonl")
