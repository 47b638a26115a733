"""A constant-memory KV cache for window + global attention.

Per layer the cache holds ``n_global`` slots for the first positions of each sequence and a ring of
at most ``window`` slots for the most recent ones: position ``p < n_global`` lives in slot ``p``,
position ``p >= n_global`` in slot ``n_global + (p - n_global) % window``. Keys are stored already
rotated by RoPE at their absolute position, so relative positions stay exact after the ring wraps.
Each slot remembers which position it holds (``-1`` for empty), and the attention mask is derived
from those positions, which is also what makes rows of different lengths batch together.

A chunk of several tokens attends to [cached slots ; its own keys] and is written after all layers
ran (a chunk may overwrite slots its own earlier queries still see). A single token per row, the
decoding case, is written into its slot first and attends to the cache alone: the slot's old
occupant is out of the window by then, and no per-layer concatenation is made.

The ring starts small and doubles up to ``window`` slots, so a model whose window covers the whole
context behaves as an ordinary growing cache, while a windowed model stops growing at
``n_global + window`` slots however long it runs. ``spare`` slots beyond the window keep the last
positions that fell out of it, which is what lets a cache go back (``truncate``) by up to
``spare + 1`` positions after the ring has wrapped: a server reusing a prompt whose last few tokens
changed, and what lets speculative decoding ``rewind`` rows past the tokens the model rejected.
Sampling and scheduling are the engine's business, not the cache's.

Shape legend: L layers, B rows, K key/value heads, S slots, D head width, T new positions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from smallcode.model.config import ModelConfig


@dataclass
class CacheStep:
    """What every layer needs to attend through the cache for one chunk of new tokens."""

    cache: KVCache
    pos: torch.Tensor
    """(B, T) absolute positions of the new tokens."""
    rows: torch.Tensor
    """(B, T) row index of each new token."""
    slots: torch.Tensor
    """(B, T) slot each new token is written to."""
    mask: torch.Tensor
    """Visibility shared by all layers: (B, 1, R * T, S + T) over [cached slots ; new tokens], or, when
    ``in_place``, an additive float mask (B, 1, 1, S) over the slots alone."""
    in_place: bool = False
    """One token per row, already counted in ``slot_pos``: each layer writes its keys into the cache
    first and then attends to the cache alone (no concatenation, no per-layer copy)."""


class KVCache:
    def __init__(self, config: ModelConfig, batch: int, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32, initial_slots: int = 256, spare: int = 0) -> None:
        self.config = config
        self.n_global, self.window = config.n_global, config.window
        self.max_ring = self.window + spare
        """Most ring slots: the window, plus ``spare`` slots that only ``truncate`` needs."""
        ring = min(self.max_ring, max(1, initial_slots))
        shape = (config.n_layers, batch, config.n_kv_heads, self.n_global + ring, config.hd)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.slot_pos = torch.full((batch, self.n_global + ring), -1, dtype=torch.long, device=device)
        self.length = torch.zeros(batch, dtype=torch.long, device=device)
        """Positions already written per row: the next token of row b sits at ``length[b]``."""

    @property
    def batch(self) -> int:
        return self.k.shape[1]

    @property
    def ring(self) -> int:
        return self.k.shape[3] - self.n_global

    def nbytes(self) -> int:
        return self.k.nelement() * self.k.element_size() * 2 + self.slot_pos.nelement() * 8

    def reserve(self, new_tokens: int) -> None:
        """Grow the ring (doubling, at most to ``max_ring``) so ``new_tokens`` more fit without wrapping early."""
        needed = int(self.length.max()) + new_tokens - self.n_global
        if needed <= self.ring or self.ring >= self.max_ring:
            return
        self._grow(min(self.max_ring, max(needed, 2 * self.ring)) - self.ring)

    def _grow(self, extra: int) -> None:
        """Append ``extra`` empty ring slots; only valid before the ring has wrapped."""
        if int(self.length.max()) - self.n_global > self.ring:
            raise ValueError("a ring that has wrapped cannot grow")
        # Before the first wrap, slot order equals position order, so growing is a plain append.
        pad = (*self.k.shape[:3], extra, self.k.shape[4])
        self.k = torch.cat([self.k, self.k.new_zeros(pad)], dim=3)
        self.v = torch.cat([self.v, self.v.new_zeros(pad)], dim=3)
        self.slot_pos = torch.cat([self.slot_pos, self.slot_pos.new_full((self.batch, extra), -1)], dim=1)

    def positions(self, T: int) -> torch.Tensor:
        """Absolute positions (B, T) of the next ``T`` tokens of each row."""
        return self.length[:, None] + torch.arange(T, device=self.length.device)

    def slots(self, pos_BT: torch.Tensor) -> torch.Tensor:
        G = self.n_global
        return torch.where(pos_BT < G, pos_BT, G + (pos_BT - G) % self.ring)

    def step(self, T: int, group: int) -> CacheStep:
        """Make room for ``T`` new tokens per row and work out, once for all layers, where they go
        and what each of them sees. ``group`` is the number of query heads per key head."""
        if T == 1:
            return self._decode_step()
        self.reserve(T)
        pos = self.positions(T)
        in_ring = int((pos >= self.n_global).sum(dim=1).max())
        if in_ring > self.ring:  # two positions of the chunk would share a slot
            raise ValueError(f"a chunk of {in_ring} ring positions does not fit a ring of {self.ring} slots")
        rows = torch.arange(self.batch, device=pos.device)[:, None].expand_as(pos)
        return CacheStep(self, pos, rows, self.slots(pos), self.attention_mask(pos, group))

    def _decode_step(self) -> CacheStep:
        """One new token per row, written before it is attended to: its slot's old occupant is at
        least ``window`` positions back (or the slot is empty), so no query of this step needs it."""
        self.reserve(1)
        pos_B = self.length
        rows_B = torch.arange(self.batch, device=pos_B.device)
        slots_B = self.slots(pos_B)
        self.slot_pos[rows_B, slots_B] = pos_B
        self.length = pos_B + 1
        k_pos, q_pos = self.slot_pos, pos_B[:, None]  # every stored position is <= q_pos
        seen = (k_pos >= 0) & ((q_pos - k_pos < self.window) | (k_pos < self.n_global))
        # An additive mask is what SDPA's CPU kernel uses; converting a boolean one per layer costs time.
        mask = torch.zeros(seen.shape, dtype=self.k.dtype, device=seen.device).masked_fill_(~seen, float("-inf"))
        return CacheStep(self, pos_B[:, None], rows_B[:, None], slots_B[:, None], mask[:, None, None], in_place=True)

    def write(self, layer: int, k_BTKD: torch.Tensor, v_BTKD: torch.Tensor, step: CacheStep) -> None:
        """Store one layer's keys and values of the chunk ``step`` describes."""
        self.k[layer, step.rows, :, step.slots] = k_BTKD.to(self.k.dtype)
        self.v[layer, step.rows, :, step.slots] = v_BTKD.to(self.v.dtype)

    def commit(self, step: CacheStep) -> None:
        """Record that every layer has written the chunk: the slots now hold it, the rows move on."""
        if step.in_place:  # recorded before the layers ran
            return
        self.slot_pos[step.rows, step.slots] = step.pos
        self.length = step.pos[:, -1] + 1

    def attention_mask(self, pos_BT: torch.Tensor, group: int) -> torch.Tensor:
        """Which of [cached slots ; the new chunk] each new query sees: (B, 1, group * T, S + T).

        Rows are repeated ``group`` times because the query heads sharing a key head are stacked
        along the sequence axis (see ``attention.cached_attention``).
        """
        k_pos = torch.cat([self.slot_pos, pos_BT], dim=1)[:, None, :]  # (B, 1, S+T)
        q_pos = pos_BT[:, :, None]  # (B, T, 1)
        seen = (k_pos >= 0) & (k_pos <= q_pos) & ((q_pos - k_pos < self.window) | (k_pos < self.n_global))
        return seen.repeat(1, group, 1)[:, None]

    def select(self, rows: torch.Tensor | list[int]) -> KVCache:
        """A cache holding only ``rows`` (in that order), e.g. to drop finished sequences or fan out a prompt."""
        idx = torch.as_tensor(rows, dtype=torch.long, device=self.k.device)
        out = KVCache.__new__(KVCache)
        out.config, out.n_global, out.window, out.max_ring = self.config, self.n_global, self.window, self.max_ring
        out.k, out.v = self.k[:, idx], self.v[:, idx]
        out.slot_pos, out.length = self.slot_pos[idx], self.length[idx]
        return out

    def clone(self) -> KVCache:
        """An independent copy (a stored prompt's cache stays as it was while a copy decodes on)."""
        return self.select(list(range(self.batch)))

    def can_truncate(self, length: int) -> bool:
        """Whether every row can go back to ``length`` positions: the cache still holds all that the
        query at ``length`` sees (the global slots and the ``window - 1`` positions before it), i.e.
        the ring has not yet overwritten them with later positions (``spare`` slots make room for that)."""
        if not 0 < length <= int(self.length.min()):
            return False
        lo = max(self.n_global, length - self.window + 1)
        held = ((self.slot_pos >= lo) & (self.slot_pos < length)).sum(dim=1)
        return bool((held == max(0, length - lo)).all())

    def truncate(self, length: int) -> KVCache:
        """A copy of this cache holding only positions ``< length`` of each row, as if the later
        ones had never been fed (see ``can_truncate``)."""
        if not self.can_truncate(length):
            raise ValueError(f"cannot go back to {length} positions: the ring has overwritten what they see")
        out = self.clone()
        out.slot_pos = out.slot_pos.masked_fill(out.slot_pos >= length, -1)
        out.length = torch.full_like(out.length, length)
        return out

    def rewind(self, drop: list[int]) -> None:
        """Forget the last ``drop[b]`` positions of each row, in place: what speculative decoding does
        after the model rejected some of the tokens it was fed. Safe as long as the ring's ``spare``
        slots cover them: positions written since the rewound length may have overwritten ring slots
        whose old occupants are then more than ``window`` positions back (``spare >= max(drop) - 1``)."""
        drop_B = torch.as_tensor(drop, dtype=torch.long, device=self.length.device)
        if len(drop_B) != self.batch or bool((drop_B < 0).any()) or bool((drop_B > self.length).any()):
            raise ValueError(f"cannot drop {drop} positions from rows of lengths {self.length.tolist()}")
        self.length = self.length - drop_B
        self.slot_pos = self.slot_pos.masked_fill(self.slot_pos >= self.length[:, None], -1)

    @staticmethod
    def stack(caches: list[KVCache]) -> KVCache:
        """Rows of several caches (same config) in one cache; rings are padded to the largest (a ring
        that has wrapped cannot be: caches meant to be stacked are made with the same ``spare``)."""
        ring = max(c.ring for c in caches)
        for c in caches:
            if c.ring < ring:
                c._grow(ring - c.ring)
        out = KVCache.__new__(KVCache)
        first = caches[0]
        out.config, out.n_global, out.window = first.config, first.n_global, first.window
        out.max_ring = max(c.max_ring for c in caches)
        out.k = torch.cat([c.k for c in caches], dim=1)
        out.v = torch.cat([c.v for c in caches], dim=1)
        out.slot_pos = torch.cat([c.slot_pos for c in caches])
        out.length = torch.cat([c.length for c in caches])
        return out
