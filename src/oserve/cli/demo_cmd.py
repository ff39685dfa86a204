"""``oserve demo``: the built-in end-to-end job on the built-in defaults.

Today it tells the first half of the story — the traffic is heterogeneous and no single replica shape serves all
of it best: it builds a shifting workload from the real Azure 2023 code and conversation hours (alternating
10-minute phases), types the requests, and asks the cost model which replica shape gives the most throughput per
GPU for each type. Planning, simulation and switching join it as those pieces land.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import typer
from rich.table import Table

from oserve.cli.console import make_console
from oserve.cli.perf_cmd import cost_table
from oserve.perf import CostModel, builtin_calibration
from oserve.report.trace_plots import plot_trace
from oserve.spec import ReplicaConfig, get_gpu, get_model
from oserve.trace import Trace, TypeGrid, alternate, load_trace, measure_workload
from oserve.trace.samples import demo_traces

console = make_console()


def _type_table(trace: Trace, grid: TypeGrid, model: str, gpu: str, tps: list[int]) -> tuple[Table, dict]:
    """Per request type: its share and lengths, and the rough throughput per GPU of each TP degree."""
    workload = measure_workload(trace, grid)
    spec, calibration = get_model(model), builtin_calibration()
    models = {tp: CostModel(spec, ReplicaConfig(get_gpu(gpu), tp=tp), calibration) for tp in tps}
    table = Table(
        "type",
        "share",
        "rate req/s",
        "prompt mean",
        "output mean",
        *[f"tp{tp} req/s/GPU" for tp in tps],
        "best",
        title="request types and the replica shape that serves each best (throughput bound per GPU, no SLO)",
    )
    summary = {}
    for load in workload.types:
        if load.count == 0:
            continue
        per_gpu = {
            tp: cm.throughput_bound_rps(load.prompt.mean, load.output.mean) / cm.replica.num_gpus
            for tp, cm in models.items()
        }
        best = max(per_gpu, key=lambda tp: per_gpu[tp])
        cells = [f"[bold]{v:.3f}[/]" if tp == best else f"{v:.3f}" for tp, v in per_gpu.items()]
        table.add_row(
            load.name,
            f"{load.count / len(trace):.0%}",
            f"{load.rate_rps:.2f}",
            f"{load.prompt.mean:,.0f}",
            f"{load.output.mean:,.0f}",
            *cells,
            f"tp{best}",
        )
        summary[load.name] = {
            "rate_rps": load.rate_rps,
            "prompt_mean": load.prompt.mean,
            "output_mean": load.output.mean,
            "req_per_s_per_gpu": per_gpu,
            "best_tp": best,
        }
    return table, summary


def demo(
    model: str = typer.Option("llama-2-70b", "--model", "-m", help="Model (see `oserve spec models`)."),
    gpu: str = typer.Option("h100", "--gpu", "-g", help="GPU type (see `oserve spec gpus`)."),
    out: Path = typer.Option(
        Path("oserve-report"), "--out", "-o", help="Folder for the report (plots, JSON)."
    ),
    phase_s: float = typer.Option(600.0, "--phase", help="Seconds per code / conversation phase."),
    trace: Path | None = typer.Option(
        None, "--trace", help="Use this trace instead of the built-in scenario."
    ),
) -> None:
    """Run the built-in end-to-end job: a shifting real workload, typed, against the cost model; plots and JSON."""
    start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    if trace is not None:
        workload_trace = load_trace(trace)
        origin = str(trace)
    else:
        code, conv, origin = demo_traces()
        workload_trace = alternate([code, conv], phase_s=phase_s, name="shifting code/conv")
    console.rule(f"[bold]OServe demo[/]: {workload_trace.name or 'trace'} ({origin})")
    console.print(
        f"{len(workload_trace):,} requests over {workload_trace.duration_s / 60:.1f} min, "
        f"{workload_trace.rate_rps:.2f} req/s; prompt mean {workload_trace.prompt_tokens.mean():,.0f} "
        f"tokens, output mean {workload_trace.output_tokens.mean():,.0f} tokens"
    )
    grid = TypeGrid.for_types(workload_trace, 6)
    tps = [tp for tp in (1, 2, 4, 8) if CostModel(get_model(model), ReplicaConfig(get_gpu(gpu), tp=tp)).fits]
    table, types = _type_table(workload_trace, grid, model, gpu, tps)
    console.print(cost_table(model, gpu, tps, 1, builtin_calibration()))
    console.print(table)
    best = {v["best_tp"] for v in types.values()}
    if len(best) > 1:
        console.print(
            f"No single shape wins: types prefer {', '.join(f'tp{tp}' for tp in sorted(best))} — "
            "a heterogeneous deployment can serve each with the shape it suits."
        )
    else:
        console.print(f"Every type prefers tp{best.pop()} on this model and GPU.")
    plot = plot_trace(workload_trace, grid, out / "workload.png", window_s=60.0)
    summary = {
        "model": model,
        "gpu": gpu,
        "trace": origin,
        "requests": len(workload_trace),
        "duration_s": workload_trace.duration_s,
        "types": types,
        "grid": grid.to_dict(),
        "wall_seconds": time.perf_counter() - start,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=_json_default))
    console.print(f"report: {plot} and {out / 'summary.json'} ({summary['wall_seconds']:.1f} s)")


def _json_default(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
