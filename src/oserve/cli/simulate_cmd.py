"""``oserve simulate``: replay a trace through the cluster under one or more policies and compare them."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from oserve.adapt.forecast import make_forecaster
from oserve.adapt.policy import DemandSource, ForecastSource, OracleSource, start_adaptive
from oserve.cli.console import make_console
from oserve.cli.options import SLO_HELP, slo_option
from oserve.errors import ConfigError
from oserve.planner import Slo, simulated_best_homogeneous, simulated_best_plan
from oserve.planner.disagg_plan import pools_policy
from oserve.planner.dynamo import DYNAMO_ROUTER, dynamo_policy
from oserve.report.deployment_timeline import plot_deployment_timeline
from oserve.report.sim_plots import plot_latency_cdfs, plot_timeline
from oserve.sim import Policy, SimResult, StaticPolicy, simulate
from oserve.spec import Cluster, Deployment, ModelSpec, get_model, parse_cluster
from oserve.trace import Trace, load_trace, scale_rate, window

console = make_console()
DEFAULT_MODEL = "llama-2-70b"


@dataclass(slots=True)
class SimContext:
    """What a policy builder gets: the scenario and the options the user gave."""

    trace: Trace
    model: ModelSpec
    cluster: Cluster
    deployment: Deployment | None
    router: str | None  # the user's --router; None lets each policy choose
    slo: dict[str, float]
    progress: Callable[[str], None]
    policies: tuple[str, ...] = ()  # every policy of this run, so one may reuse another's search
    cache: dict[str, PlannedRun] = field(default_factory=dict)
    oracle_lengths: bool = False  # type and route by the true output lengths (the replay's hindsight)


@dataclass(slots=True)
class PlannedRun:
    """A policy's starting deployment and switch policy; ``result`` when planning already simulated it."""

    deployment: Deployment
    policy: Policy | None
    result: SimResult | None = None
    router: str = "weighted"  # the policy's router unless the user gave --router


PolicyBuilder = Callable[[SimContext], PlannedRun]


def _static(ctx: SimContext) -> PlannedRun:
    """A fixed deployment: ``--deployment``, else the best homogeneous one by simulation of the whole trace."""
    if ctx.deployment is not None:
        spec = ctx.deployment.router  # the router the deployment was planned under, unless --router
        return PlannedRun(ctx.deployment, StaticPolicy(), router=spec.type if spec is not None else "weighted")
    if "static" not in ctx.cache:
        router = ctx.router or "weighted"
        deployment, result, _ = simulated_best_homogeneous(
            ctx.trace,
            ctx.model,
            ctx.cluster,
            router=router,
            slo=ctx.slo,
            progress=lambda label: ctx.progress(f"searching homogeneous: {label}"),
            oracle_lengths=ctx.oracle_lengths,
        )
        ctx.cache["static"] = PlannedRun(deployment, StaticPolicy(), result, router)
    return ctx.cache["static"]


def _llumnix(ctx: SimContext) -> PlannedRun:
    """Llumnix (OSDI'24) on the static policy's deployment: each request to the freest replica, and requests
    migrated from overloaded replicas to free ones every 0.5 s (``routing.Llumnix``, ``sim.migration``)."""
    deployment = _static(ctx).deployment
    return PlannedRun(deployment, StaticPolicy(), router="llumnix")


def _oserve_static(ctx: SimContext) -> PlannedRun:
    """OServe's plan for the whole trace (its own type grid, the run's SLO), fixed: plans for the trace's median,
    p90 and p99 minute, each checked by simulation (and, when ``static`` runs too, against its deployment); the
    best in goodput, then p99 E2E, is kept, with the router it was checked under (least load among the replicas
    the plan lets serve a type, or the plan's weights)."""
    seeds = []
    if "static" in ctx.policies and ctx.deployment is None:
        base = _static(ctx)
        seeds.append(("best homogeneous", base.deployment, base.router, base.result))
    verified = simulated_best_plan(
        ctx.trace,
        ctx.model,
        ctx.cluster,
        Slo.from_dict(ctx.slo),
        seeds=seeds,
        progress=ctx.progress,
        oracle_lengths=ctx.oracle_lengths,
    )
    return PlannedRun(verified.deployment, StaticPolicy(), verified.result, verified.router)


def _adaptive(ctx: SimContext, source: DemandSource) -> PlannedRun:
    seeds = []
    if "static" in ctx.policies and ctx.deployment is None:
        base = _static(ctx)
        if base.result is not None:
            seeds.append((base.deployment, base.result))
    deployment, policy = start_adaptive(
        ctx.trace,
        ctx.model,
        ctx.cluster,
        Slo.from_dict(ctx.slo),
        source,
        prior=ctx.trace,  # planned on the trace's traffic, the information the static policies get
        seeds=seeds,  # and never started worse than the best homogeneous deployment, where it ran too
        progress=ctx.progress,
    )
    return PlannedRun(deployment, policy, router=policy.router)


def _oserve(ctx: SimContext) -> PlannedRun:
    """Adaptive: every minute, forecast each type's rate (EWMA over the last 15 minutes), re-plan, and switch when
    the gain over the next 5 minutes beats the switch plan's cost (30 s engine restarts, weights moved over the
    fastest links)."""
    return _adaptive(ctx, ForecastSource(make_forecaster("ewma")))


def _oserve_oracle(ctx: SimContext) -> PlannedRun:
    """``oserve`` with the true future rates instead of a forecast: an upper bound for the adaptive policy."""
    return _adaptive(ctx, OracleSource())


#: Policies by the name users type; the adaptive layer adds its own here.
POLICIES: dict[str, PolicyBuilder] = {
    "static": _static,
    "oserve-static": _oserve_static,
    "oserve": _oserve,
    "oserve-oracle": _oserve_oracle,
    "llumnix": _llumnix,
    "dynamo": lambda c: PlannedRun(dynamo_policy(c.trace, c.model, c.cluster, c.slo), None, router=DYNAMO_ROUTER),
    "oserve-disagg": lambda c: PlannedRun(*pools_policy(c.trace, c.model, c.cluster, c.slo)),
}


def simulate_cmd(
    trace: Path = typer.Option(
        ..., "--trace", "-t", help="Trace file (any format `oserve trace stats` reads)."
    ),
    model: str | None = typer.Option(
        None,
        "--model",
        "-m",
        help="Model (see `oserve spec models`); default: the --deployment file's, else llama-2-70b.",
    ),
    cluster: str = typer.Option("2x8xH100", "--cluster", "-c", help="Cluster: 2x8xH100, ... or a YAML file."),
    policy: str = typer.Option("static", "--policy", "-p", help="Comma-separated policies to compare."),
    deployment: Path | None = typer.Option(None, "--deployment", "-d", help="Deployment file for `static`."),
    router: str | None = typer.Option(
        None,
        "--router",
        help="weighted | allowed-least-load | allowed-least-work | allowed-least-tokens | round-robin | "
        "least-tokens | jsq | llumnix; "
        "default: each policy's own (static: weighted; oserve-static: the one its simulation check picked; "
        "oserve: allowed-least-work; llumnix: llumnix).",
    ),
    rate_scale: float = typer.Option(
        1.0, "--rate-scale", min=0.0, help="Scale the arrival rate (thin/replicate)."
    ),
    duration: float | None = typer.Option(
        None, "--duration", min=1.0, help="Keep arrivals in the first S seconds."
    ),
    slo: str = typer.Option("auto", "--slo", help=SLO_HELP),
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
    oracle_lengths: bool = typer.Option(
        False,
        "--oracle-lengths",
        help="Type and route requests by their true output lengths (hindsight no gateway has); default: as the "
        "gateway does, from prompt, max_tokens and the output estimate learned from completions.",
    ),
) -> None:
    """Replay a trace through the cluster under each policy; print and compare latency, goodput and GPU-seconds."""
    start = time.perf_counter()
    names = [p.strip() for p in policy.split(",") if p.strip()]
    unknown = [p for p in names if p not in POLICIES]
    if not names or unknown:
        raise ConfigError(
            f"unknown policy {', '.join(unknown) or '(none)'}; choose from {', '.join(POLICIES)}"
        )
    fixed = Deployment.load(deployment) if deployment else None
    spec, cl = _model_of(model, fixed), parse_cluster(cluster)
    workload = load_trace(trace)
    if rate_scale != 1.0:
        workload = scale_rate(workload, rate_scale, seed=seed)
    if duration is not None:
        workload = window(workload, 0.0, duration)
    if len(workload) == 0:
        raise ConfigError("the trace has no requests in the chosen window")
    if fixed is not None:
        fixed.validate(cl)
    targets = slo_option(slo, spec, cl).to_dict()
    results: dict[str, SimResult] = {}
    labels: dict[str, str] = {}
    cache: dict[str, PlannedRun] = {}
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
                tuple(names),
                cache,
                oracle_lengths,
            )
            bar.update(task, description=f"{name}: planning")
            run = POLICIES[name](ctx)
            labels[name] = run.deployment.describe()
            bar.update(task, description=f"{name}: simulating {len(workload):,} requests")
            results[name] = run.result or simulate(
                workload,
                run.deployment,
                spec,
                cl,
                router=router or run.router,
                policy=run.policy,
                slo=targets,
                oracle_lengths=oracle_lengths,
            )
            results[name].summary["deployment"] = labels[name]
            bar.advance(task)
    wall = time.perf_counter() - start
    console.print(_table(results, labels, workload, spec, cl, oracle_lengths))
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(
            json.dumps(
                {
                    "policies": {n: r.summary for n, r in results.items()},
                    "oracle_lengths": oracle_lengths,
                    "wall_seconds": wall,
                },
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


def _model_of(model: str | None, deployment: Deployment | None) -> ModelSpec:
    """The model to simulate: ``--model``, else the deployment file's; both given, they must agree."""
    if deployment is None or not deployment.model:
        return get_model(model or DEFAULT_MODEL)
    planned = get_model(deployment.model)
    if model is None:
        return planned
    spec = get_model(model)
    if spec.name != planned.name:
        raise ConfigError(
            f"the deployment serves {deployment.model!r} but --model is {model!r}; drop --model to simulate "
            "the deployment's model"
        )
    return spec


def _table(
    results: dict[str, SimResult],
    labels: dict[str, str],
    trace: Trace,
    model: ModelSpec,
    cluster: Cluster,
    oracle_lengths: bool = False,
) -> Table:
    seen = "oracle output lengths (hindsight)" if oracle_lengths else "typed as the gateway sees requests"
    table = Table(
        "policy",
        "deployment",
        "GPU-h",
        "TTFT p50/p99 s",
        "TPOT p50/p99 ms",
        "E2E p50/p99 s",
        "goodput req/s",
        "SLO att.",
        "done/rejected",
        "switches",
        title=f"{model.name} on {cluster.name}: {len(trace):,} requests, {trace.rate_rps:.2f} req/s; {seen}",
    )
    for name, r in results.items():
        s = r.summary
        table.add_row(
            name,
            labels[name].replace("H100-SXM-80GB", "H100"),
            f"{s['gpu_seconds'] / 3600:.1f}",
            f"{s['ttft_p50']:.2f}/{s['ttft_p99']:.2f}",
            f"{s['tpot_p50'] * 1e3:.0f}/{s['tpot_p99'] * 1e3:.0f}",
            f"{s['e2e_p50']:.1f}/{s['e2e_p99']:.1f}",
            f"{s['goodput_rps']:.2f}",
            f"{s['slo_attainment']:.1%}",
            f"{s['completed']}/{s['rejected'] + s['dropped']}",
            str(s["switches"]) + (f" ({s['migrations']} migr.)" if s.get("migrations") else ""),
        )
    return table
