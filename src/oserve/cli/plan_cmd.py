"""``oserve plan``: the heterogeneous deployment for a model, cluster and workload, beside the best homogeneous one."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import typer
from rich.table import Table

from oserve.cli.console import make_console
from oserve.cli.options import EDGES_HELP, SLO_HELP, grid_option, slo_classes_option
from oserve.errors import ConfigError
from oserve.planner import METHODS, Plan, demands_from_trace, parse_rates, plan, simulated_best_plan
from oserve.planner.capacity import max_model_len
from oserve.planner.slo_classes import type_slos
from oserve.spec import get_model, parse_cluster
from oserve.spec.router import RouterSpec
from oserve.trace import load_trace, scale_rate

console = make_console()


def _ints(text: str, option: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise typer.BadParameter(
            f"expected comma-separated integers, got {text!r}", param_hint=option
        ) from None
    if not values or any(v < 1 for v in values):
        raise typer.BadParameter(f"expected positive integers, got {text!r}", param_hint=option)
    return values


def plan_cmd(
    model: str = typer.Option("llama-2-70b", "--model", "-m", help="Model (see `oserve spec models`)."),
    cluster: str = typer.Option("2x8xH100", "--cluster", "-c", help="Cluster: 2x8xH100, ... or a YAML file."),
    trace: Path | None = typer.Option(None, "--trace", "-t", help="Plan for this trace's per-type rates."),
    rates: str | None = typer.Option(
        None,
        "--rates",
        help="Or give them: PROMPT:OUTPUT=RPS,... (mean tokens), e.g. 512:128=4,4096:256=1.5.",
    ),
    types: int = typer.Option(
        6,
        "--types",
        min=1,
        max=64,
        help="Request types cut from the trace (quantiles; prompts of 16k+ tokens get a bucket of their own).",
    ),
    prompt_edges: str | None = typer.Option(None, "--prompt-edges", help=EDGES_HELP.format("prompt")),
    output_edges: str | None = typer.Option(None, "--output-edges", help=EDGES_HELP.format("output")),
    rate_scale: float = typer.Option(1.0, "--rate-scale", min=0.0, help="Scale the trace's arrival rate."),
    peak: float | None = typer.Option(
        None,
        "--peak",
        min=0.01,
        max=1.0,
        help="Plan for this quantile of the trace's per-minute rate (e.g. 0.9).",
    ),
    slo: str = typer.Option("auto", "--slo", help=SLO_HELP),
    method: str = typer.Option(
        "auto", "--method", help="auto (MILP, refinement if cut short) | milp | refine."
    ),
    tp: str = typer.Option("1,2,4,8", "--tp", help="TP degrees to consider."),
    pp: str = typer.Option("1,2,4", "--pp", help="PP degrees to consider."),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Write the deployment (YAML, or JSON by suffix)."
    ),
    json_out: Path | None = typer.Option(
        None, "--json", help="Write alpha, baselines, replicas and capacities."
    ),
    verify: bool = typer.Option(
        False,
        "--verify",
        help="Check the plan in the simulator on the trace (plans at its p50/p90/p99 minute, each under two "
        "routers, and the best homogeneous shape) and write the winner with the router it won under.",
    ),
) -> None:
    """Plan the deployment that sustains the most load within the SLO; print it beside the best homogeneous one.

    alpha is the load scale the deployment sustains: 2.0 means twice the given rates still meet the SLO.
    """
    if method not in METHODS:
        raise typer.BadParameter(f"choose one of {', '.join(METHODS)}", param_hint="--method")
    if verify and trace is None:
        raise typer.BadParameter("--verify replays the trace: give --trace", param_hint="--verify")
    if (trace is None) == (rates is None):
        raise typer.BadParameter("give exactly one of --trace or --rates", param_hint="--trace/--rates")
    tps, pps = _ints(tp, "--tp"), _ints(pp, "--pp")
    spec, cl = get_model(model), parse_cluster(cluster)
    classes = slo_classes_option(slo, spec, cl)
    targets = classes.default
    per_type = {}
    if trace is None and (prompt_edges or output_edges):
        raise typer.BadParameter(
            "edges cut a trace's types; --rates makes its own", param_hint="--prompt-edges"
        )
    if trace is not None:
        workload = load_trace(trace)
        if rate_scale != 1.0:
            workload = scale_rate(workload, rate_scale)
        if len(workload) == 0:
            raise ConfigError(f"trace {trace} has no requests")
        grid = grid_option(workload, types, prompt_edges, output_edges, classes.prompt_thresholds)
        demands, grid = demands_from_trace(workload, grid, peak_quantile=peak)
        per_type = type_slos(classes, workload, grid)
        source = f"{trace.name} ({len(workload):,} requests, {workload.rate_rps:.2f} req/s"
        source += (
            f", planned for its p{peak * 100:g} minute: {sum(d.rate_rps for d in demands):.2f} req/s)"
            if peak
            else ")"
        )
    else:
        demands, grid = parse_rates(rates or "")
        source = "--rates"
        if not classes.single:
            per_type = {d.name: classes.slo_of(classes.assign_one(round(d.prompt_tokens))) for d in demands}
    with console.status("planning"):
        result = plan(
            spec, cl, demands, targets, grid=grid, method=method, tps=tps, pps=pps, type_slos=per_type
        )
    _print(result, spec.name, cl.name, source, "" if classes.single else classes.describe())
    longest = max(max_model_len(spec, c) for c in result.configs)
    rejected = (
        int(np.count_nonzero(workload.prompt_tokens + np.maximum(workload.output_tokens, 1) > longest))
        if trace is not None
        else 0
    )
    if rejected:
        console.print(
            f"[yellow]{rejected:,} requests ({rejected / len(workload):.1%}) need more than the longest "
            f"max_model_len of any candidate replica ({longest:,} tokens): vLLM rejects them wherever they go[/]"
        )
    deployment = result.deployment
    if verify:
        with console.status("checking by simulation") as status:
            checked = simulated_best_plan(
                workload,
                spec,
                cl,
                targets,
                tps=tps,
                pps=pps,
                progress=lambda msg: status.update(msg),
                seeds=(),
            )
        summary = checked.result.summary
        console.print(
            f"simulation check: {checked.label} routed by [bold]{checked.router}[/] won of {len(checked.tried)} "
            f"candidates: goodput {summary['goodput_rps']:.3g} req/s, SLO attainment "
            f"{summary.get('slo_attainment', float('nan')):.1%}, P99 E2E {summary['e2e_p99']:.3g} s",
            highlight=False,
        )
        deployment = dataclasses.replace(checked.deployment, router=RouterSpec(type=checked.router))
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        if deployment.router is None:  # no simulation check: the router serve would use anyway
            deployment = dataclasses.replace(deployment, router=RouterSpec())
        deployment.save(out)
        console.print(f"wrote {out} (use it with `oserve simulate --deployment {out}`)")
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        data = result.to_dict()
        data["max_model_len"] = longest
        data["rejected_requests"] = rejected
        data["slo_classes"] = classes.to_dict()
        data["type_edges"] = grid.to_dict()
        json_out.write_text(json.dumps(data, indent=2))
        console.print(f"wrote {json_out}")


def _short(label: str) -> str:
    return label.replace("H100-SXM-80GB", "H100")


def _print(result: Plan, model: str, cluster: str, source: str, classes: str = "") -> None:
    console.print(
        f"[bold]{model}[/] on [bold]{cluster}[/], workload {source}; SLO {classes or result.slo.describe()}"
    )
    names = [d.name for d in result.demands]
    bottleneck = dict(result.flow.limiting_types(names, top=len(names)))
    per_gpu = result.mu_rps / [c.num_gpus for c in result.configs]
    types = Table(
        "type",
        "rate req/s",
        "mean prompt",
        "mean output",
        "best config (req/s per GPU, limit)",
        "limits alpha",
    )
    relaxed = {b.type: b for b in result.best_effort}
    for k, d in enumerate(result.demands):
        j = int(per_gpu[k].argmax())
        effort = relaxed.get(d.name)
        mark = (
            ""
            if effort is None
            else (f" (best-effort {effort.relax:.3g}x)" if effort.relax < np.inf else " (none)")
        )
        types.add_row(
            d.name + mark,
            f"{d.rate_rps:.3g}",
            f"{d.prompt_tokens:.0f}",
            f"{d.output_tokens:.0f}",
            f"{_short(result.configs[j].label)} ({per_gpu[k, j]:.3g}, {result.limits[k][j]})",
            f"{bottleneck.get(d.name, 0.0):.0%}",
        )
    console.print(types)
    replicas = Table(
        "replica", "config", "GPUs", "types served (share of the type)", title="planned deployment"
    )
    for r in result.deployment.replicas:
        served = [f"{t} {row[r.name]:.0%}" for t, row in result.deployment.weights.items() if r.name in row]
        replicas.add_row(
            r.name, _short(r.config.label), ",".join(map(str, r.gpu_ids)), "; ".join(served) or "-"
        )
    console.print(replicas)
    compare = Table("deployment", "alpha", "vs best homogeneous")
    base = result.baseline_alpha
    compare.add_row(f"OServe ({result.method})", _alpha(result.alpha), _ratio(result.alpha, base))
    compare.add_row(result.baseline.note, _alpha(base), "1.000x" if base > 0 else "cannot serve")
    compare.add_row(
        "vLLM default shape", _alpha(result.vllm_default_alpha), _ratio(result.vllm_default_alpha, base)
    )
    console.print(compare)
    console.print(f"solved in {result.solve_seconds:.2f} s; " + "; ".join(result.notes))
    for effort in result.best_effort:
        console.print(f"[yellow]best-effort: {effort.reason}[/]")


def _alpha(alpha: float) -> str:
    """A load scale; one that rounds to zero (or a solver's -0.000) is a deployment that cannot serve the load."""
    return f"{alpha:.3f}" if alpha >= 5e-4 else "cannot serve"


def _ratio(alpha: float, base: float) -> str:
    if alpha < 5e-4:
        return "cannot serve"
    return f"{alpha / base:.3f}x" if base >= 5e-4 else "-"
