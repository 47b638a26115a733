"""SmallCodeLM: embedding, pre-norm blocks (attention, then MoE or dense feed-forward), norm, head.

Read top to bottom: ``Block`` is attention + feed-forward with residuals; ``SmallCodeLM`` stacks
them and returns logits with the router's auxiliary losses and per-layer expert loads. Passing a
``KVCache`` continues its sequences instead of starting at position 0 (the inference path). Dense and
MoE models share every line but ``MoE``'s one-expert shortcut. Losses against targets are the
training objective's business, not the model's.

This is the reference network: every product goes through its ``nn.Linear`` or ``MoE`` module, and
one forward path serves training, scoring and decoding, whatever the torch mode. Runtime tricks for
decoding (compiled few-row kernels, weight layouts, a prepacked head) are swapped in by
``smallcode.runtime.cpu_decode`` and compute the same function.

Shape legend: B batch, T sequence, D model width, V vocabulary, L layers, E experts.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import nn

from smallcode.model.attention import Attention
from smallcode.model.config import ModelConfig
from smallcode.model.kv_cache import CacheStep, KVCache
from smallcode.model.layers import RMSNorm, RotaryEmbedding
from smallcode.model.moe import MoE, MoEStats

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
        self.rope = RotaryEmbedding.for_config(config)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self, zero_outputs: bool = False) -> None:
        """Normal(0, init_std) everywhere but biases (zero); residual-output projections scaled by 1/sqrt(2L) (GPT-2).

        ``zero_outputs``: the residual-output projections and an untied head start at zero instead
        (the nanoGPT speedruns' initialisation): every block starts as the identity and the first
        prediction is uniform, so early steps are not spent undoing random outputs.
        """
        std = self.config.init_std
        out_std = 0.0 if zero_outputs else std / math.sqrt(2 * self.config.n_layers)
        for name, p in self.named_parameters():
            if name.endswith("norm.weight"):
                p.fill_(1.0)
            elif name.endswith(".bias"):
                p.zero_()
            elif name.endswith(("wo.weight", "w_down")):
                p.normal_(0.0, out_std) if out_std else p.zero_()
            elif zero_outputs and name == "lm_head.weight" and not self.config.tie_embeddings:
                p.zero_()
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
        return LMOutput(self.lm_head(h), t.balance_loss, t.z_loss, t.expert_load)

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

    @property
    def device(self) -> torch.device:
        return self.lm_head.weight.device

    def new_cache(self, batch: int, initial_slots: int = 256, spare: int = 0) -> KVCache:
        p = self.lm_head.weight
        return KVCache(self.config, batch, device=p.device, dtype=p.dtype, initial_slots=initial_slots, spare=spare)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


@torch.no_grad()
def model_from_state(parent: SmallCodeLM, config: ModelConfig, state: dict[str, torch.Tensor]) -> SmallCodeLM:
    """A model of ``config`` holding ``state`` (copied in), on ``parent``'s device and dtype, with its
    RoPE tables and training mode: how upcycling and pruning turn a trained model into a new shape.

    Built on the meta device, since a full random initialisation would be thrown away; the RoPE
    geometry is the parent's (``to_empty`` leaves the tables uninitialised, so they are copied).
    """
    ref = parent.lm_head.weight
    with torch.device("meta"):
        model = SmallCodeLM(config)
    model = model.to_empty(device=ref.device).to(ref.dtype)
    if config.tie_embeddings:
        model.lm_head.weight = model.embed.weight
    model.rope = copy.deepcopy(parent.rope)
    model.load_state_dict(state, strict=True)
    return model.train(parent.training)
