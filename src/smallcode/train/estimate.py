"""What a recipe will cost, computed from its configs: tokens, FLOPs, GPU-hours, memory per GPU.

Nothing here is measured; every figure follows from the configs and a few stated inputs:

* **Tokens** of a stage: ``steps x batch_size x seq_len x grad_accum x gpus`` (``gpus`` from the recipe).
* **FLOPs**: ``ModelConfig.flops_per_token(seq_len)`` (6 x active parameters plus the attention scores
  over the visible keys) times the tokens; distillation with an online teacher adds the teacher's
  forward pass (a third of its training cost) per token.
* **GPU-hours** = FLOPs / (peak x MFU) / 3600, with the peak (dense bf16, e.g. 989 TFLOP/s for an H100
  SXM) and the MFU as inputs: MoE training at this size commonly reaches 0.25-0.45.
* **Memory per GPU** under FSDP2 full sharding over ``gpus`` processes, float32 master weights and
  bf16 autocast: weights, gradients and AdamW's two moments (16 bytes a parameter) divided by
  ``gpus``; plus the largest block gathered whole for its forward (float32); plus activations. With
  activation checkpointing only each block's input is kept (B x T x D float32 per layer) and one
  block's internals are live at a time; without it every block's internals are kept. A block's
  internals are counted as the tensors backward needs: about 2 x D (norms, residual), the
  QKV and attention outputs, the attention's log-sum-exp, and top_k x 3 x d_ff for the routed
  experts' SwiGLU, in bf16 (2 bytes), per token. The output layer's logits are chunked
  (``linear_cross_entropy``) and not counted. A teacher run online adds its weights, whole on every
  GPU (the trainer loads it in each process, unsharded): 4 bytes a parameter for a teacher this
  recipe trained (saved in float32), 2 for an imported one (Hugging Face checkpoints ship in bf16).
* **Distillation's logits.** The distillation objective computes the student's and the teacher's
  full-vocabulary logits for the micro-batch, not in chunks: online, about seven float32 tensors of
  ``batch_size x seq_len x vocab`` (student logits in bf16 and float32, the teacher's likewise, the
  teacher's log-probabilities and probabilities, the cross-entropies' saved softmax and gradient);
  offline, four (the student's side). With a 150K-token vocabulary this is the largest item.
  These are lower bounds of the working set: allocator slack and communication buffers come on top.

The stages without training are followed for their shapes: an import reads the Hugging Face
``config.json`` of ``import_from`` (or of the stage's ``import_config`` when the weights are not on
this machine), windowing changes the window, pruning the feed-forward width, upcycling the experts
(``granularity`` cuts each into finer ones).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from smallcode.config import ConfigError
from smallcode.model import ModelConfig
from smallcode.model.checkpoint import Checkpoint
from smallcode.train.config import TrainConfig

if TYPE_CHECKING:
    from smallcode.train.recipe import RecipeConfig, StageSpec

KD_LOGIT_TENSORS = {"online": 7, "offline": 4}
"""Float32 (tokens x vocab) tensors alive at once in a distillation step (see the module docstring)."""

@dataclass
class StageEstimate:
    name: str
    model: ModelConfig
    tokens: float
    flops: float
    gpu_hours: float
    memory_gib: float
    """Per GPU."""


def stage_model(cfg: TrainConfig, earlier: dict[str, ModelConfig], init_from: str | None) -> ModelConfig:
    """The model a stage trains: its preset, or the model of the stage it starts from."""
    if init_from is not None:
        return earlier[init_from].replace(**cfg.model_overrides)
    if cfg.init is not None and Path(cfg.init).is_dir():
        return Checkpoint.open(cfg.init).config
    assert cfg.model is not None
    return ModelConfig.preset(cfg.model, **cfg.model_overrides)


def block_params(m: ModelConfig) -> int:
    return (m.num_params() - 2 * m.vocab_size * m.d_model) // m.n_layers


def memory_per_gpu(m: ModelConfig, cfg: TrainConfig, gpus: int, teacher: ModelConfig | None,
                   teacher_bytes_per_param: int = 2) -> float:
    """Bytes per GPU (see the module docstring for what is counted)."""
    sharded_state = 16 * m.num_params() / gpus
    gathered_block = 4 * block_params(m)
    tokens = cfg.batch_size * cfg.data.seq_len
    qkv = (m.n_heads + 2 * m.n_kv_heads) * m.hd
    internals = tokens * 2 * (2 * m.d_model + qkv + m.n_heads * m.hd + m.top_k * 3 * m.d_ff) + tokens * m.n_heads * 4
    kept = tokens * m.d_model * 4 * m.n_layers
    activations = kept + internals if cfg.activation_checkpointing else internals * m.n_layers
    teacher_bytes = teacher_bytes_per_param * teacher.num_params() if teacher is not None else 0
    logits = 0
    if cfg.objective == "distill" and cfg.distill is not None:
        logits = KD_LOGIT_TENSORS[cfg.distill.mode] * 4 * tokens * m.vocab_size
    return sharded_state + gathered_block + activations + teacher_bytes + logits


def imported_model(recipe: RecipeConfig, spec: StageSpec) -> ModelConfig:
    """The model an import stage makes, from the Hugging Face ``config.json`` it names."""
    from smallcode.export.hf_import import hf_model_config

    source = Path(recipe.import_source()) / "config.json"
    path = source if source.is_file() else Path(spec.import_config) if spec.import_config else None
    if path is None or not path.is_file():
        raise ConfigError(f"stage {spec.name!r}: {source} is not on this machine and the stage names no "
                          "import_config (a Hugging Face config.json of the model) to estimate from")
    return hf_model_config(json.loads(path.read_text()))


def derived_model(recipe: RecipeConfig, spec: StageSpec, models: dict[str, ModelConfig]) -> ModelConfig:
    """The model a stage without training makes (import, prune, window, upcycle), from the earlier ones."""
    from smallcode.train.upcycle import upcycled_config
    from smallcode.train.window import windowed_config

    if spec.import_from is not None:
        return imported_model(recipe, spec)
    if spec.upcycle_from is not None:
        # shapes only: the run itself refuses a parent that already has experts
        parent = models[spec.upcycle_from].replace(n_experts=1, top_k=1)
        return upcycled_config(parent, spec.experts, spec.top_k, spec.granularity)
    if spec.prune_from is not None:
        return models[spec.prune_from].replace(d_ff=spec.d_ff)
    assert spec.window_from is not None
    return windowed_config(models[spec.window_from], spec.window, spec.n_global)


def estimate_recipe(recipe_path: str | Path, gpus: int | None = None, peak_tflops: float = 989.0,
                    mfu: float = 0.35) -> list[StageEstimate]:
    """Every training stage's tokens, FLOPs, GPU-hours and memory per GPU (see the module docstring)."""
    from smallcode.train.recipe import RecipeConfig

    recipe = RecipeConfig.load(recipe_path)
    gpus = gpus or recipe.gpus
    models: dict[str, ModelConfig] = {}
    out = []
    for spec in recipe.stages:
        if spec.config is None:
            models[spec.name] = derived_model(recipe, spec, models)
            continue
        assert spec.config is not None
        cfg = TrainConfig.load(spec.config)
        m = stage_model(cfg, models, spec.init_from)
        models[spec.name] = m
        teacher = models.get(spec.teacher_from) if spec.teacher_from else None
        tokens = float(cfg.steps * cfg.batch_size * cfg.data.seq_len * cfg.grad_accum * gpus)
        per_token = m.flops_per_token(cfg.data.seq_len, training=True)
        online = cfg.distill is None or cfg.distill.mode == "online"
        if teacher is not None and online:
            per_token += teacher.flops_per_token(cfg.data.seq_len, training=False)
        flops = per_token * tokens
        hours = flops / (peak_tflops * 1e12 * mfu) / 3600
        imported = teacher is not None and recipe.imports and spec.teacher_from == recipe.stages[0].name
        mem = memory_per_gpu(m, cfg, gpus, teacher if online else None, 2 if imported else 4)
        out.append(StageEstimate(spec.name, m, tokens, flops, hours, mem / 2**30))
    return out


def _count(x: float) -> str:
    return f"{x / 1e9:,.0f}B" if x >= 1e9 else f"{x / 1e6:,.1f}M"


def _hours(h: float) -> str:
    return f"{h:,.0f}" if h >= 10 else f"{h:.2g}"


def estimate_table(stages: list[StageEstimate], gpus: int, peak_tflops: float, mfu: float) -> str:
    lines = [f"Estimated for {gpus} GPUs at {peak_tflops:g} TFLOP/s peak and MFU {mfu:g}:", "",
             "| stage | params total / active | tokens | FLOPs | GPU-hours | wall-clock days | memory per GPU |",
             "|---|---|---|---|---|---|---|"]
    for s in stages:
        lines.append(f"| {s.name} | {s.model.num_params() / 1e9:.2f}B / {s.model.num_active_params() / 1e9:.2f}B | "
                     f"{_count(s.tokens)} | {s.flops:.2e} | {_hours(s.gpu_hours)} | {s.gpu_hours / gpus / 24:.2g} | "
                     f"{s.memory_gib:.1f} GiB |")
    total_h = sum(s.gpu_hours for s in stages)
    lines.append(f"| **total** | | {_count(sum(s.tokens for s in stages))} | {sum(s.flops for s in stages):.2e} | "
                 f"**{_hours(total_h)}** | {total_h / gpus / 24:.2g} | |")
    return "\n".join(lines)
