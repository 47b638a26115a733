"""A fixture both export test files use: one torch thread (the tokenizer is the run's shared
``tiny_tokenizer_dir``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    # Tiny matrices: with other jobs on the cores, handing each op to a thread pool costs 100x the op.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
