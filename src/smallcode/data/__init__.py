"""smallcode's data pipeline: filtering, decontamination, dedup, split, packing, resumable loading.

Public interface:

* ``prepare(corpus, tokenizer, out, config=None, overwrite=False) -> summary`` builds a shard
  directory (see :mod:`smallcode.data.build` and, for the format, :mod:`smallcode.data.shards`);
* ``ShardLoader(dir, batch_size, seq_len, seed, rank=0, world_size=1, fim_rate=0.0, ...)`` with
  ``batch(step) -> torch.LongTensor (B, T+1)`` and ``validation()`` (see :mod:`smallcode.data.loader`);
* ``PrepareConfig``, ``DataError`` (every bad-input error; its message names the file; defined
  with corpus discovery in :mod:`smallcode.corpus`).

Attributes are imported on first use, so that reading a ``PrepareConfig`` or a shard index does
not import torch (which only the loader needs).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "prepare": "smallcode.data.build",
    "ShardLoader": "smallcode.data.loader",
    "PrepareConfig": "smallcode.data.config",
    "DataError": "smallcode.corpus",
    "verify_directory": "smallcode.data.shards",
    "read_index": "smallcode.data.shards",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'smallcode.data' has no attribute {name!r}")
