"""``oserve spec``: list and show the built-in models, GPUs and parsed clusters."""

from __future__ import annotations

import typer
from rich.table import Table

from oserve.cli.console import make_console
from oserve.spec import get_gpu, get_model, list_gpus, list_models, parse_cluster

app = typer.Typer(no_args_is_help=True, help="Show models, GPU types and clusters OServe knows.")
console = make_console()


@app.command("models")
def models() -> None:
    """List the built-in models with their size, context length and KV bytes per token."""
    table = Table(
        "name",
        "HF id",
        "layers",
        "hidden",
        "heads/kv",
        "experts",
        "context",
        "params (B)",
        "weights (GiB)",
        "KV KiB/token",
        title="built-in models (any config.json path also works)",
    )
    for name in list_models():
        m = get_model(name)
        table.add_row(
            name,
            m.hf_id,
            str(m.num_layers),
            str(m.hidden_size),
            f"{m.num_heads}/{m.num_kv_heads}",
            f"{m.experts_per_token}/{m.num_experts}" if m.is_moe else "-",
            str(m.max_position_embeddings),
            f"{m.param_count / 1e9:.1f}",
            f"{m.weight_bytes / 2**30:.1f}",
            f"{m.kv_bytes_per_token / 1024:.0f}",
        )
    console.print(table)


@app.command("gpus")
def gpus() -> None:
    """List the built-in GPU types."""
    table = Table(
        "name",
        "memory (GiB)",
        "bf16 TFLOP/s",
        "HBM GB/s",
        "NVLink GB/s",
        "$/hour",
        title="built-in GPU types",
    )
    for name in list_gpus():
        g = get_gpu(name)
        table.add_row(
            name,
            f"{g.memory_gib:.1f}",
            f"{g.bf16_flops / 1e12:.0f}",
            f"{g.hbm_gb_per_s:.0f}",
            f"{g.nvlink_gb_per_s:.0f}" if g.has_nvlink else "PCIe",
            f"{g.price_per_hour:.2f}",
        )
    console.print(table)


@app.command("cluster")
def cluster(
    spec: str = typer.Argument(..., help="compact spelling (2x8xH100+1x4xL40S) or a YAML file"),
) -> None:
    """Parse a cluster spec and show its nodes."""
    c = parse_cluster(spec)
    table = Table("node", "GPU", "GPUs", "link", "intra GB/s", "network GB/s", title=f"cluster {c.name}")
    for node in c.nodes:
        table.add_row(
            str(node.index),
            node.gpu.name,
            str(node.num_gpus),
            node.intra_link,
            f"{node.intra_gb_per_s:.0f}",
            f"{node.network_gb_per_s:.0f}",
        )
    console.print(table)
    console.print(f"{c.num_gpus} GPUs, ${c.total_price_per_hour():.2f}/hour")
