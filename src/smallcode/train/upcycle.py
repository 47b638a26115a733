"""Sparse upcycling: turn a dense smallcode model into a Mixture of Experts that computes the same function.

``upcycle(dense, n_experts, top_k, granularity=g)`` builds the MoE model whose experts are pieces of
the dense SwiGLU feed-forward of the same layer, whose router is freshly initialised (seeded), and
whose every other weight (embedding, attention, norms, output head, biases) is copied unchanged.
``upcycle_checkpoint`` does the same from checkpoint directory to checkpoint directory.

**Coarse experts (g = 1).** Every expert is a copy of the dense feed-forward ``f``. The router keeps
the ``top_k`` largest softmax probabilities of each token and renormalises them to sum to one
(``smallcode.model.moe.Router``), so a token's output is ``sum_k w_k * f(x) = f(x)``, the dense
output, whatever the router chose. This holds for any ``top_k`` and any router weights.

**Fine-grained experts (g > 1)**, as Qwen1.5-MoE and NVIDIA's upcycling of Nemotron-4 do (Megatron's
``--moe-upcycling-granularity``; He et al. 2024, "Upcycling Large Language Models into Mixture of
Experts"). The dense hidden layer of width ``d_ff`` is cut into ``g`` segments of ``d_ff / g`` units.
SwiGLU splits exactly along its hidden units: ``down(silu(gate x) * up x) = sum_s f_s(x)`` with
``f_s`` the same computation restricted to segment ``s``'s rows of gate/up and columns of down.
There are ``copies = n_experts / g`` copies of every segment; expert ``e = c * g + s`` is copy ``c``
of segment ``s``, its down projection multiplied by ``g``. Then ``top_k = m * g`` is required, and
the router is initialised so that the ``g`` experts of one copy share one router row: their logits,
hence their probabilities ``p_c / g``, are equal. The top ``m * g`` probabilities are therefore
exactly the ``g`` segments of the ``m`` most probable copies (ties between *different* copies have
probability zero for a random router), so every segment is picked exactly ``m`` times and, after
renormalisation, segment ``s`` receives the total weight ``sum_{c in top m} (p_c / g) / sum_{c in top m}
p_c = 1 / g``. The output is ``sum_s g * (1 / g) * f_s(x) = f(x)``: the dense function at step 0, up to
float rounding (a few ulps, far inside 1e-5 in float32; ``tests/train/test_upcycle.py`` checks g = 1,
2, 4). Megatron-LM's upcycling shares a router row among a copy's segments the same way (expert
``c * g + s``) and scales the experts by ``g`` when the top-k gates are renormalised; with
softmax-then-top-k gates that are not renormalised it scales by ``E * g / K`` instead, which gives the
dense function only where the router is uniform. We put the whole factor on the down projection;
Megatron spreads its cube root over the three SwiGLU matrices (the same function, other gradients).
Training makes the segment rows of a copy drift apart (each segment's
expert receives its own gradient), after which the router chooses segments freely.

**Router initialisation** (``router_init``): ``"normal"`` draws each copy's row from
Normal(0, ``router_std``) (default the config's ``init_std``) with a generator seeded by ``seed``
alone, so the same seed gives the same router on every machine (for g = 1 exactly today's router).
``"zero"`` starts every row at zero: all probabilities equal, so the first gates are uniform and the
balance loss alone shapes the router early on. With g > 1 all logits would tie, top-k could pick
segments unevenly and the equality above would break, so ``"zero"`` is refused there.

**Drop-Upcycling** (``drop_rate`` r; Nakamura et al., ICLR 2025): in every expert, ``round(r * h)`` of
its ``h`` hidden units (chosen at random, independently per expert and layer, seeded) are
re-initialised: their gate and up rows and their down column are drawn from a normal distribution
with the mean and standard deviation of the corresponding (scaled) parent matrix. The experts start
diverse instead of identical, at the price of the exact step-0 function; r = 0 keeps it.

A consequence worth knowing: at step 0 the language-model loss does not depend on the router at
all for g = 1 (the gates sum to one whichever experts are picked), so its gradient reaches the router
only once the experts have drifted apart; the balance and z losses train it from the first step.

This module does not change the architecture otherwise (width, attention are the parent's), does not
copy optimizer state, and refuses a parent that already has experts.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Literal

import torch

from smallcode.config import ConfigError
from smallcode.fileio import sha256_file
from smallcode.model.checkpoint import Checkpoint, save_checkpoint
from smallcode.model.config import ModelConfig
from smallcode.model.transformer import SmallCodeLM, model_from_state

RouterInit = Literal["normal", "zero"]
ROUTER_INITS: tuple[str, ...] = ("normal", "zero")
_GATE_UP, _DOWN = ".ffn.experts.w_gate_up", ".ffn.experts.w_down"


def _positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def upcycled_config(dense: ModelConfig, n_experts: int, top_k: int, granularity: int = 1) -> ModelConfig:
    """The parent's config with ``n_experts`` experts of ``d_ff / granularity`` units, routed top-``top_k``;
    refuses what cannot keep the parent's function."""
    if dense.n_experts != 1:
        raise ConfigError(f"upcycle needs a dense parent (n_experts == 1), this one already has "
                          f"{dense.n_experts} experts")
    if not _positive_int(n_experts) or n_experts < 2:
        raise ConfigError(f"upcycle: n_experts must be an integer >= 2, got {n_experts!r}")
    if not _positive_int(top_k) or not 1 <= top_k <= n_experts:
        raise ConfigError(f"upcycle: top_k must be between 1 and n_experts ({n_experts}), got {top_k!r}")
    if not _positive_int(granularity) or granularity < 1:
        raise ConfigError(f"upcycle: granularity must be an integer >= 1, got {granularity!r}")
    g = granularity
    if dense.d_ff % g:
        raise ConfigError(f"upcycle: the parent's d_ff ({dense.d_ff}) is not divisible by granularity {g}")
    if n_experts % g:
        raise ConfigError(f"upcycle: n_experts ({n_experts}) must be a multiple of granularity {g} "
                          "(every segment of the feed-forward has the same number of copies)")
    if top_k % g:
        raise ConfigError(f"upcycle: top_k ({top_k}) must be a multiple of granularity {g}, so that each token "
                          "gets every segment of the feed-forward equally often")
    return dataclasses.replace(dense, n_experts=n_experts, top_k=top_k, d_ff=dense.d_ff // g)


def _split_experts(gate_up: torch.Tensor, down: torch.Tensor, g: int, copies: int
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """(1, 2F, D), (1, D, F) dense weights -> (copies * g, 2F/g, D), (copies * g, D, F/g), copy-major."""
    _, two_f, d = gate_up.shape
    f, h = two_f // 2, two_f // 2 // g
    gate_SHD = gate_up[0, :f].reshape(g, h, d)
    up_SHD = gate_up[0, f:].reshape(g, h, d)
    seg_gate_up = torch.cat([gate_SHD, up_SHD], dim=1)  # each segment: its gate rows, then its up rows
    seg_down = down[0].reshape(d, g, h).permute(1, 0, 2) * g  # scaled by g: see the module docstring
    return (seg_gate_up.repeat(copies, 1, 1).contiguous(), seg_down.repeat(copies, 1, 1).contiguous())


def _drop(gate_up: torch.Tensor, down: torch.Tensor, rate: float, gen: torch.Generator
          ) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop-Upcycling: re-draw ``round(rate * h)`` hidden units of every expert from the matrices' statistics."""
    E, two_h, _ = gate_up.shape
    h = two_h // 2
    n = round(rate * h)
    if n == 0:
        return gate_up, down
    gate_up, down = gate_up.clone(), down.clone()
    stats = [(t.float().mean().item(), t.float().std().item()) for t in (gate_up[:, :h], gate_up[:, h:], down)]
    for e in range(E):
        units = torch.randperm(h, generator=gen)[:n]
        for (mean, std), rows in zip(stats[:2], (units, units + h), strict=True):
            fresh = torch.randn(n, gate_up.shape[2], generator=gen) * std + mean
            gate_up[e, rows] = fresh.to(gate_up.dtype).to(gate_up.device)
        mean, std = stats[2]
        fresh = torch.randn(down.shape[1], n, generator=gen) * std + mean
        down[e][:, units.to(down.device)] = fresh.to(down.dtype).to(down.device)
    return gate_up, down


@torch.no_grad()
def upcycle(dense: SmallCodeLM, n_experts: int, top_k: int, seed: int = 0, router_std: float | None = None,
            granularity: int = 1, drop_rate: float = 0.0, router_init: RouterInit = "normal") -> SmallCodeLM:
    """A MoE made of ``dense``'s feed-forward (see the module docstring for the construction and why it is exact).

    The new model lives on the parent's device and dtype and shares no storage with it. Random draws
    (router rows, dropped units) are made on the CPU in float32 from generators seeded by ``seed``
    alone, so they do not depend on the device or dtype.
    """
    config = upcycled_config(dense.config, n_experts, top_k, granularity)
    if router_init not in ROUTER_INITS:
        raise ConfigError(f"upcycle: router_init must be one of {list(ROUTER_INITS)}, got {router_init!r}")
    if router_init == "zero" and granularity > 1:
        raise ConfigError("upcycle: router_init 'zero' ties every expert, so top-k could not pick each segment "
                          f"equally (granularity {granularity}); use 'normal'")
    if not (isinstance(drop_rate, int | float) and 0.0 <= drop_rate <= 1.0):
        raise ConfigError(f"upcycle: drop_rate must be in [0, 1], got {drop_rate!r}")
    std = config.init_std if router_std is None else router_std
    if not (isinstance(std, int | float) and math.isfinite(std) and std > 0):
        raise ConfigError(f"upcycle: router_std must be > 0, got {router_std!r}")
    g, copies = granularity, n_experts // granularity
    gen = torch.Generator(device="cpu").manual_seed(seed)
    drop_gen = torch.Generator(device="cpu").manual_seed(seed + 1)

    state = dict(dense.state_dict())
    for i in range(config.n_layers):
        key = f"blocks.{i}"
        gate_up, down = _split_experts(state[key + _GATE_UP], state[key + _DOWN], g, copies)
        state[key + _GATE_UP], state[key + _DOWN] = _drop(gate_up, down, drop_rate, drop_gen)
        if router_init == "normal":
            rows_CD = torch.randn(copies, config.d_model, generator=gen) * std
        else:
            rows_CD = torch.zeros(copies, config.d_model)
        state[f"{key}.ffn.router.weight"] = rows_CD.repeat_interleave(g, dim=0)  # a copy's g segments share a row
    return model_from_state(dense, config, state)


def upcycle_checkpoint(dense_dir: str | Path, out_dir: str | Path, n_experts: int, top_k: int,
                       seed: int = 0, router_std: float | None = None, granularity: int = 1,
                       drop_rate: float = 0.0, router_init: RouterInit = "normal") -> Path:
    """Upcycle the checkpoint in ``dense_dir`` and write it, with the parent's tokenizer, to ``out_dir``.

    ``config.json`` of the result records the parent (``upcycled_from``: its path and the sha256 of
    its weights) and the upcycling choices (``upcycle``). The write is atomic (``save_checkpoint``).
    """
    dense_dir, out_dir = Path(dense_dir), Path(out_dir)
    if out_dir.resolve() == dense_dir.resolve():
        raise ConfigError(f"upcycle: --out {out_dir} is the parent checkpoint itself; choose another directory")
    parent = Checkpoint.open(dense_dir)
    upcycled_config(parent.config, n_experts, top_k, granularity)  # refuse before loading any weights
    moe = upcycle(parent.load_model(), n_experts, top_k, seed=seed, router_std=router_std, granularity=granularity,
                  drop_rate=drop_rate, router_init=router_init)
    choices: dict[str, object] = {"n_experts": n_experts, "top_k": top_k, "seed": seed,
                                  "router_std": moe.config.init_std if router_std is None else router_std}
    if (granularity, drop_rate, router_init) != (1, 0.0, "normal"):
        choices |= {"granularity": granularity, "drop_rate": drop_rate, "router_init": router_init}
    extra = {
        "upcycled_from": {"path": str(dense_dir.resolve()), "weights_sha256": sha256_file(parent.weights_file)},
        "upcycle": choices,
    }
    return save_checkpoint(moe, out_dir, tokenizer_file=parent.tokenizer_file, extra=extra)
