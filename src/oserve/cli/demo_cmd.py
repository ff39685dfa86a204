"""``oserve demo``: the built-in end-to-end job on the built-in defaults.

Today it tells the first half of the story: it builds a shifting workload from the real Azure 2023 code and
conversation hours (alternating 10-minute phases), types the requests, asks the cost model which replica shape gives
the most throughput per GPU for each type, and simulates the static baselines (vLLM's default shape, and the best
homogeneous shape found by simulation) on a slice of it. The heterogeneous plan and switching join as they land.
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
from oserve.planner import (
    default_slo,
    demands_from_trace,
    plan,
    simulated_best_homogeneous,
    vllm_default_deployment,
)
from oserve.report.sim_plots import plot_latency_cdfs
from oserve.report.trace_plots import plot_trace
from oserve.sim import SimResult, simulate
from oserve.spec import ReplicaConfig, get_gpu, get_model, parse_cluster
from oserve.trace import Trace, TypeGrid, alternate, load_trace, measure_workload, window
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
    cluster: str = typer.Option("1x8xH100", "--cluster", "-c", help="Cluster for the simulation."),
    sim_minutes: float = typer.Option(
        20.0, "--sim-minutes", min=1.0, help="Minutes of the trace to simulate."
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
    sims = _simulate_baselines(window(workload_trace, 0.0, sim_minutes * 60.0), model, cluster)
    cdf = plot_latency_cdfs(sims, out)
    summary = {
        "model": model,
        "gpu": gpu,
        "trace": origin,
        "requests": len(workload_trace),
        "duration_s": workload_trace.duration_s,
        "types": types,
        "grid": grid.to_dict(),
        "simulation": {name: r.summary for name, r in sims.items()},
        "wall_seconds": time.perf_counter() - start,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=_json_default))
    console.print(f"report: {plot}, {cdf} and {out / 'summary.json'} ({summary['wall_seconds']:.1f} s)")


def _simulate_baselines(trace: Trace, model: str, cluster: str) -> dict[str, SimResult]:
    """On a slice of the scenario: vLLM's default shape behind round-robin, the best homogeneous shape found by
    simulating every candidate (hindsight), and OServe's plan for the slice (static), all at the model's SLO."""
    spec, cl = get_model(model), parse_cluster(cluster)
    slo = default_slo(spec, cl)
    targets = slo.to_dict()
    with console.status("planning and simulating the homogeneous candidates ..."):
        demands, grid = demands_from_trace(trace, peak_quantile=0.9)
        planned = plan(spec, cl, demands, slo, grid=grid)
        default = vllm_default_deployment(spec, cl)
        best, best_result, searched = simulated_best_homogeneous(trace, spec, cl, slo=targets)
        sims = {
            "vllm-default (round-robin)": simulate(
                trace, default, spec, cl, router="round-robin", slo=targets
            ),
            f"best homogeneous: {best.describe()}": best_result,
            f"oserve-static: {planned.deployment.describe()}": simulate(
                trace, planned.deployment, spec, cl, router="allowed-least-tokens", slo=targets
            ),
        }
    console.print(
        f"OServe plan for the slice's p90 minute ({slo.describe()}): {planned.deployment.note}, alpha "
        f"{planned.alpha:.2f} vs {planned.baseline_alpha:.2f} for the {planned.baseline.note} "
        f"({planned.gain:.3f}x, {planned.solve_seconds:.2f} s)"
    )
    table = Table(
        "policy",
        "TTFT p50/p99 s",
        "TPOT p50/p99 ms",
        "E2E p50/p99 s",
        "goodput req/s",
        "SLO att.",
        title=f"simulated: {len(trace):,} requests of the scenario on {cl.name} "
        f"({searched} homogeneous shapes searched)",
    )
    for name, r in sims.items():
        m = r.summary
        table.add_row(
            name,
            f"{m['ttft_p50']:.2f}/{m['ttft_p99']:.2f}",
            f"{m['tpot_p50'] * 1e3:.0f}/{m['tpot_p99'] * 1e3:.0f}",
            f"{m['e2e_p50']:.1f}/{m['e2e_p99']:.1f}",
            f"{m['goodput_rps']:.2f}",
            f"{m['slo_attainment']:.1%}",
        )
    console.print(table)
    return sims


def _json_default(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
