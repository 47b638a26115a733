"""The one tiny tokenizer, tiny model and polling helper that the whole test run shares.

``tiny_tokenizer()`` trains the code BPE once per test process (on the standard library's ``json``
package, 400 merges) and hands out that one object; the ``tiny_tokenizer`` / ``tiny_tokenizer_dir``
fixtures of ``tests/conftest.py`` are it. ``make_model`` builds the tiny random model sized to it
(vocabulary 512) with peaked logits, so that float summation order never flips a greedy token.
``wait_for`` polls a condition with a deadline and says what it waited for when it gives up;
``loopback_listener`` is a TCP listener on the host's loopback, which a sandbox with the host's
network would reach.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import socket
import sysconfig
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from smallcode.tokenizer import CodeTokenizer, load_tokenizer, train_tokenizer

if TYPE_CHECKING:
    from smallcode.model import SmallCodeLM

STDLIB = Path(sysconfig.get_paths()["stdlib"])
TOKENIZER_CORPUS = [STDLIB / "json"]
TOKENIZER_VOCAB = 400


@functools.cache
def tiny_tokenizer_dir() -> Path:
    """A directory holding the shared tokenizer (``tokenizer.json``), trained on first use."""
    out = Path(tempfile.mkdtemp(prefix="smallcode-test-tok-"))
    atexit.register(shutil.rmtree, out, True)
    train_tokenizer(TOKENIZER_CORPUS, TOKENIZER_VOCAB, out, show_progress=False)
    return out


def tiny_tokenizer() -> CodeTokenizer:
    return load_tokenizer(tiny_tokenizer_dir())


def make_model(scale: float = 4.0, **overrides: object) -> SmallCodeLM:
    """The ``tiny`` preset at vocabulary 512, seeded, weights scaled by ``scale`` (peaked logits)."""
    # Imported here: the model package takes seconds to import, and tests that only want the tokenizer
    # (the tokenizer and data tests) need not pay for it.
    import torch

    from smallcode.model import ModelConfig, SmallCodeLM

    torch.manual_seed(0)
    model = SmallCodeLM(ModelConfig.preset("tiny", **{"vocab_size": 512, **overrides}))
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.mul_(scale)
    return model.eval()


def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 30.0, poll_s: float = 0.01) -> None:
    """Return once ``condition()`` is true; fail the test naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(poll_s)


@contextmanager
def loopback_listener() -> Iterator[socket.socket]:
    """A listening TCP socket on 127.0.0.1 (a free port), closed on exit."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        s.setblocking(False)
        yield s
    finally:
        s.close()
