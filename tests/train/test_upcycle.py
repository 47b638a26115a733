"""Upcycling a dense model into experts: same logits at step 0, real copies, a fresh seeded router."""

from __future__ import annotations

import json

import pytest
import torch

from smallcode.cli.main import main as cli_main
from smallcode.config import ConfigError
from smallcode.model import ModelConfig, SmallCodeLM
from smallcode.model.checkpoint import Checkpoint, save_checkpoint
from smallcode.train.objectives import next_token_loss
from smallcode.train.upcycle import upcycle, upcycle_checkpoint, upcycled_config


def dense_model(**overrides: object) -> SmallCodeLM:
    torch.manual_seed(0)
    model = SmallCodeLM(ModelConfig.preset("tiny", n_experts=1, top_k=1, **overrides))
    with torch.no_grad():  # larger than the init so the feed-forward matters to the logits
        for p in model.parameters():
            if p.dim() > 1:
                p.mul_(3)
    return model


@pytest.mark.parametrize(("E", "K"), [(2, 1), (4, 2), (4, 4), (8, 2), (3, 3)])
def test_upcycled_logits_equal_the_parent(E: int, K: int) -> None:
    # window 16 < T = 40: the sliding window and the global tokens are exercised too
    dense = dense_model()
    moe = upcycle(dense, E, K, seed=1)
    assert moe.config.n_experts == E and moe.config.top_k == K
    tokens = torch.randint(0, 256, (3, 40))
    with torch.no_grad():
        want = dense(tokens).logits
        got = moe(tokens)
    torch.testing.assert_close(got.logits, want, atol=1e-5, rtol=1e-5)
    # the router really is routing: more than one expert receives tokens in every layer
    assert got.expert_load is not None and ((got.expert_load > 0).sum(dim=1) > 1).all()


def test_upcycled_equals_parent_with_a_short_window_and_tied_embeddings() -> None:
    dense = dense_model(window=5, n_global=1, tie_embeddings=True)
    moe = upcycle(dense, 4, 2)
    assert moe.lm_head.weight is moe.embed.weight
    tokens = torch.randint(0, 256, (2, 33))
    with torch.no_grad():
        torch.testing.assert_close(moe(tokens).logits, dense(tokens).logits, atol=1e-5, rtol=1e-5)


def test_upcycled_equals_parent_when_decoding_token_by_token() -> None:
    # cached decoding through the engine's decode modules (one-token and few-row expert paths) agrees too
    from smallcode.runtime.cpu_decode import prepare_for_decoding

    dense, tokens = dense_model(), torch.randint(0, 256, (2, 20))
    moe = prepare_for_decoding(upcycle(dense, 4, 2).eval())
    with torch.inference_mode():
        cache = moe.new_cache(2)
        steps = [moe(tokens[:, i : i + 1], cache).logits for i in range(tokens.shape[1])]
        torch.testing.assert_close(torch.cat(steps, dim=1), dense(tokens).logits, atol=1e-5, rtol=1e-5)


def test_experts_are_independent_copies_and_other_weights_are_copied() -> None:
    dense = dense_model()
    moe = upcycle(dense, 4, 2)
    d_state, m_state = dense.state_dict(), moe.state_dict()
    for i in range(dense.config.n_layers):
        for name in ("w_gate_up", "w_down"):
            w = m_state[f"blocks.{i}.ffn.experts.{name}"]
            parent = d_state[f"blocks.{i}.ffn.experts.{name}"][0]
            for e in range(4):
                assert torch.equal(w[e], parent)
    for key, value in d_state.items():
        if ".ffn.experts." not in key:
            assert torch.equal(m_state[key], value) and m_state[key].data_ptr() != value.data_ptr()
    # training expert 0 alone moves expert 0 only, and never the parent
    experts = moe.blocks[0].ffn.experts
    before = experts.w_gate_up.detach().clone(), experts.w_down.detach().clone()
    experts.expert(torch.randn(5, 64), 0).square().sum().backward()
    with torch.no_grad():
        experts.w_gate_up -= 0.1 * experts.w_gate_up.grad
        experts.w_down -= 0.1 * experts.w_down.grad
    assert not torch.equal(experts.w_gate_up[0], before[0][0])
    assert not torch.equal(experts.w_down[0], before[1][0])
    for e in range(1, 4):
        assert torch.equal(experts.w_gate_up[e], before[0][e]) and torch.equal(experts.w_down[e], before[1][e])
    assert torch.equal(dense.state_dict()["blocks.0.ffn.experts.w_gate_up"], d_state["blocks.0.ffn.experts.w_gate_up"])


def test_router_is_fresh_and_seeded() -> None:
    dense = dense_model()
    a, b, c = upcycle(dense, 4, 2, seed=0), upcycle(dense, 4, 2, seed=0), upcycle(dense, 4, 2, seed=1)
    ra, rb, rc = (m.blocks[0].ffn.router.weight for m in (a, b, c))
    assert torch.equal(ra, rb) and not torch.equal(ra, rc)
    assert not torch.equal(a.blocks[0].ffn.router.weight, a.blocks[1].ffn.router.weight)  # per layer
    # Normal(0, init_std) by default, or the requested std (checked on the 2 * 4 * 64 draws)
    weights = torch.cat([blk.ffn.router.weight.flatten() for blk in a.blocks])
    assert abs(weights.std().item() - 0.02) < 0.003
    wide = upcycle(dense, 4, 2, router_std=0.5)
    assert abs(torch.cat([blk.ffn.router.weight.flatten() for blk in wide.blocks]).std().item() - 0.5) < 0.07


def test_balance_loss_trains_the_router_and_a_step_changes_the_logits() -> None:
    dense = dense_model()
    moe = upcycle(dense, 4, 2)
    tokens = torch.randint(0, 256, (2, 33))
    loss, ce, metrics = next_token_loss(moe, tokens)
    assert torch.isfinite(metrics["balance_loss"]) and metrics["balance_loss"] > 0
    assert torch.isfinite(loss)
    loss.backward()
    for blk in moe.blocks:
        g = blk.ffn.router.weight.grad
        assert g is not None and torch.isfinite(g).all() and g.abs().sum() > 0
    with torch.no_grad():
        before = moe(tokens[:, :-1]).logits
        for p in moe.parameters():
            p -= 1e-2 * p.grad
        after = moe(tokens[:, :-1]).logits
    assert (after - before).abs().max() > 1e-4
    # and the parent is untouched by the child's training
    with torch.no_grad():
        torch.testing.assert_close(dense(tokens[:, :-1]).logits, before, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("E", "K", "message"), [
    (1, 1, "n_experts must be an integer >= 2"),
    (4, 5, "top_k must be between 1 and n_experts"),
    (4, 0, "top_k must be between 1 and n_experts"),
])
def test_refuses_bad_expert_counts(E: int, K: int, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        upcycle(dense_model(), E, K)


def test_nano_dense_upcycles_to_nano() -> None:
    assert upcycled_config(ModelConfig.preset("nano-dense"), 8, 2) == ModelConfig.preset("nano")


def test_refuses_a_parent_that_already_has_experts() -> None:
    with pytest.raises(ConfigError, match="already has 4 experts"):
        upcycle(SmallCodeLM(ModelConfig.preset("tiny")), 8, 2)


def test_checkpoint_round_trip_through_the_cli(tmp_path, capsys) -> None:
    dense = dense_model()
    tok = tmp_path / "tokenizer.json"
    tok.write_text('{"stand-in": "copied byte for byte"}\n')
    parent = save_checkpoint(dense, tmp_path / "dense", tokenizer_file=tok)
    out = tmp_path / "moe"
    assert cli_main(["upcycle", str(parent), "--experts", "4", "--top-k", "2", "--out", str(out), "--seed", "3"]) == 0
    printed = capsys.readouterr().out
    cfg = ModelConfig.preset("tiny")
    dense_cfg = dense.config
    assert f"{dense_cfg.num_params() / 1e6:.2f}M total, {dense_cfg.num_active_params() / 1e6:.2f}M active" in printed
    assert f"{cfg.num_params() / 1e6:.2f}M total, {cfg.num_active_params() / 1e6:.2f}M active" in printed

    upcycled = Checkpoint.open(out)
    config, meta = upcycled.config, upcycled.extra
    assert config == cfg  # tiny is the tiny dense parent upcycled to 4 experts top-2
    assert meta["upcycle"] == {"n_experts": 4, "top_k": 2, "seed": 3, "router_std": 0.02}
    assert meta["upcycled_from"]["path"] == str(parent.resolve())
    assert (out / "tokenizer.json").read_bytes() == tok.read_bytes()
    moe = upcycled.load_model()
    assert torch.equal(moe.blocks[1].ffn.router.weight, upcycle(dense, 4, 2, seed=3).blocks[1].ffn.router.weight)
    tokens = torch.randint(0, 256, (2, 24))
    with torch.no_grad():
        torch.testing.assert_close(moe(tokens).logits, dense(tokens).logits, atol=1e-5, rtol=1e-5)


def test_checkpoint_without_tokenizer_and_refusals(tmp_path, capsys) -> None:
    parent = save_checkpoint(dense_model(), tmp_path / "dense")
    out = upcycle_checkpoint(parent, tmp_path / "moe", 2, 1)
    assert not (out / "tokenizer.json").exists()
    assert json.loads((out / "config.json").read_text())["model"]["n_experts"] == 2
    with pytest.raises(ConfigError, match="is the parent checkpoint itself"):
        upcycle_checkpoint(parent, parent, 2, 1)
    # a MoE parent is refused with one line on the command line, and nothing is written
    assert cli_main(["upcycle", str(out), "--experts", "4", "--out", str(tmp_path / "again")]) == 1
    err = capsys.readouterr().err
    assert "already has 2 experts" in err and "Traceback" not in err
    assert not (tmp_path / "again").exists()
    assert cli_main(["upcycle", str(parent), "--experts", "2", "--top-k", "3", "--out", str(tmp_path / "x")]) == 1
    assert "top_k must be between 1 and n_experts (2), got 3" in capsys.readouterr().err


# ---------------------------------------------------------------- fine-grained experts, Drop-Upcycling, router init

def segment_reference(dense: SmallCodeLM, layer: int, g: int, s: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Segment ``s`` of ``g`` of a dense layer's SwiGLU, sliced by hand: (gate|up rows, down columns x g)."""
    w = dense.state_dict()
    gate_up, down = w[f"blocks.{layer}.ffn.experts.w_gate_up"][0], w[f"blocks.{layer}.ffn.experts.w_down"][0]
    f = down.shape[1]
    h = f // g
    rows = torch.cat([gate_up[s * h:(s + 1) * h], gate_up[f + s * h:f + (s + 1) * h]])
    return rows, down[:, s * h:(s + 1) * h] * g


@pytest.mark.parametrize(("g", "E", "K"), [(1, 4, 2), (2, 4, 2), (2, 8, 4), (4, 8, 4), (4, 16, 8)])
def test_fine_grained_experts_keep_the_dense_function(g: int, E: int, K: int) -> None:
    dense = dense_model(window=5, n_global=1)  # T = 40 > window: the windowed path too
    moe = upcycle(dense, E, K, seed=2, granularity=g)
    assert (moe.config.n_experts, moe.config.top_k, moe.config.d_ff) == (E, K, 96 // g)
    tokens = torch.randint(0, 256, (3, 40))
    with torch.no_grad():
        got = moe(tokens)
        torch.testing.assert_close(got.logits, dense(tokens).logits, atol=1e-5, rtol=1e-5)
    # expert c * g + s is copy c of segment s, sliced by hand
    for layer in range(2):
        experts = moe.blocks[layer].ffn.experts
        for e in range(E):
            rows, cols = segment_reference(dense, layer, g, e % g)
            assert torch.equal(experts.w_gate_up[e], rows) and torch.equal(experts.w_down[e], cols)
    # each token gets every segment K / g times, and more than one copy of the segments is in use
    x = torch.randn(50, 64)
    _, _, chosen_NK = moe.blocks[0].ffn.router(x)
    per_segment = torch.stack([(chosen_NK % g == s).sum(dim=1) for s in range(g)], dim=1)
    assert (per_segment == K // g).all()
    assert got.expert_load is not None
    if E > K:
        assert ((got.expert_load > 0).sum(dim=1) > K).all()


def test_without_the_scale_fine_grained_experts_would_change_the_function() -> None:
    # the scale by g is what makes the renormalised gates add up: check the test would see it missing
    dense = dense_model()
    moe = upcycle(dense, 8, 4, granularity=2)
    with torch.no_grad():
        for blk in moe.blocks:
            blk.ffn.experts.w_down /= 2
        tokens = torch.randint(0, 256, (2, 20))
        assert (moe(tokens).logits - dense(tokens).logits).abs().max() > 1e-3


@pytest.mark.parametrize(("g", "rate"), [(1, 0.25), (2, 0.5), (4, 0.125)])
def test_drop_upcycling_redraws_exactly_the_share_and_other_units_per_expert(g: int, rate: float) -> None:
    dense = dense_model()
    kept = upcycle(dense, 4 * g, 2 * g, seed=5, granularity=g)
    dropped = upcycle(dense, 4 * g, 2 * g, seed=5, granularity=g, drop_rate=rate)
    h = 96 // g
    for layer in range(2):
        a, b = kept.blocks[layer].ffn.experts, dropped.blocks[layer].ffn.experts
        unit_sets = []
        for e in range(4 * g):
            gate = (a.w_gate_up[e, :h] != b.w_gate_up[e, :h]).any(dim=1)
            up = (a.w_gate_up[e, h:] != b.w_gate_up[e, h:]).any(dim=1)
            down = (a.w_down[e] != b.w_down[e]).any(dim=0)
            assert torch.equal(gate, up) and torch.equal(gate, down)  # a unit is redrawn whole
            assert int(gate.sum()) == round(rate * h)
            unit_sets.append(frozenset(gate.nonzero().flatten().tolist()))
        assert len(set(unit_sets)) == len(unit_sets)  # different units in every expert
        # redrawn from the parent matrices' statistics: the fresh down columns have the scaled parent's spread
        fresh = torch.cat([b.w_down[e][:, sorted(u)].flatten() for e, u in enumerate(unit_sets)])
        assert abs(fresh.std().item() / a.w_down.std().item() - 1) < 0.25
    assert torch.equal(kept.blocks[0].ffn.router.weight, dropped.blocks[0].ffn.router.weight)
    again = upcycle(dense, 4 * g, 2 * g, seed=5, granularity=g, drop_rate=rate)
    assert torch.equal(again.blocks[1].ffn.experts.w_down, dropped.blocks[1].ffn.experts.w_down)  # seeded
    tokens = torch.randint(0, 256, (2, 20))
    with torch.no_grad():
        assert (dropped(tokens).logits - dense(tokens).logits).abs().max() > 1e-3


def test_zero_router_keeps_the_function_with_uniform_gates() -> None:
    dense = dense_model()
    moe = upcycle(dense, 4, 2, router_init="zero")
    assert all(torch.count_nonzero(blk.ffn.router.weight) == 0 for blk in moe.blocks)
    _, weights, _ = moe.blocks[0].ffn.router(torch.randn(5, 64))
    assert torch.equal(weights, torch.full_like(weights, 0.5))
    tokens = torch.randint(0, 256, (2, 30))
    with torch.no_grad():
        torch.testing.assert_close(moe(tokens).logits, dense(tokens).logits, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"n_experts": 8, "top_k": 3, "granularity": 2}, r"top_k \(3\) must be a multiple of granularity 2"),
    ({"n_experts": 10, "top_k": 5, "granularity": 5}, r"d_ff \(96\) is not divisible by granularity 5"),
    ({"n_experts": 6, "top_k": 4, "granularity": 4}, r"n_experts \(6\) must be a multiple of granularity 4"),
    ({"n_experts": 8, "top_k": 4, "granularity": 2, "router_init": "zero"}, "router_init 'zero' ties every expert"),
    ({"n_experts": 4, "top_k": 2, "router_init": "uniform"}, "router_init must be one of"),
    ({"n_experts": 4, "top_k": 2, "drop_rate": 1.5}, r"drop_rate must be in \[0, 1\]"),
    ({"n_experts": 4, "top_k": 2, "granularity": 0}, "granularity must be an integer >= 1"),
])
def test_fine_grained_refusals(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        upcycle(dense_model(), **kwargs)


def test_cli_fine_grained_with_drop_and_its_record(tmp_path, capsys) -> None:
    parent = save_checkpoint(dense_model(), tmp_path / "dense")
    out = tmp_path / "moe"
    args = ["upcycle", str(parent), "--experts", "8", "--top-k", "4", "--granularity", "2", "--drop-rate", "0.25",
            "--out", str(out)]
    assert cli_main(args) == 0
    ckpt = Checkpoint.open(out)
    assert (ckpt.config.n_experts, ckpt.config.top_k, ckpt.config.d_ff) == (8, 4, 48)
    assert ckpt.extra["upcycle"] == {"n_experts": 8, "top_k": 4, "seed": 0, "router_std": 0.02,
                                         "granularity": 2, "drop_rate": 0.25, "router_init": "normal"}
    want = upcycle(Checkpoint.open(parent).load_model(), 8, 4, granularity=2, drop_rate=0.25)
    assert torch.equal(ckpt.load_model().blocks[1].ffn.experts.w_gate_up, want.blocks[1].ffn.experts.w_gate_up)
    assert cli_main(["upcycle", str(parent), "--experts", "8", "--top-k", "3", "--granularity", "2",
                     "--out", str(tmp_path / "bad")]) == 1
    assert "must be a multiple of granularity 2" in capsys.readouterr().err
