"""``oserve fleet plan`` and ``oserve fleet simulate``: capacity across regions, models and SLA tiers."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import numpy as np
import typer
import yaml
from rich.table import Table

from oserve.cli.console import make_console
from oserve.errors import InfeasibleError
from oserve.fleet import (
    FLEET_FORECASTERS,
    POLICIES,
    FleetContext,
    build_capacity_table,
    builtin_fleet,
    builtin_workload,
    check_region_hours,
    explain,
    fitted_forecaster,
    hour_label,
    load_fleet,
    load_workload_csv,
    make_policy,
    make_problem,
    plan_window,
    simulate_fleet,
)
from oserve.planner.lp import describe_mip

app = typer.Typer(
    help="Plan and simulate a fleet: regions x models x SLA tiers over hours.", no_args_is_help=True
)
console = make_console()

FLEET_HELP = "Fleet spec YAML (regions, GPU pools, models, tiers); default: the built-in 3-region fleet."
WORKLOAD_HELP = (
    "Workload CSV: time,region,model,tier,requests,mean_prompt_tokens,mean_output_tokens (minute or hour grain); "
    "default: the built-in scenario from the Azure 2023 traces."
)


def _hours(text: str, option: str) -> int:
    match = re.fullmatch(r"\s*(\d+)\s*([hd]?)\s*", text.lower())
    if not match or int(match.group(1)) < 1:
        raise typer.BadParameter(f"expected hours like 24h or days like 2d, got {text!r}", param_hint=option)
    return int(match.group(1)) * (24 if match.group(2) == "d" else 1)


def _context(
    fleet_file: Path | None, workload_file: Path | None, days: float, *, all_history: bool = False
) -> FleetContext:
    fleet = load_fleet(fleet_file) if fleet_file else builtin_fleet()
    if workload_file:
        workload = load_workload_csv(workload_file, fleet, all_history=all_history)
    else:
        workload = builtin_workload(fleet, days=days)
    return FleetContext.build(fleet, workload)


def plan_cmd(
    fleet_file: Path | None = typer.Option(None, "--fleet", help=FLEET_HELP),
    workload_file: Path | None = typer.Option(None, "--workload", help=WORKLOAD_HELP),
    horizon: str = typer.Option("24h", "--horizon", help="Hours to plan (24h, 2d)."),
    forecaster: str = typer.Option(
        "holt-winters", "--forecaster", help=f"One of {', '.join(FLEET_FORECASTERS)}."
    ),
    time_limit: float = typer.Option(10.0, "--time-limit", min=0.1, help="MILP time limit, seconds."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Write the plan (YAML): instances per hour."),
    json_out: Path | None = typer.Option(None, "--json", help="Write the plan and its solve statistics."),
    calibrate: bool = typer.Option(
        True,
        "--calibrate/--no-calibrate",
        help="Scale IW capacity to what the simulator confirms (~1-5 s a shape).",
    ),
) -> None:
    """Plan instances per region x model x config x hour over the forecast: the fleet MILP on HiGHS.

    The plan starts where the workload's history ends (a CSV is all history); infeasible input (pools too small, lead times too long)
    still gets a plan, and an explanation naming the binding region, hour and constraint, and exits 1.
    """
    if forecaster not in FLEET_FORECASTERS:
        raise typer.BadParameter(f"choose one of {', '.join(FLEET_FORECASTERS)}", param_hint="--forecaster")
    hours = _hours(horizon, "--horizon")
    ctx = _context(fleet_file, workload_file, 1, all_history=True)
    with console.status("capacity per instance (cost model)"):
        table = build_capacity_table(ctx.fleet, ctx.workload.lengths, calibrate=calibrate)
    origin = ctx.workload.eval_start_min // 60
    with console.status("forecasting and solving"):
        problem = make_problem(
            ctx, table, fitted_forecaster(ctx, forecaster, origin), origin, hours, ahead_h=0, instant=True
        )
        result = plan_window(problem, time_limit_s=time_limit)
    shortfalls = explain(problem, result)
    fleet = ctx.fleet
    data = {
        "start": hour_label(problem.start_hour),
        "horizon_h": hours,
        "objective": fleet.objective,
        "status": result.status,
        "mip_gap": result.mip_gap,
        "solve_seconds": result.solve_seconds,
        "gpu_hours": result.gpu_hours(),
        "cost_usd": float(
            (
                result.gpus_od * problem.price_od[:, :, None]
                + result.gpus_spot * problem.price_spot[:, :, None]
            ).sum()
        ),
        "feasible": result.feasible,
        "shortfalls": [s.message for s in shortfalls],
        "instances": {
            region: {
                model: {
                    table.configs[j].label: result.counts[r, j].tolist()
                    for j in table.of_model(m)
                    if result.counts[r, j].any()
                }
                for m, model in enumerate(fleet.model_names)
            }
            for r, region in enumerate(fleet.region_names)
        },
        "niw_requests_served": {
            region: {
                model: result.niw_served[r, m].round(0).tolist() for m, model in enumerate(fleet.model_names)
            }
            for r, region in enumerate(fleet.region_names)
        },
    }
    _print_plan(ctx, table, problem, result, data)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(yaml.safe_dump(data, sort_keys=False))
        console.print(f"wrote {out}")
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(data, indent=2))
        console.print(f"wrote {json_out}")
    if shortfalls:
        raise InfeasibleError(
            "the fleet cannot meet this workload: " + " | ".join(s.message for s in shortfalls)
        )


def _print_plan(ctx, table, problem, result, data) -> None:
    fleet = ctx.fleet
    console.print(f"[bold]fleet plan[/] from {data['start']}, {data['horizon_h']} h; {ctx.workload.source}")
    t = Table("region", "model", "IW peak req/s", "instances at the peak hour", "GPU-h", title="instances")
    for r, region in enumerate(fleet.region_names):
        for m, model in enumerate(fleet.model_names):
            js = table.of_model(m)
            peak = int(np.argmax(problem.iw_rps[r, m]))
            mix = ", ".join(
                f"{int(result.counts[r, j, peak])} x {table.configs[j].label}"
                for j in js
                if result.counts[r, j, peak]
            )
            gpu_h = float(sum(result.counts[r, j].sum() * table.configs[j].gpus for j in js))
            t.add_row(region, model, f"{problem.iw_rps[r, m, peak]:.1f}", mix or "-", f"{gpu_h:,.0f}")
    console.print(t)
    console.print(
        f"{data['gpu_hours']:,.0f} GPU-hours, ${data['cost_usd']:,.0f} over {data['horizon_h']} h; "
        f"{describe_mip(result.status, result.solve_seconds, result.mip_gap)}; " + "; ".join(result.notes)
    )
    for s in data["shortfalls"]:
        console.print(f"[bold red]infeasible:[/] {s}", highlight=False, soft_wrap=True)


def simulate_cmd(
    fleet_file: Path | None = typer.Option(None, "--fleet", help=FLEET_HELP),
    workload_file: Path | None = typer.Option(None, "--workload", help=WORKLOAD_HELP),
    policy: str = typer.Option(
        ",".join(POLICIES), "--policy", "-p", help=f"Comma-separated: {', '.join(POLICIES)}."
    ),
    days: float = typer.Option(1.0, "--days", min=0.05, max=28, help="Days to simulate (built-in scenario)."),
    forecaster: str = typer.Option(
        "holt-winters", "--forecaster", help=f"One of {', '.join(FLEET_FORECASTERS)}."
    ),
    replan_h: int = typer.Option(
        12, "--replan-h", min=1, help="Hours between MILP solves (24 h ahead each)."
    ),
    check: int = typer.Option(
        0, "--check", min=0, help="Replay this many region-hours per policy in the simulator."
    ),
    json_out: Path | None = typer.Option(
        None, "--json", help="Write GPU-hours, cost, SLO and deadline figures."
    ),
    plot: Path | None = typer.Option(None, "--plot", help="Write instances-vs-load plots into this folder."),
    calibrate: bool = typer.Option(
        True,
        "--calibrate/--no-calibrate",
        help="Scale IW capacity to what the simulator confirms (~1-5 s a shape).",
    ),
) -> None:
    """Simulate the fleet minute by minute under each policy: GPU-hours, cost, IW SLO attainment, NIW deadlines
    met and scaling actions, side by side."""
    names = [p.strip() for p in policy.split(",") if p.strip()]
    unknown = [n for n in names if n not in POLICIES]
    if unknown or not names:
        raise typer.BadParameter(
            f"unknown policy {unknown}; choose from {', '.join(POLICIES)}", param_hint="--policy"
        )
    if forecaster not in FLEET_FORECASTERS:
        raise typer.BadParameter(f"choose one of {', '.join(FLEET_FORECASTERS)}", param_hint="--forecaster")
    began = time.perf_counter()
    ctx = _context(fleet_file, workload_file, days)
    with console.status("capacity per instance (cost model)"):
        table = build_capacity_table(ctx.fleet, ctx.workload.lengths, calibrate=calibrate)
    results = {}
    for name in names:
        with console.status(f"simulating {name}"):
            pol = make_policy(name, table, ctx, forecaster=forecaster, replan_h=replan_h)
            results[name] = simulate_fleet(ctx, pol)
    wall = time.perf_counter() - began
    _print_results(ctx, results)
    for name, res in results.items():
        for c in check_region_hours(ctx, res, samples=check) if check else ():
            console.print(
                f"check {name} {c.region}/{c.model} {c.hour}: {c.instances}; IW {c.iw_rps:.1f} + NIW "
                f"{c.niw_rps:.1f} req/s on {c.gpus_simulated} GPUs: IW SLO {c.simulated_attainment:.1%} in the "
                f"simulator vs {c.predicted_attainment:.1%} fluid (TTFT p99 {c.ttft_p99_s:.2f} s)",
                highlight=False,
                soft_wrap=True,
            )
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        payload = {"policies": {n: r.summary() for n, r in results.items()}, "wall_seconds": wall}
        json_out.write_text(json.dumps(payload, indent=2, default=float))
        console.print(f"wrote {json_out}")
    if plot:
        from oserve.report.fleet_plots import plot_fleet

        for name, res in results.items():
            path = plot_fleet(res, ctx.fleet.region_names, ctx.fleet.model_names, plot / f"fleet_{name}.png")
            console.print(f"wrote {path}")


def _print_results(ctx, results) -> None:
    console.print(f"[bold]fleet simulation[/]: {ctx.workload.source}")
    t = Table("policy", "GPU-hours", "cost USD", "IW SLO", "NIW on time", "scaling actions", "wall s")
    base = results.get("siloed")
    for name, res in results.items():
        s = res.summary()
        saved = (
            f" ({1 - s['gpu_hours'] / base.gpu_hours:.0%} below siloed)" if base and name != "siloed" else ""
        )
        t.add_row(
            name,
            f"{s['gpu_hours']:,.0f}{saved}",
            f"{s['cost_usd']:,.0f}",
            f"{s['iw_slo_attainment']:.3%}",
            f"{s['niw_deadline_met']:.2%}",
            f"{s['scaling_actions']:,}",
            f"{res.wall_seconds:.1f}",
        )
    console.print(t)


app.command("plan", help=plan_cmd.__doc__)(plan_cmd)
app.command("simulate", help=simulate_cmd.__doc__)(simulate_cmd)
