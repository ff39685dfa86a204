"""``oserve demo``: the built-in end-to-end job on the built-in defaults.

It builds a shifting workload from the real Azure 2023 code and conversation hours (alternating phases), types the
requests, asks the cost model which replica shape gives the most throughput per GPU for each type, and simulates on
a slice of it: vLLM's default shape, the best homogeneous shape found by simulation, OServe's plan (checked by
simulation), and the adaptive controller (forecast -> plan -> switch, with real switch costs) and its oracle.
Plots: the workload, latency CDFs, the deployment timeline, per-type rates with the forecasts.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import typer
from rich.table import Table

from oserve.adapt.policy import AdaptivePolicy
from oserve.adapt.registry import SimContext, build_policy
from oserve.adapt.scenarios import scale_to_load
from oserve.cli.console import make_console
from oserve.cli.perf_cmd import cost_table
from oserve.perf import CostModel, builtin_calibration
from oserve.planner import default_slo, vllm_default_deployment
from oserve.report.adapt_plots import plot_rates_and_forecasts
from oserve.report.deployment_timeline import plot_deployment_timeline
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
        15.0, "--sim-minutes", min=1.0, help="Minutes of the trace to simulate."
    ),
    load: float = typer.Option(
        0.75,
        "--load",
        min=0.05,
        help="Scale each phase so its p90 minute loads the best homogeneous deployment to this share.",
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
        spec, cl = get_model(model), parse_cluster(cluster)
        slo = default_slo(spec, cl)
        code, conv = (scale_to_load(t, spec, cl, slo, load) for t in (code, conv))
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
    plot_trace(workload_trace, grid, out / "workload.png", window_s=60.0)
    sims = _simulate_policies(window(workload_trace, 0.0, sim_minutes * 60.0), model, cluster, out)
    plot_latency_cdfs(sims, out)
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
    written = ", ".join(sorted(f.name for f in out.iterdir() if f.suffix in (".png", ".json")))
    console.print(f"report in {out}/: {written} ({summary['wall_seconds']:.1f} s)")


DEMO_POLICIES = ("static", "oserve-static", "oserve", "oserve-oracle")


def _simulate_policies(trace: Trace, model: str, cluster: str, out: Path) -> dict[str, SimResult]:
    """On a slice of the scenario: vLLM's default shape behind round-robin, then ``oserve simulate``'s policies —
    the best homogeneous shape found by simulating every candidate (hindsight), OServe's plan checked by
    simulation (static), and the adaptive controller with a forecast and with the true future — all at the
    model's SLO. Writes the deployment timeline and the per-type rates with the forecasts."""
    spec, cl = get_model(model), parse_cluster(cluster)
    slo = default_slo(spec, cl)
    targets = slo.to_dict()
    sims: dict[str, SimResult] = {}
    runs = {}
    with console.status("simulating ...") as status:
        default = vllm_default_deployment(spec, cl)
        status.update("vllm-default: simulating")
        sims["vllm-default"] = simulate(trace, default, spec, cl, router="round-robin", slo=targets)
        cache: dict = {}
        for name in DEMO_POLICIES:
            ctx = SimContext(
                trace,
                spec,
                cl,
                None,
                None,
                targets,
                lambda text, name=name: status.update(f"{name}: {text}"),
                DEMO_POLICIES,
                cache,
            )
            status.update(f"{name}: planning")
            run = build_policy(name, ctx)
            runs[name] = run
            status.update(f"{name}: simulating {len(trace):,} requests")
            sims[name] = run.result or simulate(
                trace, run.deployment, spec, cl, router=run.router, policy=run.policy, slo=targets
            )
            sims[name].summary["deployment"] = run.deployment.describe()
    table = Table(
        "policy",
        "deployment (start)",
        "TTFT p50/p99 s",
        "TPOT p50/p99 ms",
        "E2E p50/p99 s",
        "goodput req/s",
        "SLO att.",
        "switches",
        title=f"simulated: {len(trace):,} requests of the scenario on {cl.name} ({slo.describe()})",
    )
    sims["vllm-default"].summary["deployment"] = default.describe()
    for name, r in sims.items():
        m = r.summary
        table.add_row(
            name,
            m["deployment"],
            f"{m['ttft_p50']:.2f}/{m['ttft_p99']:.2f}",
            f"{m['tpot_p50'] * 1e3:.0f}/{m['tpot_p99'] * 1e3:.0f}",
            f"{m['e2e_p50']:.1f}/{m['e2e_p99']:.1f}",
            f"{m['goodput_rps']:.2f}",
            f"{m['slo_attainment']:.1%}",
            str(m["switches"]),
        )
    console.print(table)
    adaptive = runs["oserve"].policy
    if isinstance(adaptive, AdaptivePolicy):
        for d in adaptive.switches:
            console.print(f"oserve switched at {d.time_s / 60:.1f} min: {d.reason} -> {d.target.describe()}")
        plot_rates_and_forecasts(
            trace,
            adaptive.grid,
            adaptive.forecasts,
            out / "rates_forecasts.png",
            switches_s=[d.time_s for d in adaptive.switches],
        )
    plot_deployment_timeline(sims, out)
    return sims


def _json_default(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
