"""Distillation losses against values worked out by hand, the config's checks, and the online objective."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from smallcode.config import ConfigError
from smallcode.model import ModelConfig, SmallCodeLM
from smallcode.train.config import DistillConfig, TrainConfig
from smallcode.train.distill import DistillObjective, kd_loss
from smallcode.train.teacher import Teacher

# Two rows over a vocabulary of 3, given as probabilities so the KLs can be written out by hand.
P = [[0.7, 0.2, 0.1], [0.25, 0.25, 0.5]]  # teacher
Q = [[0.2, 0.3, 0.5], [0.6, 0.3, 0.1]]  # student


def _logits(probs: list[list[float]], shift: float) -> torch.Tensor:
    # log-probabilities plus a per-call constant: softmax must not care about the shift
    return torch.tensor([[math.log(x) + shift for x in row] for row in probs], dtype=torch.float64)


def _kl(a: list[float], b: list[float]) -> float:
    return sum(x * math.log(x / y) for x, y in zip(a, b, strict=True))


def test_forward_kl_by_hand() -> None:
    expected = (_kl(P[0], Q[0]) + _kl(P[1], Q[1])) / 2
    # the same sum written term by term
    assert expected == pytest.approx(((0.7 * math.log(3.5) + 0.2 * math.log(2 / 3) + 0.1 * math.log(0.2))
                                      + (0.25 * math.log(0.25 / 0.6) + 0.25 * math.log(0.25 / 0.3)
                                         + 0.5 * math.log(5.0))) / 2)
    got = kd_loss(_logits(Q, 0.3), _logits(P, -1.1), "forward")
    assert got.item() == pytest.approx(expected, rel=1e-12)


def test_reverse_kl_by_hand() -> None:
    expected = (_kl(Q[0], P[0]) + _kl(Q[1], P[1])) / 2
    got = kd_loss(_logits(Q, 0.0), _logits(P, 2.0), "reverse")
    assert got.item() == pytest.approx(expected, rel=1e-12)
    assert got.item() != pytest.approx(kd_loss(_logits(Q, 0.0), _logits(P, 2.0), "forward").item(), rel=1e-3)


def test_temperature_softens_both_and_scales_by_its_square() -> None:
    t, s, T = [2.0, 0.0, -1.0], [0.0, 1.0, 0.0], 2.0

    def soft(z: list[float]) -> list[float]:
        e = [math.exp(v / T) for v in z]
        return [v / sum(e) for v in e]

    p, q = soft(t), soft(s)
    student, teacher = torch.tensor([s], dtype=torch.float64), torch.tensor([t], dtype=torch.float64)
    assert kd_loss(student, teacher, "forward", T).item() == pytest.approx(T**2 * _kl(p, q), rel=1e-12)
    assert kd_loss(student, teacher, "reverse", T).item() == pytest.approx(T**2 * _kl(q, p), rel=1e-12)


def test_mask_averages_over_kept_rows_only() -> None:
    student = torch.cat([_logits(Q, 0.0), torch.tensor([[50.0, -50.0, 0.0]], dtype=torch.float64)])
    teacher = torch.cat([_logits(P, 0.0), torch.tensor([[-50.0, 50.0, 0.0]], dtype=torch.float64)])
    keep = torch.tensor([True, False, False])
    assert kd_loss(student, teacher, "forward", 1.0, keep).item() == pytest.approx(_kl(P[0], Q[0]), rel=1e-12)
    keep = torch.tensor([True, True, False])
    assert kd_loss(student, teacher, "forward", 1.0, keep).item() == pytest.approx(
        (_kl(P[0], Q[0]) + _kl(P[1], Q[1])) / 2, rel=1e-12)
    none = kd_loss(student, teacher, "reverse", 1.0, torch.zeros(3, dtype=torch.bool))
    assert none.item() == 0.0


def test_top_k_target_is_the_teacher_renormalised_on_its_top_k() -> None:
    p = [0.5, 0.1, 0.3, 0.1]  # teacher over V = 4; its top-2 are ids 0 and 2
    q = [0.1, 0.4, 0.2, 0.3]
    logprobs = torch.tensor([[math.log(0.5), math.log(0.3)]], dtype=torch.float64)
    ids = torch.tensor([[0, 2]])
    student = torch.tensor([[math.log(x) for x in q]], dtype=torch.float64)
    # T = 1: p~ = (0.5, 0.3) / 0.8, compared with the student's full-vocabulary probabilities of ids 0 and 2
    expected = 0.625 * math.log(0.625 / 0.1) + 0.375 * math.log(0.375 / 0.2)
    assert kd_loss(student, (logprobs, ids), "forward").item() == pytest.approx(expected, rel=1e-12)
    # T = 2: p~ proportional to p ** (1/2) on the top-k; the student at T = 2 is softmax(log q / 2) over all 4
    T = 2.0
    pt = [math.sqrt(0.5), math.sqrt(0.3)]
    pt = [x / sum(pt) for x in pt]
    qt = [math.sqrt(x) / sum(math.sqrt(y) for y in q) for x in q]
    expected = T**2 * (pt[0] * math.log(pt[0] / qt[0]) + pt[1] * math.log(pt[1] / qt[2]))
    assert kd_loss(student, (logprobs, ids), "forward", T).item() == pytest.approx(expected, rel=1e-12)
    assert p[0] + p[2] == pytest.approx(0.8)


@pytest.mark.parametrize("T", [1.0, 0.5, 3.0])
def test_top_k_with_k_equal_v_is_the_full_logits_loss(T: float) -> None:
    student, teacher = torch.randn(6, 11), torch.randn(6, 11) * 3
    mask = torch.tensor([True, True, False, True, False, True])
    log_p = F.log_softmax(teacher, dim=-1)
    order = torch.stack([torch.randperm(11) for _ in range(6)])  # any order of the ids
    top = (log_p.gather(1, order), order)
    torch.testing.assert_close(kd_loss(student, top, "forward", T, mask), kd_loss(student, teacher, "forward", T, mask))


def test_reverse_kl_with_top_k_is_refused() -> None:
    with pytest.raises(ValueError, match="reverse KL needs full teacher logits"):
        kd_loss(torch.randn(2, 5), (torch.randn(2, 3), torch.zeros(2, 3, dtype=torch.long)), "reverse")


@pytest.mark.parametrize("kind", ["forward", "reverse", "top-k"])
def test_gradcheck_float64(kind: str) -> None:
    student = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    teacher = torch.randn(4, 5, dtype=torch.float64)
    mask = torch.tensor([True, False, True, True])
    if kind == "top-k":
        top = F.log_softmax(teacher, -1).topk(3)
        fn = lambda s: kd_loss(s, (top.values, top.indices), "forward", 1.5, mask)
    else:
        fn = lambda s: kd_loss(s, teacher, kind, 1.5, mask)
    assert torch.autograd.gradcheck(fn, (student,))


def test_forward_gradient_is_student_minus_teacher() -> None:
    # d/ds [T^2 KL(softmax(t/T) || softmax(s/T))] = T (q - p) per row, divided by the number of rows
    T = 2.0
    student = torch.randn(3, 6, dtype=torch.float64, requires_grad=True)
    teacher = torch.randn(3, 6, dtype=torch.float64)
    kd_loss(student, teacher, "forward", T).backward()
    q, p = torch.softmax(student.detach() / T, -1), torch.softmax(teacher / T, -1)
    torch.testing.assert_close(student.grad, T * (q - p) / 3)
    # a step against the gradient brings the student closer; at the teacher the loss and gradient vanish
    for kind in ("forward", "reverse"):
        s = student.detach().clone().requires_grad_(True)
        loss = kd_loss(s, teacher, kind, T)
        (g,) = torch.autograd.grad(loss, s)
        assert kd_loss(s.detach() - 0.1 * g, teacher, kind, T) < loss
        at = teacher.clone().requires_grad_(True)
        loss = kd_loss(at, teacher, kind, T)
        (g,) = torch.autograd.grad(loss, at)
        assert abs(loss.item()) < 1e-12 and g.abs().max().item() < 1e-12


# -- config ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("fields", "message"), [
    ({"temperature": 0}, "temperature"),
    ({"temperature": float("inf")}, "temperature"),
    ({"alpha": 1.5}, "alpha"),
    ({"kind": "jensen"}, "kind"),
    ({"mode": "sometimes"}, "mode"),
    ({"top_k": 0}, "top_k"),
    ({"mode": "offline"}, "cache"),
    ({"cache": "c"}, "only read when mode is 'offline'"),
    ({"mode": "offline", "cache": "c", "kind": "reverse"}, "reverse"),
    ({"teacher": ""}, "teacher"),
])
def test_config_refuses_bad_values(fields: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        DistillConfig.from_dict({"teacher": "t", **fields})


def test_config_from_recipe_block() -> None:
    cfg = DistillConfig.from_dict({"teacher": "ckpt/teacher", "temperature": 2, "mode": "offline", "cache": "c"})
    assert cfg.temperature == 2.0 and isinstance(cfg.temperature, float) and cfg.kind == "forward"
    with pytest.raises(ConfigError, match="unknown field"):
        DistillConfig.from_dict({"teacher": "t", "temprature": 2})
    with pytest.raises(ConfigError, match="teacher"):
        TrainConfig.from_dict({"objective": "distill", "distill": {"kind": "forward"}})


# -- the objective --------------------------------------------------------------------------------
def _student_and_teacher() -> tuple[SmallCodeLM, Teacher]:
    student = SmallCodeLM(ModelConfig.preset("tiny"))
    teacher_model = SmallCodeLM(ModelConfig.preset("tiny", n_experts=1, top_k=1, d_model=96))
    return student, Teacher(teacher_model, "smallcode", "test", 256, "cpu")


@pytest.mark.parametrize(("kind", "alpha", "T"), [("forward", 0.5, 1.0), ("reverse", 0.25, 2.0), ("forward", 1.0, 1.0)])
def test_online_objective_mixes_ce_kd_and_router_losses(kind: str, alpha: float, T: float) -> None:
    student, teacher = _student_and_teacher()
    cfg = DistillConfig(teacher="unused", kind=kind, temperature=T, alpha=alpha)
    ids = torch.randint(0, 256, (2, 9))
    labels = torch.randint(0, 256, (2, 9))
    labels[0, :4] = -100  # a prompt
    total, ce, metrics = DistillObjective(cfg, teacher=teacher)(student, {"input_ids": ids, "labels": labels})

    out = student(ids)
    logits, keep = out.logits.reshape(-1, 256), labels.reshape(-1) != -100
    ref_ce = F.cross_entropy(logits, labels.reshape(-1), ignore_index=-100)
    log_q = F.log_softmax(logits[keep] / T, -1)
    with torch.no_grad():
        log_p = F.log_softmax(teacher.model(ids).logits.reshape(-1, 256)[keep] / T, -1)
    pair = (log_p, log_q) if kind == "forward" else (log_q, log_p)  # kl_div(input, target) = KL(target || input)
    ref_kd = T**2 * F.kl_div(pair[1], pair[0], log_target=True, reduction="batchmean")
    ref_total = alpha * ref_ce + (1 - alpha) * ref_kd + out.aux_loss(student.config)
    torch.testing.assert_close(ce, ref_ce, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(metrics["kd_loss"], ref_kd.detach(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(total, ref_total, atol=1e-5, rtol=1e-5)
    assert set(metrics) >= {"kd_loss", "balance_loss", "z_loss", "expert_load"}
    assert all(not v.requires_grad for v in metrics.values())
    grads = torch.autograd.grad(total, list(student.parameters()))
    ref_grads = torch.autograd.grad(ref_total, list(student.parameters()))
    for a, b in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    assert all(p.grad is None and not p.requires_grad for p in teacher.model.parameters())


def test_objective_needs_its_teacher_or_cache() -> None:
    with pytest.raises(ValueError, match="needs teacher="):
        DistillObjective(DistillConfig(teacher="t"))
    with pytest.raises(ValueError, match="needs cache="):
        DistillObjective(DistillConfig(teacher="t", mode="offline", cache="c"))
    student, teacher = _student_and_teacher()
    small = Teacher(SmallCodeLM(ModelConfig.preset("tiny", vocab_size=128)), "smallcode", "x", 128, "cpu")
    ids = torch.randint(0, 128, (1, 5))
    with pytest.raises(ValueError, match="vocabulary 128"):
        DistillObjective(DistillConfig(teacher="t"), teacher=small)(student, {"input_ids": ids, "labels": ids})
