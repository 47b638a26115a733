"""SmallCodeLM: embedding, pre-norm blocks (attention, then MoE or dense feed-forward), norm, head.

Read top to bottom: ``Block`` is attention + feed-forward with residuals; ``SmallCodeLM`` stacks
them and returns logits with the router's auxiliary losses and per-layer expert loads. Passing a
``KVCache`` continues its sequences instead of starting at position 0 (the inference path). Dense and
MoE models share every line but ``MoE``'s one-expert shortcut. Losses against targets are the
training objective's business, not the model's.

Decoding (one new token per row) is bound by reading the weights. On CPU its few-row products go
through a small compiled kernel (``cpu_kernels``) that reads each weight once; where no C compiler
is found, ``prepare_for_decoding`` stores the projection weights column-major and a batched decode
step projects through a prepacked copy of the head (``PackedLinear``). Neither changes the function.
``torch.compile`` is not used (what was measured is in ``benchmarks/decode_vs_hf.py``).

Shape legend: B batch, T sequence, D model width, V vocabulary, L layers, E experts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from smallcode.model import cpu_kernels
from smallcode.model.attention import Attention
from smallcode.model.config import ModelConfig
from smallcode.model.kv_cache import CacheStep, KVCache
from smallcode.model.layers import RMSNorm, RotaryEmbedding
from smallcode.model.moe import MoE, MoEStats


class PackedLinear:
    """A weight reordered once into oneDNN's blocked layout, for products with a few rows on CPU.

    MKL's float32 product of a few rows with a large weight is slow: 8 rows by nano's 8192 x 256
    head took 4.9 ms on one AMD EPYC core inside a decode step, the prepacked oneDNN product 2.3 ms.
    The copy is rebuilt when the weight changes (new storage or a moved version counter), so a
    model trained between two generations is never decoded with stale weights.
    """

    def __init__(self, weight: torch.Tensor) -> None:
        self.key = (weight.data_ptr(), weight._version)
        self.packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach(), None)

    @staticmethod
    def usable(weight: torch.Tensor) -> bool:
        """oneDNN is there, the weight is a float32 CPU tensor and no gradient is wanted."""
        return (weight.device.type == "cpu" and weight.dtype == torch.float32 and torch.backends.mkldnn.is_available()
                and not torch.is_grad_enabled())

    def current(self, weight: torch.Tensor) -> bool:
        return self.key == (weight.data_ptr(), weight._version)

    def __call__(self, x_ND: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x_ND, self.packed, None, "none", [], "")


def _row_major(p: torch.Tensor) -> None:
    """Undo ``_column_major``: the same values stored contiguously again."""
    if p.device.type == "cpu" and not p.is_contiguous():
        p.data = p.data.contiguous()


def _column_major(p: torch.Tensor) -> None:
    """Keep ``p``'s shape and values but store its last two dimensions transposed."""
    if p.device.type == "cpu" and p.stride(-2) != 1:
        p.data = p.data.transpose(-2, -1).contiguous().transpose(-2, -1)


# Longest piece of a prompt fed through the cache at once: bounds the prefill's score matrix when
# the window is large (a full-attention model), at no cost in exactness.
PREFILL_CHUNK = 1024


@dataclass
class LMOutput:
    logits: torch.Tensor
    """(B, T, V) next-token logits."""
    balance_loss: torch.Tensor
    """Load-balance loss averaged over layers (0 for a dense model)."""
    z_loss: torch.Tensor
    """Router z-loss averaged over layers (0 for a dense model)."""
    expert_load: torch.Tensor | None
    """(L, E) share of routed assignments per layer and expert; None for a dense model."""

    def aux_loss(self, config: ModelConfig) -> torch.Tensor:
        """The router's weighted contribution to the training loss."""
        return config.balance_loss_coef * self.balance_loss + config.z_loss_coef * self.z_loss


@dataclass
class Trunk:
    hidden: torch.Tensor
    """(B, T, D) hidden states after the final norm, before the output projection."""
    balance_loss: torch.Tensor
    z_loss: torch.Tensor
    expert_load: torch.Tensor | None


class Block(nn.Module):
    def __init__(self, config: ModelConfig, layer: int = 0) -> None:
        super().__init__()
        self.attn_norm = RMSNorm(config.d_model, config.norm_eps)
        self.attn = Attention(config, layer)
        self.ffn_norm = RMSNorm(config.d_model, config.norm_eps)
        self.ffn = MoE(config)

    def forward(self, x_BTD: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, step: CacheStep | None = None
                ) -> tuple[torch.Tensor, MoEStats | None]:
        x_BTD = x_BTD + self.attn(self.attn_norm(x_BTD), cos, sin, step)
        h, stats = self.ffn(self.ffn_norm(x_BTD))
        return x_BTD + h, stats


class SmallCodeLM(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.d_model)
        self.blocks = nn.ModuleList(Block(config, i) for i in range(config.n_layers))
        self.norm = RMSNorm(config.d_model, config.norm_eps)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.embed.weight
        self.rope = RotaryEmbedding(config.hd, config.rope_base, config.max_seq_len)
        self._packed_head: PackedLinear | None = None
        self.reset_parameters()

    def __getstate__(self) -> dict:
        # oneDNN's packed tensor has no storage to copy or pickle; a copy repacks on first use.
        return {**self.__dict__, "_packed_head": None}

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Normal(0, init_std) everywhere; residual-output projections scaled by 1/sqrt(2L) (GPT-2)."""
        std = self.config.init_std
        out_std = std / math.sqrt(2 * self.config.n_layers)
        for name, p in self.named_parameters():
            if name.endswith("norm.weight"):
                p.fill_(1.0)
            elif name.endswith(("wo.weight", "w_down")):
                p.normal_(0.0, out_std)
            else:
                p.normal_(0.0, std)

    def forward(self, input_ids: torch.Tensor, cache: KVCache | None = None, last_only: bool = False) -> LMOutput:
        """Logits for ``input_ids`` (B, T).

        Without a cache the tokens sit at positions 0..T-1 (training, scoring). With one they
        continue each row of the cache, which they are appended to; inputs longer than the window
        (or than ``PREFILL_CHUNK``) are fed through in pieces. ``last_only`` computes logits for the
        last position only (prefill before sampling).
        """
        chunk = min(self.config.window, PREFILL_CHUNK)
        if cache is not None and input_ids.shape[1] > chunk:
            if last_only:  # keep nothing but the last piece's output
                for c in input_ids.split(chunk, dim=1):
                    out = self.forward(c, cache, last_only=True)
                return out
            outs = [self.forward(c, cache) for c in input_ids.split(chunk, dim=1)]
            return LMOutput(torch.cat([o.logits for o in outs], dim=1),
                            torch.stack([o.balance_loss for o in outs]).mean(),
                            torch.stack([o.z_loss for o in outs]).mean(), outs[-1].expert_load)
        t = self.trunk(input_ids, cache)
        h = t.hidden[:, -1:] if last_only else t.hidden
        if cache is not None and h.shape[1] == 1:
            return LMOutput(self._decode_head(h), t.balance_loss, t.z_loss, t.expert_load)
        return LMOutput(self.lm_head(h), t.balance_loss, t.z_loss, t.expert_load)

    def _decode_head(self, h_B1D: torch.Tensor) -> torch.Tensor:
        """The output projection of one position per row, through a prepacked weight where that is faster."""
        w = self.lm_head.weight
        if cpu_kernels.usable(h_B1D, w):
            return cpu_kernels.linear(h_B1D, w)
        if h_B1D.shape[0] == 1 or not PackedLinear.usable(w):
            return self.lm_head(h_B1D)
        if self._packed_head is None or not self._packed_head.current(w):
            self._packed_head = PackedLinear(w)
        return self._packed_head(h_B1D.view(h_B1D.shape[0], -1)).unsqueeze(1)

    @torch.no_grad()
    def prepare_for_decoding(self) -> None:
        """Lay the projection weights out for few-row products (CPU only): same values, shapes and state dict.

        Where the few-row kernel is built (``cpu_kernels``), it reads nn.Linear's row-major layout,
        so the weights stay (or go back to) row-major. Otherwise they are stored column-major: MKL
        streams an (out, in) matrix with its transpose contiguous about twice as fast for one row
        (one EPYC core, one row by 64 different 1024 x 256 matrices: 8.4 vs 4.7 GB/s; by the
        8192 x 256 head: 14 vs 5.4 GB/s). Only the storage order changes, so results agree to float32
        rounding. The embedding keeps its rows (it is read one token at a time), and so does a head
        tied to it.
        """
        if self.lm_head.weight.device.type != "cpu":
            return
        layout = _row_major if cpu_kernels.available() else _column_major
        for block in self.blocks:
            ffn = block.ffn
            for p in (block.attn.wqkv.weight, block.attn.wo.weight, ffn.experts.w_gate_up, ffn.experts.w_down):
                layout(p)
            if ffn.router is not None:
                layout(ffn.router.weight)
        if not self.config.tie_embeddings:
            layout(self.lm_head.weight)

    def trunk(self, input_ids: torch.Tensor, cache: KVCache | None = None) -> Trunk:
        """Everything but the output projection: the final normalised hidden states and router stats.

        Training objectives that fuse the projection with their loss start from here.
        """
        B, T = input_ids.shape
        step = None
        if cache is None:
            cos, sin = self.rope(torch.arange(T, device=input_ids.device))
            cos, sin = cos[:, None], sin[:, None]  # (T, 1, D) against (B, T, heads, D)
        else:
            step = cache.step(T, self.config.n_heads // self.config.n_kv_heads)
            cos, sin = self.rope(step.pos)
            cos, sin = cos[:, :, None], sin[:, :, None]
        x = self.embed(input_ids)
        stats: list[MoEStats] = []
        for block in self.blocks:
            x, s = block(x, cos, sin, step)
            if s is not None:
                stats.append(s)
        if step is not None:
            step.cache.commit(step)
        if stats:
            bal = torch.stack([s.balance_loss for s in stats]).mean()
            zl = torch.stack([s.z_loss for s in stats]).mean()
            load = torch.stack([s.load_E for s in stats])
        else:
            bal = zl = x.new_zeros(())
            load = None
        return Trunk(self.norm(x), bal, zl, load)

    def new_cache(self, batch: int, initial_slots: int = 256) -> KVCache:
        p = self.lm_head.weight
        return KVCache(self.config, batch, device=p.device, dtype=p.dtype, initial_slots=initial_slots)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())
