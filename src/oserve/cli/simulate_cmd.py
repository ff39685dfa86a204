"""``oserve simulate``: replay a trace through the cluster under one or more policies and compare them."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from oserve.cli.console import make_console
from oserve.errors import ConfigError
from oserve.planner import simulated_best_homogeneous
from oserve.report.deployment_timeline import plot_deployment_timeline
from oserve.report.sim_plots import plot_latency_cdfs, plot_timeline
from oserve.sim import Policy, SimResult, StaticPolicy, simulate
from oserve.spec import Cluster, Deployment, ModelSpec, get_model, parse_cluster
from oserve.trace import Trace, load_trace, scale_rate, window

console = make_console()


@dataclass(slots=True)
class SimContext:
    """What a policy builder gets: the scenario and the options the user gave."""

    trace: Trace
    model: ModelSpec
    cluster: Cluster
    deployment: Deployment | None
    router: str
    slo: dict[str, float]
    progress: Callable[[str], None]


@dataclass(slots=True)
class PlannedRun:
    """A policy's starting deployment and switch policy; ``result`` when planning already simulated it."""

    deployment: Deployment
    policy: Policy | None
    result: SimResult | None = None


PolicyBuilder = Callable[[SimContext], PlannedRun]


def _static(ctx: SimContext) -> PlannedRun:
    """A fixed deployment: ``--deployment``, else the best homogeneous one by simulation of the whole trace."""
    if ctx.deployment is not None:
        return PlannedRun(ctx.deployment, StaticPolicy())
    deployment, result, _ = simulated_best_homogeneous(
        ctx.trace,
        ctx.model,
        ctx.cluster,
        router=ctx.router,
        slo=ctx.slo,
        progress=lambda label: ctx.progress(f"searching homogeneous: {label}"),
    )
    return PlannedRun(deployment, StaticPolicy(), result)


#: Policies by the name users type; the planner and adaptive layers add theirs here.
POLICIES: dict[str, PolicyBuilder] = {"static": _static}



def parse_slo(text: str) -> dict[str, float]:
    """``ttft=2,tpot=0.2,e2e=30`` (seconds) -> ``{"ttft_s": 2.0, ...}``."""
    out: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, _, value = part.partition("=")
        key = key.strip().lower().removesuffix("_s")
        if key not in ("ttft", "tpot", "e2e") or not value:
            raise typer.BadParameter(f"expected ttft=S,tpot=S,e2e=S; got {part!r}", param_hint="--slo")
        try:
            out[f"{key}_s"] = float(value)
        except ValueError:
            raise typer.BadParameter(f"{part!r}: not a number", param_hint="--slo") from None
        if out[f"{key}_s"] <= 0:
            raise typer.BadParameter(f"{part!r}: must be positive", param_hint="--slo")
    return out


def simulate_cmd(
    trace: Path = typer.Option(
        ..., "--trace", "-t", help="Trace file (any format `oserve trace stats` reads)."
    ),
    model: str = typer.Option("llama-2-70b", "--model", "-m", help="Model (see `oserve spec models`)."),
    cluster: str = typer.Option("2x8xH100", "--cluster", "-c", help="Cluster: 2x8xH100, ... or a YAML file."),
    policy: str = typer.Option("static", "--policy", "-p", help="Comma-separated policies to compare."),
    deployment: Path | None = typer.Option(None, "--deployment", "-d", help="Deployment file for `static`."),
    router: str = typer.Option("weighted", "--router", help="weighted | round-robin | least-tokens | jsq."),
    rate_scale: float = typer.Option(
        1.0, "--rate-scale", min=0.0, help="Scale the arrival rate (thin/replicate)."
    ),
    duration: float | None = typer.Option(
        None, "--duration", min=1.0, help="Keep arrivals in the first S seconds."
    ),
    slo: str = typer.Option("ttft=2,tpot=0.2", "--slo", help="Latency targets for goodput, seconds."),
    seed: int = typer.Option(0, "--seed", help="Seed for rate scaling."),
    json_out: Path | None = typer.Option(
        None, "--json", help="Write {policies: {name: summary}, wall_seconds}."
    ),
    plot: Path | None = typer.Option(
        None,
        "--plot",
        help="Folder for plots (latency CDFs, throughput and load over time, deployment timeline).",
    ),
    records: Path | None = typer.Option(None, "--records", help="Folder for per-request records (Parquet)."),
) -> None:
    """Replay a trace through the cluster under each policy; print and compare latency, goodput and GPU-seconds."""
    start = time.perf_counter()
    names = [p.strip() for p in policy.split(",") if p.strip()]
    unknown = [p for p in names if p not in POLICIES]
    if not names or unknown:
        raise ConfigError(
            f"unknown policy {', '.join(unknown) or '(none)'}; choose from {', '.join(POLICIES)}"
        )
    spec, cl = get_model(model), parse_cluster(cluster)
    workload = load_trace(trace)
    if rate_scale != 1.0:
        workload = scale_rate(workload, rate_scale, seed=seed)
    if duration is not None:
        workload = window(workload, 0.0, duration)
    if len(workload) == 0:
        raise ConfigError("the trace has no requests in the chosen window")
    fixed = Deployment.load(deployment) if deployment else None
    if fixed is not None:
        fixed.validate(cl)
    targets = parse_slo(slo)
    results: dict[str, SimResult] = {}
    labels: dict[str, str] = {}
    with Progress(
        TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), console=console, transient=True
    ) as bar:
        task = bar.add_task("", total=len(names))
        for name in names:
            ctx = SimContext(
                workload,
                spec,
                cl,
                fixed,
                router,
                targets,
                lambda text, name=name: bar.update(task, description=f"{name}: {text}"),
            )
            bar.update(task, description=f"{name}: planning")
            run = POLICIES[name](ctx)
            labels[name] = run.deployment.describe()
            bar.update(task, description=f"{name}: simulating {len(workload):,} requests")
            results[name] = run.result or simulate(
                workload, run.deployment, spec, cl, router=router, policy=run.policy, slo=targets
            )
            results[name].summary["deployment"] = labels[name]
            bar.advance(task)
    wall = time.perf_counter() - start
    console.print(_table(results, labels, workload, spec, cl))
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(
            json.dumps(
                {"policies": {n: r.summary for n, r in results.items()}, "wall_seconds": wall},
                indent=2,
                default=float,
            )
        )
        console.print(f"wrote {json_out}")
    if plot:
        written = [
            plot_latency_cdfs(results, plot),
            plot_timeline(results, plot),
            plot_deployment_timeline(results, plot),
        ]
        console.print(f"wrote {', '.join(map(str, written))}")
    if records:
        records.mkdir(parents=True, exist_ok=True)
        for n, r in results.items():
            r.write_records(records / f"{n}.parquet")
        console.print(f"wrote per-request records to {records}/")
    console.print(f"{wall:.1f} s")


def _table(
    results: dict[str, SimResult], labels: dict[str, str], trace: Trace, model: ModelSpec, cluster: Cluster
) -> Table:
    table = Table(
        "policy",
        "deployment",
        "TTFT p50/p99 s",
        "TPOT p50/p99 ms",
        "E2E p50/p99 s",
        "goodput req/s",
        "SLO att.",
        "GPU-h",
        "done/dropped",
        "switches",
        title=f"{model.name} on {cluster.name}: {len(trace):,} requests, {trace.rate_rps:.2f} req/s",
    )
    for name, r in results.items():
        s = r.summary
        table.add_row(
            name,
            labels[name].replace("H100-SXM-80GB", "H100"),
            f"{s['ttft_p50']:.2f}/{s['ttft_p99']:.2f}",
            f"{s['tpot_p50'] * 1e3:.0f}/{s['tpot_p99'] * 1e3:.0f}",
            f"{s['e2e_p50']:.1f}/{s['e2e_p99']:.1f}",
            f"{s['goodput_rps']:.2f}",
            f"{s['slo_attainment']:.1%}",
            f"{s['gpu_seconds'] / 3600:.1f}",
            f"{s['completed']}/{s['dropped']}",
            str(s["switches"]),
        )
    return table
