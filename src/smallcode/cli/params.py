"""``smallcode params PRESET``: a model's size from its config alone, as a table or JSON."""

from __future__ import annotations

import json

import click

from smallcode.model.config import ModelConfig


def size_report(config: ModelConfig) -> dict:
    b = config.param_breakdown()
    per_layer = {k: v // config.n_layers for k, v in b.items() if k in ("attention", "experts", "router")}
    per_layer["norms"] = 2 * config.d_model
    return {
        "total_params": config.num_params(),
        "active_params": config.num_active_params(),
        "breakdown": b,
        "per_layer": per_layer,
        "per_layer_total": sum(per_layer.values()),
        "train_flops_per_token": config.flops_per_token(config.max_seq_len),
        "config": config.to_dict(),
    }


@click.command()
@click.argument("preset")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
@click.option("--set", "overrides", multiple=True, metavar="FIELD=VALUE", help="Override a config field.")
def params(preset: str, as_json: bool, overrides: tuple[str, ...]) -> None:
    """Count the parameters of PRESET (total and active per token) without building it."""
    config = ModelConfig.preset(preset).with_overrides(list(overrides))
    report = size_report(config)
    if as_json:
        click.echo(json.dumps(report))
        return
    from rich.console import Console
    from rich.table import Table

    def fmt(n: float) -> str:
        return f"{n / 1e9:.3f}B" if n >= 1e9 else f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n:,}"

    t = Table(title=f"{preset}: {fmt(report['total_params'])} total, {fmt(report['active_params'])} active")
    t.add_column("component")
    t.add_column("total", justify="right")
    t.add_column("per layer", justify="right")
    t.add_column("active / token", justify="right")
    for name, n in report["breakdown"].items():
        active = n * config.top_k // config.n_experts if name == "experts" else n
        per = report["per_layer"].get(name)
        t.add_row(name, fmt(n), fmt(per) if per is not None else "", fmt(active))
    t.add_row("all", fmt(report["total_params"]), fmt(report["per_layer_total"]),
              fmt(report["active_params"]), style="bold")
    c = config
    Console().print(t)
    click.echo(f"layers {c.n_layers}, d_model {c.d_model}, heads {c.n_heads}/{c.n_kv_heads} kv, "
               f"experts {c.n_experts} top-{c.top_k}, window {c.window} + {c.n_global} global, "
               f"context {c.max_seq_len}")
