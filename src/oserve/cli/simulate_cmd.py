"""``oserve simulate``: replay a trace through the cluster under one or more policies and compare them. The policies
are built by name from ``oserve.adapt.registry``; this module only parses options and prints."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from oserve.adapt.registry import (
    PlannedRun,
    SimContext,
    parse_policies,
    policy_help,
    policy_names,
    simulate_policy,
)
from oserve.adapt.scenarios import SCENARIOS, build_scenario, scenario_slo
from oserve.cli.console import make_console
from oserve.cli.options import EDGES_HELP, SLO_HELP, grid_option, slo_classes_option
from oserve.errors import ConfigError
from oserve.planner.slo_classes import SloClasses
from oserve.report.deployment_timeline import plot_deployment_timeline
from oserve.report.sim_plots import plot_latency_cdfs, plot_timeline
from oserve.routing import ROUTERS
from oserve.sim import SimResult
from oserve.spec import Cluster, Deployment, ModelSpec, get_model, parse_cluster
from oserve.trace import Trace, load_trace, scale_rate, window

console = make_console()
DEFAULT_MODEL = "llama-2-70b"


def simulate_cmd(
    trace: Path | None = typer.Option(
        None, "--trace", "-t", help="Trace file (any format `oserve trace stats` reads); or --scenario."
    ),
    scenario: str | None = typer.Option(
        None,
        "--scenario",
        help=f"Instead of --trace, a headline scenario built from --traces: {', '.join(SCENARIOS)} "
        "(docs/adapt.md), at --load; its SLO classes when --slo is auto.",
    ),
    traces: Path = typer.Option(
        Path("traces"),
        "--traces",
        envvar="OSERVE_TRACES",
        help="Folder of the Azure 2023 and Mooncake traces the scenarios are built from.",
    ),
    load: float = typer.Option(
        0.75,
        "--load",
        min=0.01,
        max=10.0,
        help="With --scenario: this share of the --load-reference rate.",
    ),
    load_reference: str = typer.Option(
        "planned",
        "--load-reference",
        help="With --scenario, what load 1.0 is: 'planned' (the p90 minute at the best homogeneous deployment's "
        "planned capacity) or 'simulated' (the rate at which static keeps 90% within the SLO in the simulator, "
        "as benchmarks/headline.py; a bisection of simulations, tens of seconds).",
    ),
    phase: float = typer.Option(
        600.0, "--phase", min=10.0, help="With --scenario shifting/day/swing: seconds per phase."
    ),
    model: str | None = typer.Option(
        None,
        "--model",
        "-m",
        help="Model (see `oserve spec models`); default: the --deployment file's, else llama-2-70b.",
    ),
    cluster: str = typer.Option("2x8xH100", "--cluster", "-c", help="Cluster: 2x8xH100, ... or a YAML file."),
    policy: str = typer.Option(
        "static", "--policy", "-p", help=f"Comma-separated policies to compare: {', '.join(policy_names())}."
    ),
    deployment: Path | None = typer.Option(None, "--deployment", "-d", help="Deployment file for `static`."),
    router: str | None = typer.Option(
        None,
        "--router",
        help=f"{' | '.join(ROUTERS)}; "
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
    types: int = typer.Option(
        6,
        "--types",
        min=1,
        max=64,
        help="Request types planning policies cut the trace into (quantiles; 16k+ prompts get their own bucket).",
    ),
    prompt_edges: str | None = typer.Option(None, "--prompt-edges", help=EDGES_HELP.format("prompt")),
    output_edges: str | None = typer.Option(None, "--output-edges", help=EDGES_HELP.format("output")),
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
    names = parse_policies(policy)
    fixed = Deployment.load(deployment) if deployment else None
    spec, cl = _model_of(model, fixed), parse_cluster(cluster)
    if scenario is not None and slo == "auto":
        slo = scenario_slo(scenario)
    classes = slo_classes_option(slo, spec, cl)
    workload = _workload(
        trace, scenario, traces, spec, cl, classes, load, phase, duration, seed, load_reference
    )
    if rate_scale != 1.0:
        workload = scale_rate(workload, rate_scale, seed=seed)
    if duration is not None:
        workload = window(workload, 0.0, duration)
    if len(workload) == 0:
        raise ConfigError("the trace has no requests in the chosen window")
    if fixed is not None:
        fixed.validate(cl)
    targets = classes.default.to_dict()
    grid = grid_option(workload, types, prompt_edges, output_edges, classes.prompt_thresholds)
    if not classes.single:
        unknown = classes.assign(workload)[1]
        if unknown:
            console.print(
                f"[yellow]{unknown:,} requests name a class --slo does not define: default class[/]"
            )
    results: dict[str, SimResult] = {}
    labels: dict[str, str] = {}
    runs: dict[str, PlannedRun] = {}
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
                cache,
                oracle_lengths,
                grid,
                classes,
            )
            bar.update(task, description=f"{name}: planning, then simulating {len(workload):,} requests")
            runs[name], results[name] = simulate_policy(name, ctx)
            labels[name] = runs[name].deployment.describe()
            results[name].summary["deployment"] = labels[name]
            bar.advance(task)
    wall = time.perf_counter() - start
    console.print(_table(results, labels, workload, spec, cl, oracle_lengths))
    if not classes.single:
        console.print(_class_table(results, classes))
    for name, run in runs.items():
        if run.candidates:
            console.print(_start_table(name, run))
    for name, r in results.items():
        if r.summary.get("unholdable"):
            console.print(
                f"[yellow]{name}: {r.summary['unholdable']:,} requests need more than every replica's "
                f"max_model_len: rejected (counted against attainment)[/]"
            )
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(
            json.dumps(
                {
                    "policies": {n: r.summary for n, r in results.items()},
                    "start_candidates": {
                        n: [asdict(c) for c in r.candidates] for n, r in runs.items() if r.candidates
                    },
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


def _workload(
    trace: Path | None,
    scenario: str | None,
    traces: Path,
    model: ModelSpec,
    cluster: Cluster,
    classes: SloClasses,
    load: float,
    phase: float,
    duration: float | None,
    seed: int,
    reference: str = "planned",
) -> Trace:
    """The trace to simulate: ``--trace``, or ``--scenario`` built from ``--traces`` (``duration`` seconds of it)."""
    if (trace is None) == (scenario is None):
        raise ConfigError("give one of --trace FILE or --scenario NAME")
    if trace is not None:
        return load_trace(trace)
    if scenario not in SCENARIOS:
        raise ConfigError(f"unknown scenario {scenario!r}; choose from {', '.join(SCENARIOS)}")
    console.print(f"building scenario {scenario!r} from {traces}/ at load {load:g} ({reference} reference)")
    minutes = None if duration is None else duration / 60.0
    return build_scenario(
        scenario,
        traces,
        model,
        cluster,
        classes.default,
        load=load,
        minutes=minutes,
        phase_s=phase,
        seed=seed,
        reference=reference,
        classes=classes,
        progress=lambda msg: console.print(f"  {msg}"),
    )


def policies_epilog() -> str:
    """The ``--help`` epilog: every registered policy with its docstring's first line."""
    return "Policies:\n\n" + "\n\n".join(f"{name}: {policy_help(name)}" for name in policy_names())


def _class_table(results: dict[str, SimResult], classes: SloClasses) -> Table:
    table = Table(
        "policy", *(f"{n} att." for n in classes.names), "overall", title="SLO attainment per class"
    )
    for name, r in results.items():
        by = r.summary.get("slo_attainment_by_class", {})
        sizes = r.summary.get("requests_by_class", {})
        cells = [f"{by[n]:.1%} ({sizes[n]:,})" if n in by else "-" for n in classes.names]
        table.add_row(name, *cells, f"{r.summary['slo_attainment']:.1%}")
    return table


def _start_table(name: str, run: PlannedRun) -> Table:
    """Every candidate an adaptive policy's start ranked, as each scored on the trace, the start marked: why the
    run began where it did (``oserve``: goodput first, then P99 E2E within 2%; ``oserve-p99``: the lowest P99
    within 2% of static's goodput)."""
    table = Table(
        "candidate", "deployment", "router", "goodput req/s", "P99 E2E s", "mean E2E s", "att.",
        title=f"{name}: start candidates (* = the start)",
    )  # fmt: skip
    for c in run.candidates:
        table.add_row(
            f"{'* ' if c.chosen else ''}{c.label}",
            c.deployment,
            c.router,
            f"{c.goodput_rps:.2f}",
            f"{c.e2e_p99_s:.1f}",
            f"{c.e2e_mean_s:.2f}",
            f"{c.slo_attainment:.1%}",
        )
    return table


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
    hashed = "hash_ids" in trace.extras  # a trace with prefix block hashes: show the prefix-cache hit rate
    if hashed:
        table.add_column("prefix hit")
    for name, r in results.items():
        s = r.summary
        extra = [f"{s['prefix_hit_rate']:.1%}"] if hashed else []
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
            *extra,
        )
    return table
