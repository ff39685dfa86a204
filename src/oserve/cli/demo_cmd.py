"""``oserve demo``: the built-in end-to-end job on the built-in defaults.

The scenario where OServe helps most, measured (docs/plan.md, "Long context"): long documents (the Mooncake
synthetic trace: prompts of 15k tokens on average, up to 128k) superposed on the Azure 2023 conversation hour, as
``benchmarks/long_context.py`` blends them, under two SLO classes: chat is interactive (TTFT and TPOT targets),
long documents are ``batch`` (an end-to-end target only). Llama-3.1-8B on 1x8xH100 by default. It types the
requests, shows which replica shape serves each type best, and simulates the first minutes under vLLM's default
deployment, the best homogeneous deployment (found by simulating every shape: hindsight), Llumnix on it, OServe's
plan checked by simulation (long types isolated on replicas of their own among its candidates) and the adaptive
controller. Prints the ratios of OServe against each baseline. Plots: the workload, latency CDFs, the deployment
timeline (switches dashed), goodput and attainment per class; with 10 minutes or more, the per-type rates
with the controller's forecasts.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import typer
from rich.table import Table

from oserve.adapt.policy import AdaptivePolicy
from oserve.adapt.registry import SimContext, simulate_policy
from oserve.cli.console import make_console
from oserve.cli.options import grid_option, slo_classes_option
from oserve.cli.perf_cmd import cost_table
from oserve.perf import CostModel, builtin_calibration
from oserve.planner import default_slo
from oserve.planner.slo_classes import SloClasses
from oserve.report.adapt_plots import plot_rates_and_forecasts
from oserve.report.demo_plots import plot_policy_bars
from oserve.report.deployment_timeline import plot_deployment_timeline
from oserve.report.sim_plots import plot_latency_cdfs
from oserve.report.trace_plots import plot_trace
from oserve.sim import SimResult
from oserve.spec import Cluster, Deployment, ModelSpec, ReplicaConfig, get_gpu, get_model, parse_cluster
from oserve.trace import Trace, TypeGrid, blend, load_trace, measure_workload, scale_rate, window
from oserve.trace.samples import long_demo_traces

console = make_console()
LONG_TOKENS = 16000  # the batch class's prompt rule (benchmarks/long_context.py)
BASELINES = ("vllm", "vllm-reload", "llumnix", "dynamo", "static")
OSERVE = ("oserve-static", "oserve")
DEMO_POLICIES = (*BASELINES, *OSERVE)


def demo_slo(model: ModelSpec, cluster: Cluster) -> str:
    """The two-class ``--slo`` of ``benchmarks/long_context.py``: chat at the model's default TTFT base with half
    its per-token allowance and 0.75x its TPOT; prompts from 16k tokens ``batch``, held to twice the default TTFT
    of a 64k prompt plus 256 tokens at the default TPOT, end to end (75 s on Llama-3.1-8B / H100)."""
    auto = default_slo(model, cluster)
    per_token = auto.ttft_per_token_s or 0.0
    batch_e2e = float(f"{2 * (auto.ttft_s + per_token * 65536 + 256 * auto.tpot_s):.2g}")
    return (
        f"ttft={auto.ttft_s:.3g}+{per_token / 2:.3g}/tok,tpot={auto.tpot_s * 0.75:.3g};"
        f"batch:prompt>={LONG_TOKENS}:e2e={batch_e2e:g}"
    )


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
    model: str = typer.Option("llama-3.1-8b", "--model", "-m", help="Model (see `oserve spec models`)."),
    gpu: str = typer.Option(
        "h100", "--gpu", "-g", help="GPU type for the shape table (see `oserve spec gpus`)."
    ),
    out: Path = typer.Option(
        Path("oserve-report"), "--out", "-o", help="Folder for the report (plots, JSON)."
    ),
    trace: Path | None = typer.Option(
        None, "--trace", help="Use this trace instead of the built-in long-context blend."
    ),
    cluster: str = typer.Option("1x8xH100", "--cluster", "-c", help="Cluster for the simulation."),
    sim_minutes: float = typer.Option(
        2.0, "--sim-minutes", min=0.25, help="Minutes of the trace to simulate (the built-in blend spans 17)."
    ),
    rate_scale: float = typer.Option(
        2.69,
        "--rate-scale",
        min=0.01,
        help="Scale the arrival rate (resample); 2.69: where the best homogeneous deployment of Llama-3.1-8B on "
        "1x8xH100 attains about 84% (docs/plan.md, Long context).",
    ),
    slo: str | None = typer.Option(
        None,
        "--slo",
        help="SLO (`oserve simulate --slo`); default: interactive chat and batch from 16k prompts.",
    ),
) -> None:
    """Run the built-in end-to-end job: long documents beside chat, typed, planned, simulated against the
    baselines; ratios, plots and JSON."""
    start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    spec, cl = get_model(model), parse_cluster(cluster)
    if trace is not None:
        source, origin = load_trace(trace), str(trace)
    else:
        long_docs, conv, origin = long_demo_traces()
        source = blend([long_docs, conv], seed=0, name="mooncake|azure-conv")
    workload = scale_rate(window(source, 0.0, sim_minutes * 60.0), rate_scale, seed=0)
    classes = slo_classes_option(slo or demo_slo(spec, cl), spec, cl)
    grid = grid_option(workload, 6, None, None, classes.prompt_thresholds)
    console.rule(f"[bold]OServe demo[/]: {workload.name or 'trace'} ({origin})")
    long_share = float(np.mean(workload.prompt_tokens >= LONG_TOKENS)) if len(workload) else 0.0
    console.print(
        f"{len(workload):,} requests over {workload.duration_s / 60:.1f} min (x{rate_scale:g} rate), "
        f"{workload.rate_rps:.2f} req/s; prompt mean {workload.prompt_tokens.mean():,.0f} tokens "
        f"({long_share:.0%} of prompts >= {LONG_TOKENS:,}), output mean {workload.output_tokens.mean():,.0f}; "
        f"SLO {classes.describe()}"
    )
    tps = [tp for tp in (1, 2, 4, 8) if CostModel(spec, ReplicaConfig(get_gpu(gpu), tp=tp)).fits]
    table, types = _type_table(workload, grid, model, gpu, tps)
    console.print(cost_table(model, gpu, tps, 1, builtin_calibration()))
    console.print(table)
    plot_trace(workload, grid, out / "workload.png", window_s=30.0)
    sims, runs = _simulate_policies(workload, spec, cl, classes, grid, out)
    ratios = _ratio_table(sims, classes)
    summary = {
        "model": model,
        "cluster": cl.name,
        "trace": origin,
        "slo": classes.describe(),
        "requests": len(workload),
        "duration_s": workload.duration_s,
        "rate_scale": rate_scale,
        "types": types,
        "grid": grid.to_dict(),
        "simulation": {name: r.summary for name, r in sims.items()},
        "deployments": {name: run.deployment.note or run.deployment.describe() for name, run in runs.items()},
        "ratios": ratios,
        "wall_seconds": time.perf_counter() - start,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=_json_default))
    written = ", ".join(sorted(f.name for f in out.iterdir() if f.suffix in (".png", ".json")))
    console.print(f"report in {out}/: {written} ({summary['wall_seconds']:.1f} s)")


def _simulate_policies(
    trace: Trace, spec: ModelSpec, cl: Cluster, classes: SloClasses, grid: TypeGrid, out: Path
) -> tuple[dict[str, SimResult], dict]:
    """Every demo policy as ``oserve simulate`` runs it (same grid, SLO classes, router defaults), scored per
    class; prints the table and writes the latency CDFs, the deployment timeline, the bars and the forecasts."""
    sims: dict[str, SimResult] = {}
    runs = {}
    cache: dict = {}
    with console.status("simulating ...") as status:
        for name in DEMO_POLICIES:
            ctx = SimContext(
                trace,
                spec,
                cl,
                None,
                None,
                classes.default.to_dict(),
                lambda text, name=name: status.update(f"{name}: {text}"),
                cache,
                grid=grid,
                classes=classes,
            )
            status.update(f"{name}: planning, then simulating {len(trace):,} requests")
            runs[name], sims[name] = simulate_policy(name, ctx)
            sims[name].summary["deployment"] = _label(runs[name].deployment)
    names = [] if classes.single else list(classes.names)
    table = Table(
        "policy",
        "deployment (start)",
        "TTFT p50/p99 s",
        "TPOT p50/p99 ms",
        "E2E p50/p99 s",
        "goodput req/s",
        "SLO att.",
        *(f"{n} att." for n in names),
        "switches",
        title=f"simulated: {len(trace):,} requests on {cl.name} ({classes.describe()})",
    )
    for name, r in sims.items():
        m = r.summary
        by = m.get("slo_attainment_by_class", {})
        table.add_row(
            f"[bold]{name}[/]" if name in OSERVE else name,
            m["deployment"],
            f"{m['ttft_p50']:.2f}/{m['ttft_p99']:.2f}",
            f"{m['tpot_p50'] * 1e3:.0f}/{m['tpot_p99'] * 1e3:.0f}",
            f"{m['e2e_p50']:.1f}/{m['e2e_p99']:.1f}",
            f"{m['goodput_rps']:.2f}",
            f"{m['slo_attainment']:.1%}",
            *(f"{by[n]:.1%}" if n in by else "-" for n in names),
            str(m["switches"]),
        )
    console.print(table)
    note = runs["oserve-static"].deployment.note
    if note.startswith("isolated"):
        console.print(f"oserve-static: {note}")
    adaptive = runs["oserve"].policy
    if isinstance(adaptive, AdaptivePolicy):  # forecasts are per minute: a plot of them needs a longer window
        for d in adaptive.switches:
            console.print(f"oserve switched at {d.time_s / 60:.1f} min: {d.reason} -> {d.target.describe()}")
        if trace.duration_s >= 600:
            plot_rates_and_forecasts(
                trace,
                adaptive.grid,
                adaptive.forecasts,
                out / "rates_forecasts.png",
                switches_s=[d.time_s for d in adaptive.switches],
            )
    plot_latency_cdfs(sims, out)
    plot_deployment_timeline(sims, out)
    plot_policy_bars(sims, out, highlight="oserve-static")
    return sims, runs


def _label(deployment: Deployment) -> str:
    """``describe()``, and for an isolated deployment (replicas ``long-*`` / ``rest-*``) each part's shapes."""
    parts: dict[str, dict[str, int]] = {"long": {}, "rest": {}}
    for r in deployment.replicas:
        part = parts.get(r.name.split("-", 1)[0])
        if part is None:
            return deployment.describe()
        part[r.config.label] = part.get(r.config.label, 0) + 1
    if not all(parts.values()):
        return deployment.describe()
    shapes = {k: " + ".join(f"{n} x {label}" for label, n in v.items()) for k, v in parts.items()}
    return f"long: {shapes['long']} | rest: {shapes['rest']}"


def _ratio_table(sims: dict[str, SimResult], classes: SloClasses) -> dict[str, dict[str, float]]:
    """Prints and returns OServe's goodput over each baseline's (and the default class's attainment beside)."""
    first = None if classes.single else classes.names[0]
    table = Table(
        "OServe policy",
        *(f"vs {b}" for b in BASELINES),
        title="goodput ratio, OServe / baseline"
        + (f" (and {first}-class attainment, OServe vs baseline)" if first else ""),
    )
    ratios: dict[str, dict[str, float]] = {}
    for name in OSERVE:
        mine = sims[name].summary
        cells = []
        ratios[name] = {}
        for base in BASELINES:
            theirs = sims[base].summary
            ratio = mine["goodput_rps"] / theirs["goodput_rps"] if theirs["goodput_rps"] else float("nan")
            ratios[name][base] = ratio
            cell = f"x{ratio:.2f}"
            if first:
                a = mine.get("slo_attainment_by_class", {}).get(first, float("nan"))
                b = theirs.get("slo_attainment_by_class", {}).get(first, float("nan"))
                cell += f" ({a:.0%} vs {b:.0%})"
            cells.append(cell)
        table.add_row(name, *cells)
    console.print(table)
    return ratios


def _json_default(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
