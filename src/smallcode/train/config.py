"""TrainConfig: one training stage (pretrain, distil, fine-tune) as a YAML file, and its sections.

Every stage of the recipe is the same loop with a different objective, data source and starting
point, so one dataclass describes them all; ``configs/`` holds one file per stage. Its sections are
typed too (``DataConfig``, ``DistillConfig``, ``ModelOverrides``), so a typo anywhere in a stage file
is an error when the file is loaded, naming the field. Relative paths are relative to the directory
the command runs in.

Not here: loading teachers or checkpoints, or anything that reads the disk beyond the YAML file.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from smallcode.config import Config, ConfigError, Partial
from smallcode.model.config import ModelConfig

KLDirection = Literal["forward", "reverse"]
TeacherMode = Literal["online", "offline"]
ModelOverrides = Annotated[dict[str, Any], Partial(ModelConfig)]
"""Some ModelConfig fields, checked by name and type when the stage is loaded, applied when it is built."""


@dataclass
class DataConfig(Config):
    kind: Literal["shards", "jsonl", "mbpp"] = "shards"
    """``shards``: a ``smallcode data prepare`` directory; ``jsonl``: prompt/completion or chat
    examples (loss on completions only); ``mbpp``: MBPP's training split from an MBPP data directory."""
    path: str = ""
    """The shard directory, or the JSONL file; for ``mbpp`` an optional directory holding ``mbpp/mbpp.jsonl``
    (empty: the copy shipped in the package)."""
    validation_path: str | None = None
    """JSONL only: held-out examples for the validation loss (none: no validation)."""
    tokenizer: str | None = None
    """JSONL/MBPP: the tokenizer (a file or a checkpoint directory); shards carry their own."""
    seq_len: int = 256
    """Tokens per training row."""
    fim_rate: float = 0.0
    """Shards only: share of documents turned into fill-in-the-middle examples."""

    def __post_init__(self) -> None:
        if self.seq_len < 2:
            raise ConfigError(f"DataConfig.seq_len must be an integer >= 2, got {self.seq_len!r}")
        if not 0.0 <= self.fim_rate <= 1.0:
            raise ConfigError(f"DataConfig.fim_rate must be in [0, 1], got {self.fim_rate!r}")


@dataclass
class DistillConfig(Config):
    teacher: str
    """The teacher: a smallcode checkpoint directory or a Hugging Face model directory (local path)."""
    kind: KLDirection = "forward"
    """Direction of the KL: forward KL(teacher || student) or reverse KL(student || teacher)."""
    temperature: float = 1.0
    """Softmax temperature applied to student and teacher alike; the KL is scaled by its square."""
    alpha: float = 0.5
    """Weight of cross-entropy against the labels: total = alpha * ce + (1 - alpha) * kd."""
    mode: TeacherMode = "online"
    """online: run the teacher every step; offline: read its top-k log-probs from ``cache``."""
    cache: str | None = None
    """Directory of the teacher cache (``smallcode teacher-cache``); required offline, unused online."""
    top_k: int = 32
    """Teacher log-probs per token used offline (at most the cache's top_k)."""

    def __post_init__(self) -> None:
        if not self.teacher:
            raise ConfigError(f"DistillConfig.teacher must be a path, got {self.teacher!r}")
        if not math.isfinite(self.temperature) or self.temperature <= 0:
            raise ConfigError(f"DistillConfig.temperature must be a finite number > 0, got {self.temperature!r}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ConfigError(f"DistillConfig.alpha must be in [0, 1], got {self.alpha!r}")
        if self.top_k < 1:
            raise ConfigError(f"DistillConfig.top_k must be an integer >= 1, got {self.top_k!r}")
        if self.mode == "offline" and not self.cache:
            raise ConfigError("DistillConfig.cache must name the teacher cache directory when mode is 'offline'")
        if self.mode == "online" and self.cache is not None:
            raise ConfigError("DistillConfig.cache is only read when mode is 'offline'; remove it or set mode")
        if self.mode == "offline" and self.kind == "reverse":
            raise ConfigError(
                "DistillConfig: kind 'reverse' needs the teacher's full distribution, which an offline top-k "
                "cache does not hold; use mode 'online' or kind 'forward'"
            )


@dataclass
class TrainConfig(Config):
    objective: Literal["next_token", "distill"] = "next_token"
    """What the stage minimises: next-token cross-entropy, or distillation from a teacher."""
    model: str | None = "nano"
    """Preset to build a fresh model from (ignored when ``init`` is given)."""
    model_overrides: ModelOverrides = field(default_factory=dict)
    """Fields of the preset (or of the ``init`` checkpoint's config) to change, e.g. ``{d_model: 384}``."""
    init: str | None = None
    """A checkpoint directory to start from (the distilled student before upcycling, ...)."""
    data: DataConfig = field(default_factory=DataConfig)
    """Where the batches come from."""
    distill: DistillConfig | None = None
    """Teacher, KL direction, temperature, mixing weight, online/offline; required when objective is distill."""
    steps: int = 200
    """Optimizer steps."""
    batch_size: int = 8
    """Rows per micro-batch on each process."""
    grad_accum: int = 1
    """Micro-batches per optimizer step; the global batch is batch_size x grad_accum x processes."""
    optimizer: Literal["adamw", "muon"] = "adamw"
    """``adamw`` on everything, or ``muon`` for the blocks' matrices with AdamW for the embedding, head,
    norms and router (``train/optim.py``)."""
    lr: float = 3e-3
    """Peak learning rate (of AdamW)."""
    muon_lr: float = 0.02
    """Peak learning rate of Muon (``optimizer: muon``); follows the same schedule as ``lr``."""
    muon_momentum: float = 0.95
    """Muon's momentum."""
    schedule: Literal["cosine", "wsd"] = "cosine"
    """``cosine``: warm-up then cosine decay; ``wsd``: warm-up, constant, then a linear decay over the
    last ``decay_fraction`` of the steps."""
    decay_fraction: float = 0.5
    """``wsd`` only: share of the steps spent decaying."""
    min_lr_ratio: float = 0.1
    """The schedule ends at lr x min_lr_ratio at the last step."""
    warmup_steps: int = 20
    """Linear warm-up from 0 to lr."""
    weight_decay: float = 0.1
    """Decoupled weight decay, on matrices only (not norms)."""
    betas: tuple[float, float] = (0.9, 0.95)
    """AdamW betas."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this (0 disables clipping, not the norm check)."""
    seed: int = 0
    """Seeds model initialisation and the data order."""
    zero_init: bool = False
    """From scratch only: residual-output projections and the head start at zero
    (``SmallCodeLM.reset_parameters(zero_outputs=True)``)."""
    eval_every: int = 100
    """Validation loss every this many steps (and at the end); 0: only at the end."""
    eval_batches: int = 8
    """Validation batches per evaluation (each process)."""
    save_every: int = 50
    """A resumable checkpoint every this many steps (and at the end); 0: only at the end."""
    keep_checkpoints: int = 2
    """Resumable checkpoints kept on disk (the newest ones)."""
    precision: Literal["auto", "float32", "bfloat16"] = "auto"
    """auto: bf16 autocast on CUDA, float32 on CPU."""
    compile: bool = False
    """torch.compile each block."""
    activation_checkpointing: bool = False
    """Recompute each block's activations in backward instead of storing them."""
    parallel: Literal["ddp", "fsdp"] = "ddp"
    """Under torchrun with several processes: DistributedDataParallel or FSDP2 (fully_shard)."""
    max_bad_steps: int = 3
    """Consecutive steps with a non-finite loss or gradient norm that are skipped before the run stops."""
    tensorboard: bool = False
    """Also write the metrics to TensorBoard (needs ``pip install tensorboard``)."""
    wandb: bool = False
    """Also log the metrics to Weights & Biases (needs ``pip install wandb``; offline unless configured)."""

    def __post_init__(self) -> None:
        if self.objective == "distill" and self.distill is None:
            raise ConfigError("TrainConfig.distill is required when objective is distill")
        if self.model is None and self.init is None:
            raise ConfigError("TrainConfig needs a model preset or an init checkpoint")
        if self.zero_init and self.init is not None:
            raise ConfigError("TrainConfig.zero_init initialises a model from scratch; this stage starts from "
                              f"the checkpoint {self.init!r}")
        for name in ("steps", "batch_size", "grad_accum", "keep_checkpoints"):
            value = getattr(self, name)
            if value < 1:
                raise ConfigError(f"TrainConfig.{name} must be an integer >= 1, got {value!r}")
        for name in ("warmup_steps", "eval_every", "save_every", "eval_batches", "max_bad_steps"):
            value = getattr(self, name)
            if value < 0:
                raise ConfigError(f"TrainConfig.{name} must be an integer >= 0, got {value!r}")
        for name in ("lr", "muon_lr"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"TrainConfig.{name} must be > 0, got {getattr(self, name)!r}")
        if not 0.0 <= self.muon_momentum < 1.0:
            raise ConfigError(f"TrainConfig.muon_momentum must be in [0, 1), got {self.muon_momentum!r}")
        if not 0.0 < self.decay_fraction <= 1.0:
            raise ConfigError(f"TrainConfig.decay_fraction must be in (0, 1], got {self.decay_fraction!r}")
        if self.optimizer == "muon" and self.parallel == "fsdp":
            raise ConfigError("optimizer: muon orthogonalises whole matrices, which FSDP shards; use parallel: ddp "
                              "or optimizer: adamw")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ConfigError(f"TrainConfig.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio!r}")
        if self.weight_decay < 0 or self.grad_clip < 0:
            raise ConfigError("TrainConfig.weight_decay and grad_clip must be >= 0")
        if not all(0.0 <= b < 1.0 for b in self.betas):
            raise ConfigError(f"TrainConfig.betas must be two numbers in [0, 1), got {self.betas!r}")
