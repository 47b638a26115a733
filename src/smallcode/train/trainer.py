"""The one training loop: every stage of the recipe is this loop with another objective and start.

``Trainer(config, run_dir).run(resume=True)`` builds the data source, the model (fresh from a
preset, or from a checkpoint), the objective (next-token or distillation) and the optimizers
(AdamW, or Muon for the blocks' matrices with AdamW for the rest: ``optim.py``), then runs
``config.steps`` optimizer steps of ``grad_accum`` micro-batches each. Around that loop:

* **Parallelism.** Under ``torchrun`` the model is wrapped in DDP or FSDP2 (``distributed.py``);
  each process reads its own rows of the same global batch, so one process with batch 4 and two
  with batch 2 see the same data.
* **Precision.** bf16 autocast on CUDA (``precision: auto``), float32 on CPU.
* **Resume.** A checkpoint every ``save_every`` steps holds model, optimizer, step, RNG and config
  (``train/checkpoint.py``); batches are a pure function of the step, so a resumed run repeats
  the uninterrupted one bit for bit on CPU. Metrics logged after the checkpoint are dropped on
  resume, so ``metrics.jsonl`` reads as one run.
* **Non-finite steps.** A step whose loss or gradient norm is not finite is not applied (its
  gradients are dropped) and counted; after ``max_bad_steps`` such steps in a row the run stops
  with a message naming the step. A checkpoint is never written from non-finite weights.
* **Observability.** One JSON line per step (loss, cross-entropy, auxiliary losses, expert-load
  entropy and extremes, tokens/s, lr, grad norm) and per evaluation in ``metrics.jsonl``, a tqdm
  bar, ``loss.png`` at the end, and TensorBoard / W&B when asked for.

What it does not do: choose hyper-parameters, or build tokenizers and shards (``recipe.py``
runs those stages), or schedule several stages (also ``recipe.py``).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from smallcode.config import ConfigError
from smallcode.errors import UserError
from smallcode.fileio import JsonlLog, atomic_write_json, atomic_write_text, read_jsonl
from smallcode.model import ModelConfig, SmallCodeLM
from smallcode.model.checkpoint import Checkpoint, save_checkpoint
from smallcode.train.checkpoint import latest_checkpoint, load_train_state, save_train_checkpoint, saved_train_config
from smallcode.train.config import TrainConfig
from smallcode.train.distributed import DistInfo, all_reduce_mean, all_reduce_sum, barrier, init_distributed, wrap_model
from smallcode.train.objectives import linear_cross_entropy, next_token_objective
from smallcode.train.optim import Muon, build_optimizers, lr_at
from smallcode.train.sources import Batch, DataSource, build_source

Objective = Callable[[SmallCodeLM, Batch], tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]]

# Config fields that may change between a run and its resumption without changing what is computed.
RESUMABLE_CHANGES = {"eval_every", "eval_batches", "save_every", "keep_checkpoints", "max_bad_steps",
                     "tensorboard", "wandb"}
# Model fields a stage may change on a checkpoint it starts from (nothing that changes shapes).
INIT_OVERRIDABLE = {"balance_loss_coef", "z_loss_coef"}


class TrainingError(UserError, RuntimeError):
    """The run cannot go on (non-finite steps, a mismatched resume); the message says why and what to do."""


@dataclass
class StageResult:
    run_dir: Path
    final: Path
    """A model checkpoint (no optimizer state) of the last step."""
    steps: int
    tokens: int
    skipped_steps: int
    val_loss: float | None
    wall_s: float


class LossModule(nn.Module):
    """The model and its objective as one module, so DDP/FSDP hooks see the whole loss computation."""

    def __init__(self, model: SmallCodeLM, objective: Objective) -> None:
        super().__init__()
        self.model = model
        self.objective = objective

    def forward(self, batch: Batch, evaluate: bool = False) -> tuple[torch.Tensor, torch.Tensor, dict]:
        if evaluate:  # validation always reports plain cross-entropy, whatever the objective
            trunk = self.model.trunk(batch["input_ids"])
            labels = batch["labels"].reshape(-1)
            ce = linear_cross_entropy(trunk.hidden.flatten(0, 1), self.model.lm_head.weight, labels)
            return ce, ce, {"tokens": (labels != -100).sum()}
        return self.objective(self.model, batch)


def expert_load_stats(load_LE: torch.Tensor) -> dict[str, float]:
    """Mean over layers of the load's entropy / log E (1 = balanced); extremes as multiples of uniform."""
    E = load_LE.shape[-1]
    p = load_LE.float().clamp_min(0)
    p = p / p.sum(-1, keepdim=True).clamp_min(1e-12)
    entropy = -(p * p.clamp_min(1e-12).log()).sum(-1) / math.log(E)
    return {"expert_load_entropy": entropy.mean().item(), "expert_load_max": (p.max() * E).item(),
            "expert_load_min": (p.min() * E).item()}


def _flat_full_state(model: SmallCodeLM, info: DistInfo, fsdp: bool) -> dict[str, torch.Tensor]:
    if not fsdp:
        return {k: v.detach().cpu() for k, v in model.state_dict().items()}
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


class Trainer:
    def __init__(self, config: TrainConfig, run_dir: str | Path, objective: Objective | None = None,
                 show_progress: bool = True) -> None:
        self.config = config
        self.run_dir = Path(run_dir)
        self.info = init_distributed()
        self.show_progress = show_progress and self.info.is_main
        self.source: DataSource = build_source(config.data, config.batch_size, config.seed, self.info.rank,
                                               self.info.world_size)
        self.model = self._build_model().to(self.info.device)
        if self.model.config.vocab_size != self.source.tokenizer.vocab_size:
            raise ConfigError(f"the model's vocab_size ({self.model.config.vocab_size}) differs from the "
                              f"tokenizer's ({self.source.tokenizer.vocab_size}, {self.source.tokenizer_file})")
        self.objective = objective or self._build_objective()
        if config.activation_checkpointing:
            for block in self.model.blocks:
                _checkpoint_block(block)
        if config.compile:
            for block in self.model.blocks:
                block.compile()
        self.fsdp = self.info.enabled and config.parallel == "fsdp"
        self.module = wrap_model(LossModule(self.model, self.objective), self.model.blocks, self.info,
                                 config.parallel)
        self.optimizers = build_optimizers(self.model, config.lr, config.weight_decay, tuple(config.betas),
                                           config.optimizer, config.muon_lr, config.muon_momentum)
        self.autocast = (torch.autocast("cuda", dtype=torch.bfloat16)
                         if self.info.device.type == "cuda" and config.precision in ("auto", "bfloat16")
                         else contextlib.nullcontext())
        self.tokens_per_step = (config.batch_size * config.data.seq_len * config.grad_accum * self.info.world_size)

    # ------------------------------------------------------------------ building
    def _build_model(self) -> SmallCodeLM:
        cfg = self.config
        if cfg.init is not None:
            init = Checkpoint.open(cfg.init)
            bad = sorted(set(cfg.model_overrides) - INIT_OVERRIDABLE)
            if bad:
                raise ConfigError(f"model_overrides {bad} would change the shapes of {cfg.init}; "
                                  f"only {sorted(INIT_OVERRIDABLE)} can change on a checkpoint")
            model = init.load_model()
            if cfg.model_overrides:
                model.config = init.config.replace(**cfg.model_overrides)  # loss weights only: read per step
            if init.tokenizer_file is not None and init.load_tokenizer().hash != self.source.tokenizer.hash:
                raise ConfigError(f"{cfg.init} was trained with another tokenizer than the data "
                                  f"({self.source.tokenizer_file})")
            return model
        torch.manual_seed(cfg.seed)
        model = SmallCodeLM(ModelConfig.preset(cfg.model, **cfg.model_overrides))
        if cfg.zero_init:
            model.reset_parameters(zero_outputs=True)
        return model

    def _build_objective(self) -> Objective:
        if self.config.objective == "next_token":
            return next_token_objective
        from smallcode.train.distill import build_distill_objective

        assert self.config.distill is not None  # TrainConfig requires it for this objective
        return build_distill_objective(self.config.distill, self.model.config.vocab_size,
                                       self.source.tokenizer.hash, self.config.data.seq_len, self.info.device)

    # ------------------------------------------------------------------ the loop
    def run(self, resume: bool = False) -> StageResult:
        cfg, info = self.config, self.info
        summary_path = self.run_dir / "summary.json"
        start, skipped, bad_run = 0, 0, 0
        ckpt = latest_checkpoint(self.run_dir)
        if ckpt is not None:
            if not resume:
                raise TrainingError(f"{self.run_dir} already holds checkpoint {ckpt.name}; "
                                    "pass --resume to continue it, or choose another run directory")
            if summary_path.is_file() and json.loads(summary_path.read_text()).get("steps") == cfg.steps:
                return self._result_from_summary(summary_path)
            start, skipped, bad_run = self._restore(ckpt)
        if info.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.run_dir / "train_config.yaml", _yaml(cfg.to_dict()))
            self._truncate_metrics(start)
        barrier(info)
        loggers = self._open_loggers() if info.is_main else []
        t_start = time.perf_counter()
        val_loss = None
        bar = tqdm(total=cfg.steps, initial=start, desc=f"train {self.run_dir.name}", unit="step",
                   disable=not self.show_progress, dynamic_ncols=True)
        self.module.train()
        for step in range(start, cfg.steps):
            lr = lr_at(step, cfg.steps, cfg.lr, cfg.warmup_steps, cfg.min_lr_ratio, cfg.schedule, cfg.decay_fraction)
            for opt in self.optimizers:  # one schedule, scaled to each optimizer's peak
                peak = cfg.muon_lr if isinstance(opt, Muon) else cfg.lr
                for group in opt.param_groups:
                    group["lr"] = peak * lr / cfg.lr
            t0 = time.perf_counter()
            loss, ce, metrics = self._accumulate(step)
            grad_norm = self._clip()
            finite = bool(torch.isfinite(loss)) and math.isfinite(grad_norm)
            if finite:
                for opt in self.optimizers:
                    opt.step()
                bad_run = 0
            else:
                skipped += 1
                bad_run += 1
            for opt in self.optimizers:
                opt.zero_grad(set_to_none=True)
            dt = time.perf_counter() - t0
            record: dict[str, Any] = {"type": "train", "step": step + 1, "loss": loss.item(), "ce": ce.item(),
                                      **metrics, "lr": lr, "grad_norm": grad_norm,
                                      "tokens_per_s": self.tokens_per_step / dt, "skipped": skipped}
            if not finite:
                record["skipped_step"] = True
            self._log(record, loggers)
            bar.update(1)
            bar.set_postfix(loss=f"{record['loss']:.3f}", lr=f"{lr:.2e}")
            if bad_run > cfg.max_bad_steps:
                bar.close()
                where = latest_checkpoint(self.run_dir)
                raise TrainingError(
                    f"step {step + 1}: {bad_run} steps in a row had a non-finite loss or gradient norm "
                    f"(loss {record['loss']}, grad norm {grad_norm}); stopped. The weights were not updated by "
                    f"those steps; the last checkpoint is {where or 'none'}. Lower lr or check the data.")
            last = step + 1 == cfg.steps
            if (cfg.eval_every and (step + 1) % cfg.eval_every == 0) or last:
                val_loss = self.evaluate()
                if val_loss is not None:
                    self._log({"type": "eval", "step": step + 1, "val_loss": val_loss}, loggers)
            if (cfg.save_every and (step + 1) % cfg.save_every == 0) or last:
                self._save(step + 1, skipped, bad_run)
        bar.close()
        wall = time.perf_counter() - t_start
        final = self.run_dir / "final"
        state = _flat_full_state(self.model, info, self.fsdp)
        result = StageResult(self.run_dir, final, cfg.steps, cfg.steps * self.tokens_per_step, skipped, val_loss, wall)
        if info.is_main:
            save_checkpoint(self.model, final, tokenizer_file=self.source.tokenizer_file, state=state,
                            extra={"train_step": cfg.steps})
            plot_metrics(self.run_dir / "metrics.jsonl", self.run_dir / "loss.png", title=self.run_dir.name)
            summary = {"steps": cfg.steps, "tokens": result.tokens, "skipped_steps": skipped,
                       "val_loss": val_loss, "wall_s_this_session": round(wall, 2), "final": str(final)}
            atomic_write_json(summary_path, summary)
            for logger in loggers:
                logger.close()
        barrier(info)
        return result

    def _accumulate(self, step: int) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
        cfg = self.config
        total = torch.zeros((), device=self.info.device)
        ce_total = torch.zeros((), device=self.info.device)
        sums: dict[str, float] = {}
        loads = []
        for m in range(cfg.grad_accum):
            batch = {k: v.to(self.info.device) for k, v in self.source.batch(step * cfg.grad_accum + m).items()}
            last = m == cfg.grad_accum - 1
            if self.fsdp:  # FSDP2: keep unsharded gradients and reduce-scatter once, after the last micro-batch
                self.module.set_requires_gradient_sync(last)
            skip_sync = not last and not self.fsdp and hasattr(self.module, "no_sync")  # DDP's equivalent
            with (self.module.no_sync() if skip_sync else contextlib.nullcontext()), self.autocast:
                loss, ce, metrics = self.module(batch)
            (loss / cfg.grad_accum).backward()
            total += loss.detach().float() / cfg.grad_accum
            ce_total += ce.detach().float() / cfg.grad_accum
            for k, v in metrics.items():
                if k == "expert_load":
                    loads.append(v.detach())
                else:
                    sums[k] = sums.get(k, 0.0) + float(v) / cfg.grad_accum
        out: dict[str, Any] = {k: round(v, 6) for k, v in sums.items()}
        if loads:
            out.update({k: round(v, 4) for k, v in expert_load_stats(torch.stack(loads).mean(0)).items()})
        return all_reduce_mean(total, self.info), all_reduce_mean(ce_total, self.info), out

    def _clip(self) -> float:
        params = [p for p in self.model.parameters() if p.grad is not None]
        limit = self.config.grad_clip or float("inf")
        norm = torch.nn.utils.clip_grad_norm_(params, limit)
        if hasattr(norm, "full_tensor"):  # FSDP2: a DTensor holding the global norm
            norm = norm.full_tensor()
        return float(norm)

    @torch.no_grad()
    def evaluate(self) -> float | None:
        """Token-weighted validation cross-entropy over up to ``eval_batches`` batches per process."""
        if self.config.eval_batches == 0:
            return None
        batches = list(self.source.validation(self.config.eval_batches))
        # FSDP gathers weights collectively, so every process must run the same number of batches
        n = len(batches)
        if self.info.enabled:
            t = torch.tensor(float(len(batches)), device=self.info.device)
            torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MIN)
            n = int(t)
        if n == 0:
            return None
        self.module.eval()
        loss_sum = torch.zeros((), device=self.info.device, dtype=torch.float64)
        count = torch.zeros((), device=self.info.device, dtype=torch.float64)
        for batch in batches[:n]:
            batch = {k: v.to(self.info.device) for k, v in batch.items()}
            with self.autocast:
                ce, _, extra = self.module(batch, evaluate=True)
            loss_sum += ce.double() * extra["tokens"]
            count += extra["tokens"]
        self.module.train()
        loss_sum, count = all_reduce_sum(loss_sum, self.info), all_reduce_sum(count, self.info)
        return float(loss_sum / count) if count > 0 else None

    # ------------------------------------------------------------------ state
    def _train_state(self, skipped: int, bad_run: int) -> dict[str, Any]:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        optim = get_optimizer_state_dict(self.model, self.optimizers,
                                         options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        return {"optimizer": optim, "rng_cpu": torch.get_rng_state(),
                "rng_cuda": torch.cuda.get_rng_state(self.info.device) if self.info.device.type == "cuda" else None,
                "skipped_steps": skipped, "bad_run": bad_run, "world_size": self.info.world_size,
                "tokenizer_hash": self.source.tokenizer.hash, "train_config": json.dumps(self.config.to_dict())}

    def _save(self, step: int, skipped: int, bad_run: int) -> None:
        model_state = _flat_full_state(self.model, self.info, self.fsdp)
        train_state = self._train_state(skipped, bad_run)
        if self.info.is_main:
            save_train_checkpoint(self.run_dir, step, self.model, model_state, train_state,
                                  self.source.tokenizer_file, self.config.keep_checkpoints)
        barrier(self.info)

    def _restore(self, ckpt: Path) -> tuple[int, int, int]:
        state = load_train_state(ckpt)
        saved = saved_train_config(state)
        now = json.loads(json.dumps(self.config.to_dict()))  # tuples come back as lists
        changed = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k) and k not in RESUMABLE_CHANGES)
        if changed:
            raise TrainingError(f"{ckpt} was written by a run with other settings ({', '.join(changed)}); "
                                "resume with the same config, or start a new run directory")
        if state["world_size"] != self.info.world_size:
            raise TrainingError(f"{ckpt} was written by {state['world_size']} processes, this run has "
                                f"{self.info.world_size}; the data order depends on it, so resume with the same count")
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_model_state_dict,
            set_optimizer_state_dict,
        )

        weights = Checkpoint.open(ckpt).weights()
        opts = StateDictOptions(full_state_dict=True)
        if self.fsdp:
            set_model_state_dict(self.model, weights, options=opts)
        else:
            with torch.no_grad():
                self.model.load_state_dict(weights)
        set_optimizer_state_dict(self.model, self.optimizers, state["optimizer"], options=opts)
        torch.set_rng_state(state["rng_cpu"])
        if state.get("rng_cuda") is not None and self.info.device.type == "cuda":
            torch.cuda.set_rng_state(state["rng_cuda"], self.info.device)
        return int(state["step"]), int(state["skipped_steps"]), int(state["bad_run"])

    def _result_from_summary(self, path: Path) -> StageResult:
        s = json.loads(path.read_text())
        return StageResult(self.run_dir, Path(s["final"]), s["steps"], s["tokens"], s["skipped_steps"],
                           s["val_loss"], 0.0)

    # ------------------------------------------------------------------ logging
    def _truncate_metrics(self, start: int) -> None:
        path = self.run_dir / "metrics.jsonl"
        if not path.exists():
            return
        # A line cut short by a kill is the torn last line read_jsonl leaves out.
        keep = [row for row in read_jsonl(path) if "step" in row and row["step"] <= start]
        atomic_write_text(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in keep))

    def _open_loggers(self) -> list[Any]:
        loggers: list[Any] = [_JsonlLogger(self.run_dir / "metrics.jsonl")]
        if self.config.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as e:
                raise ConfigError("tensorboard: true needs the tensorboard package (pip install tensorboard)") from e
            loggers.append(_TensorBoardLogger(SummaryWriter(str(self.run_dir / "tensorboard"))))
        if self.config.wandb:
            try:
                import wandb
            except ImportError as e:
                raise ConfigError("wandb: true needs the wandb package (pip install wandb)") from e
            run = wandb.init(project="smallcode", name=self.run_dir.name, dir=str(self.run_dir),
                             config=self.config.to_dict(), mode=os.environ.get("WANDB_MODE", "offline"))
            loggers.append(_WandbLogger(run))
        return loggers

    def _log(self, record: dict[str, Any], loggers: list[Any]) -> None:
        for logger in loggers:
            logger.log(record)


def _checkpoint_block(block: nn.Module) -> None:
    """Recompute ``block`` in backward instead of keeping its activations (state-dict keys unchanged)."""
    from torch.utils.checkpoint import checkpoint

    inner = block.forward

    def forward(*args: Any, **kwargs: Any) -> Any:
        if not torch.is_grad_enabled():
            return inner(*args, **kwargs)
        return checkpoint(inner, *args, use_reentrant=False, **kwargs)

    block.forward = forward


def _yaml(data: dict) -> str:
    import yaml

    return yaml.safe_dump(data, sort_keys=False)


class _JsonlLogger:
    def __init__(self, path: Path) -> None:
        self.log_file = JsonlLog(path)

    def log(self, record: dict[str, Any]) -> None:
        self.log_file.append(record)

    def close(self) -> None:
        self.log_file.close()


class _TensorBoardLogger:
    def __init__(self, writer: Any) -> None:
        self.writer = writer

    def log(self, record: dict[str, Any]) -> None:
        for k, v in record.items():
            if k not in ("type", "step") and isinstance(v, int | float):
                self.writer.add_scalar(f"{record['type']}/{k}", v, record["step"])

    def close(self) -> None:
        self.writer.close()


class _WandbLogger:
    def __init__(self, run: Any) -> None:
        self.run = run

    def log(self, record: dict[str, Any]) -> None:
        self.run.log({f"{record['type']}/{k}": v for k, v in record.items() if k not in ("type", "step")},
                     step=record["step"])

    def close(self) -> None:
        self.run.finish()


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The rows of a run's ``metrics.jsonl`` (none when it does not exist yet)."""
    return read_jsonl(path) if path.exists() else []


def plot_metrics(metrics: Path, png: Path, title: str = "") -> Path:
    """Training loss (raw and smoothed) and validation loss against step, written atomically as a PNG."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from smallcode.fileio import atomic_write_bytes

    rows = read_metrics(metrics)
    train = [(r["step"], r["ce"]) for r in rows if r.get("type") == "train" and math.isfinite(r.get("ce", math.nan))]
    val = [(r["step"], r["val_loss"]) for r in rows if r.get("type") == "eval"]
    fig, ax = plt.subplots(figsize=(7, 4))
    if train:
        xs, ys = zip(*train, strict=True)
        ax.plot(xs, ys, color="tab:blue", alpha=0.3, lw=1)
        k = max(1, len(ys) // 20)
        smooth = [sum(ys[max(0, i - k + 1): i + 1]) / len(ys[max(0, i - k + 1): i + 1]) for i in range(len(ys))]
        ax.plot(xs, smooth, color="tab:blue", label="train cross-entropy")
    if val:
        xs, ys = zip(*val, strict=True)
        ax.plot(xs, ys, "o-", color="tab:orange", label="validation")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(png, buf.getvalue())
    return png
