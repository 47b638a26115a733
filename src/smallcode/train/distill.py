"""Distillation from a teacher that shares the tokenizer: the loss and the training objective.

``kd_loss(student_logits, teacher, kind, temperature, mask)`` is the pure loss; ``DistillObjective`` plugs
it into the trainer (``objective(model, batch) -> (total, ce, metrics)``) with the teacher run each step
(``mode="online"``, full logits) or read from a top-k cache (``mode="offline"``, see
:mod:`smallcode.train.teacher_cache`). With ``alpha`` the weight of cross-entropy::

    total = alpha * ce + (1 - alpha) * kd + balance_loss_coef * balance + z_loss_coef * z

What ``kd`` is, per target row (rows whose label is -100 are left out; the result is the mean over the
rest, times ``temperature**2`` so that gradients keep their size as the temperature changes, as Hinton
et al. do), with ``q = softmax(student / t)`` over the whole vocabulary:

* full teacher logits, ``p = softmax(teacher / t)``: forward ``KL(p || q)`` or reverse ``KL(q || p)``.
* top-k teacher (log-probs ``l_k`` at temperature 1 and their ids ``K``): the target is the teacher at
  temperature ``t`` renormalised on its top-k, ``p~ = softmax(l_k / t)`` over ``K`` (exact: restricting
  ``p ** (1/t)`` to ``K`` and renormalising gives the same whatever the rest of the vocabulary holds).
  Forward KL is ``sum_K p~ (log p~ - log q)``, with the student's full-vocabulary ``log q``; the student
  is thus also pushed to put its mass on ``K``. With ``k = V`` this is the full-logits loss.
* top-k reverse KL is refused: ``KL(q || p)`` needs the teacher's log-prob of every token the student
  gives mass to, and a top-k cache lacks it for the others. Any stand-in (a remainder bucket, a floor
  value) would be a guess of the tail; use online mode for reverse KL.

Not here: the training loop, the teacher cache format, loading teachers (``teacher.py``), the settings
(``DistillConfig``, the ``distill:`` section of a stage in ``config.py``). Student logits
are computed whole (N, V) from ``model.trunk`` and ``lm_head``: at the nano size (N = 2048, V = 8192) that
is small next to the teacher's own (N, V) logits.

Shape legend: B batch, T sequence, N = B*T rows, V vocabulary, k teacher top-k.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from smallcode.config import ConfigError
from smallcode.model.transformer import SmallCodeLM
from smallcode.train.config import DistillConfig, KLDirection
from smallcode.train.objectives import router_terms
from smallcode.train.teacher import Teacher, TeacherError, load_teacher, teacher_hash
from smallcode.train.teacher_cache import TeacherCache

IGNORE_INDEX = -100
TopK = tuple[torch.Tensor, torch.Tensor]
"""A top-k teacher target: (log-probs (N, k) at temperature 1, token ids (N, k))."""


def kd_loss(student_logits_NV: torch.Tensor, teacher: torch.Tensor | TopK, kind: KLDirection = "forward",
            temperature: float = 1.0, mask_N: torch.Tensor | None = None) -> torch.Tensor:
    """Mean KL over the rows where ``mask_N`` is true, times ``temperature**2`` (see the module docstring).

    ``teacher`` is full logits (N, V) or a top-k pair (log-probs (N, k), ids (N, k)). Computed in float32
    (float64 inputs stay float64). No selected row gives 0, not NaN.
    """
    if kind not in ("forward", "reverse"):
        raise ValueError(f"kd_loss: kind must be 'forward' or 'reverse', got {kind!r}")
    if temperature <= 0:
        raise ValueError(f"kd_loss: temperature must be > 0, got {temperature}")
    dtype = torch.promote_types(student_logits_NV.dtype, torch.float32)
    top_k = not isinstance(teacher, torch.Tensor)
    if mask_N is not None:
        # Only the rows that count are computed (prompt tokens in fine-tuning can be most of a batch).
        student_logits_NV = student_logits_NV[mask_N]
        teacher = (teacher[0][mask_N], teacher[1][mask_N]) if top_k else teacher[mask_N]
    if not top_k and kind == "forward":
        # KL(p || q) = H(p, q) - H(p): the cross-entropy against soft targets is one fused kernel (about
        # half the time of spelling it out at V = 8192), and the teacher's entropy needs no gradient.
        with torch.no_grad():
            log_p_NV = F.log_softmax(_scaled(teacher.to(dtype), temperature), dim=-1)
            p_NV = log_p_NV.exp()
            # the clamp keeps 0 * log 0 = 0 where a teacher logit is -inf (cheaper than xlogy here)
            neg_entropy_N = (p_NV * log_p_NV.clamp(min=torch.finfo(dtype).min)).sum(-1)
        cross_N = F.cross_entropy(_scaled(student_logits_NV.to(dtype), temperature), p_NV, reduction="none")
        kl_N = cross_N + neg_entropy_N
        return kl_N.sum() / max(kl_N.shape[0], 1) * temperature**2
    log_q_NV = F.log_softmax(student_logits_NV.to(dtype) / temperature, dim=-1)
    if top_k:
        if kind == "reverse":
            raise ValueError("kd_loss: reverse KL needs full teacher logits; a top-k teacher lacks the log-probs "
                             "of the other tokens (use the online teacher)")
        logprobs_Nk, ids_Nk = teacher
        log_p_Nk = F.log_softmax(logprobs_Nk.to(dtype) / temperature, dim=-1)
        kl_N = (log_p_Nk.exp() * (log_p_Nk - log_q_NV.gather(1, ids_Nk))).sum(-1)
    else:
        log_p_NV = F.log_softmax(teacher.to(dtype) / temperature, dim=-1)
        # reverse KL(q || p); xlogy keeps 0 * log 0 = 0 where a probability underflows
        q_NV = log_q_NV.exp()
        kl_N = (torch.special.xlogy(q_NV, q_NV) - q_NV * log_p_NV).sum(-1)
    return kl_N.sum() / max(kl_N.shape[0], 1) * temperature**2


def _scaled(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    return logits if temperature == 1.0 else logits / temperature


class DistillObjective:
    """``objective(model, batch) -> (total, ce, metrics)`` for distillation (the trainer's interface).

    ``batch`` holds ``input_ids`` and ``labels`` (B, T) and, offline, ``sample_ids`` (B,) from the
    ShardLoader. Give ``teacher`` (online) or ``cache`` (offline); :meth:`load` builds either from the config.
    """

    def __init__(self, cfg: DistillConfig, teacher: Teacher | None = None, cache: TeacherCache | None = None
                 ) -> None:
        if cfg.mode == "online" and teacher is None:
            raise ValueError("DistillObjective: online distillation needs teacher= (see load_teacher)")
        if cfg.mode == "offline":
            if cache is None:
                raise ValueError("DistillObjective: offline distillation needs cache= (see TeacherCache.open)")
            if cfg.top_k > cache.top_k:
                raise ConfigError(f"DistillConfig.top_k is {cfg.top_k} but the cache at {cache.directory} "
                                  f"holds only the top {cache.top_k}")
        self.cfg, self.teacher, self.cache = cfg, teacher, cache

    @classmethod
    def load(cls, cfg: DistillConfig, vocab_size: int, tokenizer_hash: str, seq_len: int,
             device: str | torch.device = "cpu") -> DistillObjective:
        """Load the teacher (online) or open the cache and check it was made by ``cfg.teacher`` (offline)."""
        if cfg.mode == "online":
            return cls(cfg, teacher=load_teacher(cfg.teacher, vocab_size, tokenizer_hash, device))
        assert cfg.cache is not None  # DistillConfig guarantees it offline
        try:
            identity = teacher_hash(cfg.teacher)
        except TeacherError as e:
            raise TeacherError(f"{e} (offline distillation checks that the cache was made by this teacher)") from e
        cache = TeacherCache.open(cfg.cache, tokenizer_hash=tokenizer_hash, seq_len=seq_len, teacher_hash=identity)
        if cache.vocab_size != vocab_size:
            raise ConfigError(f"{cfg.cache}: cache made for a vocabulary of {cache.vocab_size}, "
                              f"the student has {vocab_size}")
        return cls(cfg, cache=cache)

    def _teacher_targets(self, batch: dict[str, torch.Tensor], vocab_size: int, device: torch.device
                         ) -> torch.Tensor | TopK:
        input_ids = batch["input_ids"]
        if self.teacher is not None:
            if self.teacher.vocab_size != vocab_size:
                raise TeacherError(f"teacher vocabulary {self.teacher.vocab_size} != student's {vocab_size}")
            return self.teacher.logits(input_ids).to(device).flatten(0, 1)
        assert self.cache is not None
        if "sample_ids" not in batch:
            raise ValueError("offline distillation needs batch['sample_ids'] (the ShardLoader's sample_indices)")
        if self.cache.vocab_size != vocab_size:
            raise TeacherError(f"teacher cache vocabulary {self.cache.vocab_size} != student's {vocab_size}")
        logprobs_BTk, ids_BTk = self.cache.lookup(batch["sample_ids"], input_ids)
        k = self.cfg.top_k  # the cache holds each row's top-k in descending order
        return logprobs_BTk[..., :k].to(device).flatten(0, 1), ids_BTk[..., :k].to(device).flatten(0, 1)

    def __call__(self, model: SmallCodeLM, batch: dict[str, torch.Tensor]
                 ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        trunk = model.trunk(batch["input_ids"])
        h_ND = trunk.hidden.flatten(0, 1)
        logits_NV = (h_ND @ model.lm_head.weight.T).float()
        labels_N = batch["labels"].reshape(-1).to(logits_NV.device)
        mask_N = labels_N != IGNORE_INDEX
        count = mask_N.sum().clamp(min=1)
        ce = F.cross_entropy(logits_NV, labels_N, ignore_index=IGNORE_INDEX, reduction="sum") / count
        target = self._teacher_targets(batch, model.config.vocab_size, logits_NV.device)
        kd = kd_loss(logits_NV, target, self.cfg.kind, self.cfg.temperature, mask_N)
        aux, metrics = router_terms(model, trunk)
        total = self.cfg.alpha * ce + (1.0 - self.cfg.alpha) * kd + aux
        return total, ce, {"kd_loss": kd.detach(), **metrics}


def build_distill_objective(cfg: DistillConfig, vocab_size: int, tokenizer_hash: str,
                            seq_len: int, device: str | torch.device = "cpu") -> DistillObjective:
    """The trainer's entry point: a stage's ``distill:`` section -> the objective."""
    return DistillObjective.load(cfg, vocab_size, tokenizer_hash, seq_len, device)
