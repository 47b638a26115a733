"""Shared fixtures: the tiny model config of STYLE.md, the shared data directory, determinism."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
# ../shared/data beside the checkout, as laid out for developers and CI.
SHARED_DATA = Path(os.environ.get("SMALLCODE_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(autouse=True)
def _seed_and_threads() -> None:
    torch.manual_seed(0)


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"shared data not found at {SHARED_DATA}; set SMALLCODE_SHARED_DATA")
    return SHARED_DATA
