"""The agent's actions: one fenced block per reply, parsed strictly, and search/replace edits.

A reply holds exactly one fenced block whose language tag names the action:

* ```` ```read ```` a path (optionally ``path:START-END``, 1-based lines): the file's text;
* ```` ```search ```` a regular expression: matching lines of the repository's files;
* ```` ```edit ```` a path on the first line, then one or more search/replace blocks::

      <<<<<<< SEARCH
      text that occurs exactly once in the file
      =======
      what replaces it
      >>>>>>> REPLACE

  (an empty SEARCH creates a file that does not exist yet);
* ```` ```bash ```` (or ``sh``/``shell``) a shell command, run in the sandbox;
* ```` ```test ```` (empty): the task's test command;
* ```` ```submit ```` (empty): the agent is done.

Anything else (no block, two blocks, an unknown tag, a malformed edit) is an :class:`ActionError`
whose message goes back to the model as the observation. An edit is checked whole before any of it
is written: every SEARCH must occur exactly once, in order, or nothing changes.
Not here: running actions (``loop.py``), where files live (``workspace.py``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

ActionKind = Literal["read", "search", "edit", "run", "test", "submit"]

_TAGS: dict[str, ActionKind] = {"read": "read", "search": "search", "edit": "edit", "bash": "run", "sh": "run",
                                "shell": "run", "test": "test", "submit": "submit"}
_FENCE = re.compile(r"^```[ \t]*([A-Za-z_-]*)[ \t]*\n(.*?)^```[ \t]*$", re.S | re.M)
_EDIT_BLOCK = re.compile(r"^<{5,9} SEARCH[ \t]*\n(.*?)^={5,9}[ \t]*\n(.*?)^>{5,9} REPLACE[ \t]*$", re.S | re.M)


class ActionError(ValueError):
    """A reply or an edit that cannot be carried out; the message tells the model what to fix."""


@dataclass(frozen=True)
class Action:
    kind: ActionKind
    arg: str
    """The block's text: a path, a pattern, an edit, a command; empty for test and submit."""


@dataclass(frozen=True)
class Edit:
    path: str
    blocks: tuple[tuple[str, str], ...]
    """(search, replace) pairs, applied in order."""


FORMAT_HELP = """\
Answer with a short thought and then exactly ONE fenced block, the action:
```read
path/to/file.py
```
```search
regular expression
```
```edit
path/to/file.py
<<<<<<< SEARCH
exact lines to replace (must occur once)
=======
new lines
>>>>>>> REPLACE
```
```bash
shell command
```
```test
```
```submit
```"""
"""The action format as the model is told it."""


def parse_action(reply: str) -> Action:
    """The one action in ``reply``; :class:`ActionError` says what is wrong with it otherwise."""
    blocks = _FENCE.findall(reply)
    if not blocks:
        raise ActionError("no action found: end your reply with one fenced block (```read, ```search, ```edit, "
                          "```bash, ```test or ```submit)")
    if len(blocks) > 1:
        raise ActionError(f"{len(blocks)} fenced blocks found: give exactly one action per reply")
    tag, body = blocks[0]
    kind = _TAGS.get(tag.lower())
    if kind is None:
        raise ActionError(f"unknown action {tag or '(no tag)'!r}: use read, search, edit, bash, test or submit")
    body = body if kind == "edit" else body.strip()
    if kind in ("read", "search", "run") and not body:
        raise ActionError(f"the {tag} action needs an argument inside its block")
    return Action(kind, body)


def parse_edit(text: str) -> Edit:
    """An edit action's path and search/replace pairs."""
    path, _, rest = text.partition("\n")
    path = path.strip()
    if not path or path.startswith("<<<"):
        raise ActionError("an edit starts with the file's path on its own line, then SEARCH/REPLACE blocks")
    pairs = tuple(_EDIT_BLOCK.findall(rest))
    leftover = _EDIT_BLOCK.sub("", rest).strip()
    if not pairs:
        raise ActionError("no complete SEARCH/REPLACE block: write '<<<<<<< SEARCH', the old lines, '=======', "
                          "the new lines, '>>>>>>> REPLACE'")
    if leftover:
        raise ActionError(f"text outside the SEARCH/REPLACE blocks: {leftover[:120]!r}; nothing was changed")
    return Edit(path, pairs)


def apply_edit(original: str | None, edit: Edit) -> str:
    """The file's new text after ``edit``; ``original`` is None for a file that does not exist.
    Raises :class:`ActionError` (and changes nothing) unless every block applies."""
    if original is None:
        if len(edit.blocks) != 1 or edit.blocks[0][0]:
            raise ActionError(f"{edit.path}: no such file; to create it, use one block with an empty SEARCH")
        return edit.blocks[0][1]
    text = original
    for i, (search, replace) in enumerate(edit.blocks, 1):
        if not search:
            raise ActionError(f"{edit.path}: block {i} has an empty SEARCH but the file exists; nothing was changed")
        count = text.count(search)
        if count == 0 and search.endswith("\n") and text.endswith(search[:-1]) and text.count(search[:-1]) == 1:
            # The block's lines always end in a newline; the file's last line may not have one.
            text = text[: len(text) - len(search) + 1] + replace
            continue
        if count != 1:
            where = "does not occur" if count == 0 else f"occurs {count} times (add lines to make it unique)"
            raise ActionError(f"{edit.path}: the SEARCH text of block {i} {where}; nothing was changed. "
                              "Copy the lines exactly, with their indentation.")
        text = text.replace(search, replace, 1)
    return text


def search_replace_block(path: str, search: str, replace: str) -> str:
    """The edit action that replaces ``search`` by ``replace`` in ``path`` (for scripted models)."""
    search, replace = (t if not t or t.endswith("\n") else t + "\n" for t in (search, replace))
    return f"```edit\n{path}\n<<<<<<< SEARCH\n{search}=======\n{replace}>>>>>>> REPLACE\n```"
