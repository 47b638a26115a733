"""Sparse upcycling: turn a dense smallcode model into a Mixture of Experts that computes the same function.

``upcycle(dense, n_experts, top_k)`` builds the MoE model whose every expert is a copy of the dense
SwiGLU feed-forward of the same layer, whose router is freshly initialised (normal, seeded), and
whose every other weight (embedding, attention, norms, output head) is copied unchanged.
``upcycle_checkpoint`` does the same from checkpoint directory to checkpoint directory.

Why the upcycled model equals its parent at step 0: the router keeps the ``top_k`` largest softmax
probabilities of each token and renormalises them to sum to one (``smallcode.model.moe.Router``), so
a token's output is ``sum_k w_k * expert_k(x)`` with ``sum_k w_k = 1``. Every expert being the same
function ``f``, that is ``f(x) * sum_k w_k = f(x)``, the dense output, whatever the router chose. The
equality holds for any ``top_k`` (with ``top_k = 1`` the single weight is exactly 1), up to float
rounding: the grouped matmul and the weighted sum add a few ulps, well inside 1e-5 in float32.
If the router ever stops renormalising, this argument breaks (the output would be scaled by the
kept probability mass) and the step-0 test in ``tests/train/test_upcycle.py`` fails.

A consequence worth knowing: at step 0 the language-model loss does not depend on the router at
all (the gates sum to one whichever experts are picked), so its gradient reaches the router only
once the experts have drifted apart. The experts drift because each receives the gradient of the
tokens routed to it, scaled by its gate; the balance and z losses train the router from the first
step. Training after upcycling is the training loop's business, not this module's.

This module does not change the architecture otherwise (width, expert hidden size, attention are
the parent's), does not copy optimizer state, and refuses a parent that already has experts.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from smallcode.config import ConfigError
from smallcode.fileio import sha256_file
from smallcode.model.checkpoint import Checkpoint, save_checkpoint
from smallcode.model.config import ModelConfig
from smallcode.model.transformer import SmallCodeLM, model_from_state

_EXPERT_SUFFIXES = (".ffn.experts.w_gate_up", ".ffn.experts.w_down")


def upcycled_config(dense: ModelConfig, n_experts: int, top_k: int) -> ModelConfig:
    """The parent's config with ``n_experts`` experts routed top-``top_k``; refuses what cannot work."""
    if dense.n_experts != 1:
        raise ConfigError(f"upcycle needs a dense parent (n_experts == 1), this one already has "
                          f"{dense.n_experts} experts")
    if isinstance(n_experts, bool) or not isinstance(n_experts, int) or n_experts < 2:
        raise ConfigError(f"upcycle: n_experts must be an integer >= 2, got {n_experts!r}")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= n_experts:
        raise ConfigError(f"upcycle: top_k must be between 1 and n_experts ({n_experts}), got {top_k!r}")
    return dataclasses.replace(dense, n_experts=n_experts, top_k=top_k)


@torch.no_grad()
def upcycle(dense: SmallCodeLM, n_experts: int, top_k: int, seed: int = 0,
            router_std: float | None = None) -> SmallCodeLM:
    """A MoE copy of ``dense``: every expert the dense feed-forward, the router fresh (see module docstring).

    The router weights are drawn from Normal(0, ``router_std``) (default: the config's ``init_std``,
    what a freshly built model would use) with a generator seeded by ``seed`` alone, so the same seed
    gives the same router on every machine. The new model lives on the parent's device and dtype and
    shares no storage with it.
    """
    config = upcycled_config(dense.config, n_experts, top_k)
    std = config.init_std if router_std is None else router_std
    if not std > 0:
        raise ConfigError(f"upcycle: router_std must be > 0, got {router_std!r}")
    gen = torch.Generator(device="cpu").manual_seed(seed)

    state = dict(dense.state_dict())
    for key, value in state.items():
        if key.endswith(_EXPERT_SUFFIXES):
            state[key] = value.expand(n_experts, *value.shape[1:])  # (1, ., .) -> (E, ., .), copied on load
    for i in range(config.n_layers):
        # Drawn on the CPU in float32 so the router depends on the seed only, not on device or dtype.
        router_ED = torch.randn(n_experts, config.d_model, generator=gen) * std
        state[f"blocks.{i}.ffn.router.weight"] = router_ED
    return model_from_state(dense, config, state)


def upcycle_checkpoint(dense_dir: str | Path, out_dir: str | Path, n_experts: int, top_k: int,
                       seed: int = 0, router_std: float | None = None) -> Path:
    """Upcycle the checkpoint in ``dense_dir`` and write it, with the parent's tokenizer, to ``out_dir``.

    ``config.json`` of the result records the parent (``upcycled_from``: its path and the sha256 of
    its weights) and the upcycling choices (``upcycle``). The write is atomic (``save_checkpoint``).
    """
    dense_dir, out_dir = Path(dense_dir), Path(out_dir)
    if out_dir.resolve() == dense_dir.resolve():
        raise ConfigError(f"upcycle: --out {out_dir} is the parent checkpoint itself; choose another directory")
    parent = Checkpoint.open(dense_dir)
    upcycled_config(parent.config, n_experts, top_k)  # refuse before loading any weights
    moe = upcycle(parent.load_model(), n_experts, top_k, seed=seed, router_std=router_std)
    extra = {
        "upcycled_from": {"path": str(dense_dir.resolve()), "weights_sha256": sha256_file(parent.weights_file)},
        "upcycle": {"n_experts": n_experts, "top_k": top_k, "seed": seed,
                    "router_std": moe.config.init_std if router_std is None else router_std},
    }
    return save_checkpoint(moe, out_dir, tokenizer_file=parent.tokenizer_file, extra=extra)
