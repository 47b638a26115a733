from __future__ import annotations

import json

import pytest
import torch

from smallcode.cli.main import main as cli_main
from smallcode.config import ConfigError
from smallcode.model import PRESETS, ModelConfig, SmallCodeLM


def tiny(**overrides: object) -> ModelConfig:
    return ModelConfig.preset("tiny", **overrides)


@pytest.mark.parametrize("config", [tiny(), tiny(n_experts=1, top_k=1), tiny(tie_embeddings=True),
                                    tiny(head_dim=24), ModelConfig.preset("nano"), tiny(qkv_bias=True),
                                    tiny(qkv_bias=True, out_bias=True, head_dim=24)])
def test_counts_equal_built_model(config: ModelConfig) -> None:
    model = SmallCodeLM(config)
    assert config.num_params() == sum(p.numel() for p in model.parameters())
    # active = everything except the (E - k) experts a token skips, counted from the built weights
    expert_w = sum(p.numel() for n, p in model.named_parameters() if ".experts." in n)
    assert config.num_active_params() == config.num_params() - expert_w + expert_w * config.top_k // config.n_experts


@pytest.mark.parametrize("name", ["small", "smallcode-16b-a4b"])
def test_large_presets_count_without_allocating(name: str) -> None:
    config = ModelConfig.preset(name)
    with torch.device("meta"):  # shapes only: the 16B flagship costs no memory
        model = SmallCodeLM(config)
    assert config.num_params() == sum(p.numel() for p in model.parameters())


def test_preset_ranges() -> None:
    nano, small, flag = (ModelConfig.preset(n) for n in ("nano", "small", "smallcode-16b-a4b"))
    assert 5e6 <= nano.num_params() <= 20e6
    assert 100e6 <= small.num_active_params() <= 150e6
    assert 15.5e9 <= flag.num_params() <= 16.5e9
    assert 3.8e9 <= flag.num_active_params() <= 4.2e9
    assert flag.top_k == 2 and set(PRESETS) >= {"nano", "small", "smallcode-16b-a4b"}


@pytest.mark.parametrize(("overrides", "field"), [
    ({"d_model": 66}, "d_model"),
    ({"n_kv_heads": 3}, "n_heads"),
    ({"top_k": 5}, "top_k"),
    ({"window": 0}, "window"),
    ({"n_layers": -1}, "n_layers"),
    ({"n_global": -2}, "n_global"),
    ({"d_ff": 1.5}, "d_ff"),
    ({"rope_scaling": "yarn"}, "rope_scaling"),
    ({"rope_factor": 0.0}, "rope_factor"),
    ({"rope_scaling": "llama3", "rope_low_freq_factor": 4.0}, "rope_high_freq_factor"),
    ({"rope_original_max_len": 0}, "rope_original_max_len"),
    ({"qkv_bias": 1}, "qkv_bias"),
])
def test_invalid_configs_name_the_field(overrides: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        tiny(**overrides)


def test_unknown_preset_and_field() -> None:
    with pytest.raises(ConfigError, match="nano"):
        ModelConfig.preset("gigantic")
    with pytest.raises(ConfigError, match="unknown field"):
        ModelConfig.from_dict({"d_modle": 3})


def test_config_round_trip(tmp_path) -> None:
    c = tiny(tie_embeddings=True)
    for name in ("c.json", "c.yaml"):
        c.save(tmp_path / name)
        assert ModelConfig.load(tmp_path / name) == c
    assert c.with_overrides(["window=8", "rope_base=500"]).window == 8


def test_flops_count_visible_keys_naively() -> None:
    c = tiny(window=4, n_global=2)
    T = 10
    keys = sum(sum(1 for j in range(i + 1) if i - j < 4 or j < 2) for i in range(T)) / T
    active = c.num_active_params() - c.vocab_size * c.d_model
    assert c.flops_per_token(T, training=False) == pytest.approx(2 * active + 4 * c.n_layers * c.n_heads * c.hd * keys)


def test_cli_params_json(capsys) -> None:
    assert cli_main(["params", "smallcode-16b-a4b", "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert isinstance(out["total_params"], int) and 15.5e9 <= out["total_params"] <= 16.5e9
    assert isinstance(out["active_params"], int) and 3.8e9 <= out["active_params"] <= 4.2e9


def test_cli_params_table_and_errors(capsys) -> None:
    assert cli_main(["params", "nano"]) == 0
    out = capsys.readouterr().out
    for word in ("embedding", "attention", "experts", "router", "per layer"):
        assert word in out
    assert cli_main(["params", "nano", "--set", "n_heads=7"]) == 1
    err = capsys.readouterr().err
    assert "n_heads" in err and "Traceback" not in err
    assert cli_main(["params", "nope"]) == 1
    assert "allowed presets" in capsys.readouterr().err
