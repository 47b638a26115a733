"""``ShardLoader``: deterministic, resumable, rank-sharded batches from memory-mapped shards.

Interface (the training loop relies on it)::

    loader = ShardLoader(dir, batch_size=B, seq_len=T, seed=s, rank=r, world_size=W, fim_rate=f)
    x = loader.batch(step)            # torch.LongTensor (B, T+1): inputs x[:, :-1], targets x[:, 1:]
    for v in loader.validation():     # (<=B, T+1) batches over the validation split, no FIM
        ...

A split is one virtual token stream (its shards in order, each document followed by EOT).
Sample ``i`` is the window ``stream[i*T : i*T + T + 1]``, so consecutive samples share one token
and every token is a target exactly once per epoch. Which samples a step and a rank take is
:class:`BatchSchedule`'s (explained there), so ``batch(step)`` is a pure function of ``(seed, step,
rank, world_size)`` (and of ``fim_rate``/``fim_spm_rate``).

Shards are opened with ``np.memmap`` and only the windows asked for are read, so the corpus
may be larger than RAM. When FIM is on, batch building decodes and re-encodes documents with the
tokenizer stored in the shard directory; a FIM'd window that comes out shorter than T+1 is padded
with ``pad_id`` (mask it in the loss if that matters). Opening checks the tokenizer hash (when a
tokenizer is given), header/size consistency of every shard, and optionally their sha256; with FIM on,
a tokenizer without FIM tokens (a Hugging Face model's of no FIM family) is refused.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from smallcode.corpus import DataError
from smallcode.data.fim import apply_fim
from smallcode.data.shards import open_shard, read_index, split_shards
from smallcode.tokenizer import CodeTokenizer, load_tokenizer
from smallcode.tokenizer.code_tokenizer import TOKENIZER_FILE

# Salt separating the FIM random stream from the permutation stream.
_FIM_STREAM = 0x46494D


class TokenStream:
    """The shards of one split, read as a single array of token ids."""

    def __init__(
        self, directory: Path, split: str, dtype: str, tokenizer_hash: str, index: dict, verify: bool
    ) -> None:
        self.arrays = [
            open_shard(s, dtype, tokenizer_hash, verify) for s in split_shards(directory, index, split)
        ]
        sizes = np.array([a.size for a in self.arrays], dtype=np.int64)
        self.starts = np.concatenate([[0], np.cumsum(sizes)])
        self.size = int(self.starts[-1])

    def read(self, start: int, length: int) -> np.ndarray:
        """Tokens ``[start, start + length)`` as int64, crossing shard boundaries if needed."""
        if start < 0 or start + length > self.size:
            raise IndexError(f"window [{start}, {start + length}) outside a stream of {self.size} tokens")
        out = np.empty(length, dtype=np.int64)
        pos, filled = start, 0
        k = int(np.searchsorted(self.starts, start, side="right")) - 1
        while filled < length:
            local = pos - int(self.starts[k])
            take = min(length - filled, self.arrays[k].size - local)
            out[filled : filled + take] = self.arrays[k][local : local + take]
            filled += take
            pos += take
            k += 1
        return out


class BatchSchedule:
    """Which samples rank ``r`` reads at each step: a pure function of ``(seed, step, rank, world_size)``.

    Epoch ``e`` visits ``range(n_samples)`` in a permutation drawn from ``(seed, e)``; step ``k`` of an
    epoch takes the ``k``-th block of ``batch_size * world_size`` samples and rank ``r`` the ``r``-th
    ``batch_size`` of them. Samples after the last full block are skipped in that epoch (a different
    set each epoch). So a run restarted at step ``k`` sees exactly the batches an uninterrupted run
    would, and within an epoch no sample is used twice across ranks. Shared by the shard loader and
    the fine-tuning loader (``smallcode.train.sft``) so that both resume and shard across ranks alike;
    this is the one place the schedule is explained.
    """

    def __init__(self, n_samples: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1) -> None:
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
        self.n_samples, self.batch_size, self.seed = n_samples, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.global_batch = batch_size * world_size
        self.steps_per_epoch = n_samples // self.global_batch
        self._perm_epoch = -1
        self._perm = np.empty(0, dtype=np.int64)

    def _permutation(self, epoch: int) -> np.ndarray:
        if epoch != self._perm_epoch:  # one permutation kept: steps run in order
            self._perm = np.random.default_rng([self.seed, epoch]).permutation(self.n_samples)
            self._perm_epoch = epoch
        return self._perm

    def epoch(self, step: int) -> int:
        return step // self.steps_per_epoch

    def sample_indices(self, step: int) -> np.ndarray:
        """The sample indices of this rank's rows at ``step``."""
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        epoch, k = divmod(step, self.steps_per_epoch)
        start = k * self.global_batch + self.rank * self.batch_size
        return self._permutation(epoch)[start : start + self.batch_size]


class ShardLoader:
    """Batches of shape (batch_size, seq_len + 1); see the module docstring for the guarantees."""

    def __init__(
        self,
        directory: str | Path,
        batch_size: int,
        seq_len: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        fim_rate: float = 0.0,
        fim_spm_rate: float = 0.5,
        split: str = "train",
        tokenizer: str | Path | CodeTokenizer | None = None,
        verify: bool = False,
    ) -> None:
        if batch_size < 1 or seq_len < 1:
            raise ValueError(f"batch_size and seq_len must be >= 1, got {batch_size} and {seq_len}")
        if world_size < 1 or not 0 <= rank < world_size:  # before the shards are opened
            raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
        if not 0.0 <= fim_rate <= 1.0 or not 0.0 <= fim_spm_rate <= 1.0:
            raise ValueError(f"fim_rate {fim_rate} and fim_spm_rate {fim_spm_rate} must be in [0, 1]")
        self.directory = Path(directory)
        self.index = read_index(self.directory)
        self.tokenizer_hash: str = self.index["tokenizer_hash"]
        if tokenizer is not None:
            given = tokenizer if isinstance(tokenizer, CodeTokenizer) else load_tokenizer(tokenizer)
            if given.hash != self.tokenizer_hash:
                raise DataError(
                    f"{self.directory}: prepared with tokenizer {self.tokenizer_hash[:16]}, "
                    f"but the given tokenizer is {given.hash[:16]} ({given.source}); re-run `smallcode data prepare`"
                )
        self.batch_size, self.seq_len, self.seed = batch_size, seq_len, seed
        self.rank, self.world_size = rank, world_size
        self.fim_rate, self.fim_spm_rate = fim_rate, fim_spm_rate
        self.split = split
        self.verify = verify
        self.stream = TokenStream(
            self.directory, split, self.index["dtype"], self.tokenizer_hash, self.index, verify
        )
        self.n_samples = max(0, (self.stream.size - 1) // seq_len)
        self.schedule = BatchSchedule(self.n_samples, batch_size, seed, rank, world_size)
        self.global_batch, self.steps_per_epoch = self.schedule.global_batch, self.schedule.steps_per_epoch
        if self.steps_per_epoch == 0:
            raise DataError(
                f"{self.directory}: split {split!r} has {self.n_samples} samples of {seq_len + 1} tokens, "
                f"fewer than one global batch ({batch_size} x {world_size} ranks)"
            )
        self._tok: CodeTokenizer | None = None
        if fim_rate > 0.0 and self.tokenizer.fim_prefix_id is None:
            raise DataError(f"{self.directory}: fim_rate is {fim_rate} but the tokenizer has no fill-in-the-middle "
                            f"tokens ({self.tokenizer.family}); set fim_rate to 0")

    # -- the pure function --------------------------------------------------------------------
    def sample_indices(self, step: int) -> np.ndarray:
        """The global sample indices of this rank's rows at ``step`` (for tests and debugging)."""
        return self.schedule.sample_indices(step)

    def epoch(self, step: int) -> int:
        return self.schedule.epoch(step)

    @property
    def tokenizer(self) -> CodeTokenizer:
        """The tokenizer stored with the shards (checked against the index hash)."""
        if self._tok is None:
            tok = load_tokenizer(self.directory / TOKENIZER_FILE)
            if tok.hash != self.tokenizer_hash:
                raise DataError(
                    f"{self.directory / TOKENIZER_FILE}: hash differs from {self.directory}/index.json"
                )
            self._tok = tok
        return self._tok

    def batch(self, step: int) -> torch.Tensor:
        """Rows of T+1 token ids for ``step`` on this rank: a pure function of (seed, step, rank, world_size)."""
        epoch = self.epoch(step)
        rows = []
        for i in self.sample_indices(step):
            window = self.stream.read(int(i) * self.seq_len, self.seq_len + 1)
            if self.fim_rate > 0.0:
                rng = np.random.default_rng([self.seed, epoch, int(i), _FIM_STREAM])
                window = apply_fim(window, self.tokenizer, rng, self.fim_rate, self.fim_spm_rate)
            rows.append(window)
        return torch.from_numpy(np.stack(rows))

    # -- validation ---------------------------------------------------------------------------
    def validation(
        self, batch_size: int | None = None, max_batches: int | None = None
    ) -> Iterator[torch.Tensor]:
        """Consecutive windows of the validation split in order (no shuffling, no FIM).

        Batch ``j`` goes to rank ``j % world_size``; the last batch may have fewer rows. An
        empty validation split yields nothing.
        """
        b = batch_size or self.batch_size
        stream = TokenStream(
            self.directory, "validation", self.index["dtype"], self.tokenizer_hash, self.index, self.verify
        )
        n = max(0, (stream.size - 1) // self.seq_len)
        emitted = 0
        for j, start in enumerate(range(0, n, b)):
            if j % self.world_size != self.rank:
                continue
            if max_batches is not None and emitted >= max_batches:
                return
            idx = range(start, min(start + b, n))
            yield torch.from_numpy(np.stack([stream.read(i * self.seq_len, self.seq_len + 1) for i in idx]))
            emitted += 1
