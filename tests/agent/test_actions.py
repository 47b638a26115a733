"""Parsing one action per reply and applying search/replace edits all-or-nothing."""

from __future__ import annotations

import pytest

from smallcode.agent.actions import ActionError, apply_edit, parse_action, parse_edit, search_replace_block


def test_one_block_is_one_action() -> None:
    a = parse_action("I will look.\n```read\nsrc/x.py\n```\n")
    assert (a.kind, a.arg) == ("read", "src/x.py")
    assert parse_action("```bash\nls -la\n```").kind == "run"
    assert parse_action("done\n```submit\n```").kind == "submit"


@pytest.mark.parametrize(("reply", "message"), [
    ("no block here", "no action found"),
    ("```read\na\n```\n```read\nb\n```", "exactly one action"),
    ("```python\nprint(1)\n```", "unknown action 'python'"),
    ("```read\n\n```", "needs an argument"),
])
def test_malformed_replies_say_what_is_wrong(reply: str, message: str) -> None:
    with pytest.raises(ActionError, match=message):
        parse_action(reply)


def test_edit_replaces_each_block_once() -> None:
    text = "a = 1\nb = 2\nc = 3\n"
    edit = parse_edit(parse_action(search_replace_block("m.py", "b = 2\n", "b = 20\n")).arg)
    assert edit.path == "m.py"
    assert apply_edit(text, edit) == "a = 1\nb = 20\nc = 3\n"


def test_a_failing_block_changes_nothing() -> None:
    text = "x = 1\nx = 1\ny = 2\n"
    body = ("m.py\n<<<<<<< SEARCH\ny = 2\n=======\ny = 3\n>>>>>>> REPLACE\n"
            "<<<<<<< SEARCH\nx = 1\n=======\nx = 5\n>>>>>>> REPLACE\n")
    with pytest.raises(ActionError, match="block 2 occurs 2 times"):
        apply_edit(text, parse_edit(body))
    missing = "m.py\n<<<<<<< SEARCH\nz = 9\n=======\nz = 0\n>>>>>>> REPLACE\n"
    with pytest.raises(ActionError, match="does not occur"):
        apply_edit(text, parse_edit(missing))


def test_malformed_edits_are_refused() -> None:
    with pytest.raises(ActionError, match="no complete SEARCH/REPLACE"):
        parse_edit("m.py\n<<<<<<< SEARCH\nx\n=======\ny\n")
    with pytest.raises(ActionError, match="file's path"):
        parse_edit("<<<<<<< SEARCH\nx\n=======\ny\n>>>>>>> REPLACE\n")
    with pytest.raises(ActionError, match="outside the SEARCH/REPLACE"):
        parse_edit("m.py\nstray text\n<<<<<<< SEARCH\nx\n=======\ny\n>>>>>>> REPLACE\n")


def test_new_files_need_an_empty_search() -> None:
    create = parse_edit("new.py\n<<<<<<< SEARCH\n=======\nprint('hi')\n>>>>>>> REPLACE\n")
    assert apply_edit(None, create) == "print('hi')\n"
    with pytest.raises(ActionError, match="no such file"):
        apply_edit(None, parse_edit("new.py\n<<<<<<< SEARCH\nx\n=======\ny\n>>>>>>> REPLACE\n"))
    with pytest.raises(ActionError, match="empty SEARCH but the file exists"):
        apply_edit("old\n", create)


def test_the_last_line_may_lack_its_newline() -> None:
    edit = parse_edit(parse_action(search_replace_block("m.py", "    return not x\n", "    return x\n")).arg)
    assert apply_edit("def f(x):\n    return not x", edit) == "def f(x):\n    return x\n"
