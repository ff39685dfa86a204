"""How good the plan is: alpha vs the exact MILP and vs the best homogeneous deployment, then checked by simulation.

    python benchmarks/planner_quality.py [--traces ../shared/data/traces] [--minutes 10] [--no-sim]
                                         [--json benchmarks/results/planner_quality.json]

Scenarios (real traces only): the Azure 2023 code hour, the conversation hour, and a 50/50 blend of the two;
clusters: Llama-3-8B on 1x8xH100, Llama-2-70B on 2x8xH100 and on 4x8xA100-80GB. SLO: the model's default on the
cluster (5x unloaded latency).

1. Analytical: alpha of the flow-guided refinement (``method="refine"``) and of the MILP optimum; the gap; the ratio
   to the best homogeneous deployment and to vLLM's default shape, all scored by the same LP.
2. Simulation (unless ``--no-sim``): the first ``--minutes`` of the scenario, its rate scaled so that its p90 minute
   loads the best homogeneous deployment to 90% of its planned capacity, replayed through
   - ``static``: the best homogeneous deployment found by simulating every fitting shape on that traffic (what
     ``oserve simulate --policy static`` does), round-robin-free weighted routing;
   - ``oserve-static``: what ``oserve simulate --policy static,oserve-static`` runs: the plans for that traffic's
     median, p90 and p99 minute, each routed by least work among a type's replicas and by the plan's weights,
     simulated, and the best in goodput (then p99 E2E) kept, the static deployment being one of the candidates;
   reporting goodput at the SLO and P99 E2E for both, and the ratios (oserve / static goodput, static / oserve P99);
   and, to tell the deployment's share of the gain from the router's, the same ratios against the static deployment
   routed by OServe's ``allowed-least-load`` (one of the candidates).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from oserve.planner import (
    default_slo,
    demands_from_trace,
    plan,
    simulated_best_homogeneous,
    simulated_best_plan,
)
from oserve.spec import get_model, parse_cluster
from oserve.trace import Trace, blend, load_trace, scale_rate, window

SETUPS = (("llama-3-8b", "1x8xH100"), ("llama-2-70b", "2x8xH100"), ("llama-2-70b", "4x8xA100-80GB"))
LOAD = 0.9
PEAK = 0.9  # provision for the p90 minute (the code hour's minutes run at up to 4x its mean)


def scenarios(traces: Path) -> dict[str, Trace]:
    code = load_trace(traces / "azure_code_2023.csv")
    conv = load_trace(traces / "azure_conv_2023.csv")
    return {
        "azure_code": code,
        "azure_conv": conv,
        "blend_50_50": blend([code, conv], weights=[0.5, 0.5], seed=0),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--traces", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/traces")
    p.add_argument("--minutes", type=float, default=10.0, help="traffic replayed per simulation")
    p.add_argument("--no-sim", action="store_true", help="skip the simulation check")
    p.add_argument(
        "--json", type=Path, default=Path(__file__).resolve().parent / "results/planner_quality.json"
    )
    args = p.parse_args(argv)
    if not (args.traces / "azure_conv_2023.csv").is_file():
        print(f"traces not found in {args.traces}", file=sys.stderr)
        return 1
    rows = []
    header = (
        f"{'scenario':<12} {'model':<12} {'cluster':<15} {'refine':>7} {'milp':>7} {'gap':>6} {'homog.':>7} "
        f"{'x homog':>8} {'x vllm':>7}"
    )
    if not args.no_sim:
        header += (
            f" | {'goodput st/os':>14} {'ratio':>6} {'p99 E2E st/os s':>16} {'ratio':>6}"
            f" | {'vs st+least-load':>16}"
        )
    print(header)
    for scenario, trace in scenarios(args.traces).items():
        for model_name, spelling in SETUPS:
            model, cluster = get_model(model_name), parse_cluster(spelling)
            slo = default_slo(model, cluster)
            demands, grid = demands_from_trace(trace)
            heuristic = plan(model, cluster, demands, slo, grid=grid, method="refine")
            exact = plan(model, cluster, demands, slo, grid=grid, method="milp", milp_time_limit_s=60)
            row = {
                "scenario": scenario,
                "model": model_name,
                "cluster": spelling,
                "slo": slo.to_dict(),
                "refine_alpha": heuristic.alpha,
                "milp_alpha": exact.alpha,
                "gap": 1 - heuristic.alpha / exact.alpha if exact.alpha else 0.0,
                "baseline_alpha": exact.baseline_alpha,
                "vllm_default_alpha": exact.vllm_default_alpha,
                "ratio_vs_homogeneous": exact.alpha / exact.baseline_alpha,
                "ratio_vs_vllm_default": exact.alpha / exact.vllm_default_alpha,
                "plan": exact.deployment.note,
                "baseline": exact.baseline.note,
            }
            line = (
                f"{scenario:<12} {model_name:<12} {spelling:<15} {heuristic.alpha:>7.3f} {exact.alpha:>7.3f} "
                f"{row['gap']:>6.1%} {exact.baseline_alpha:>7.3f} {row['ratio_vs_homogeneous']:>8.3f} "
                f"{row['ratio_vs_vllm_default']:>7.3f}"
            )
            if not args.no_sim:
                row.update(simulation_check(trace, model, cluster, slo, args.minutes))
                line += (
                    f" | {row['static_goodput_rps']:>6.2f}/{row['oserve_goodput_rps']:<7.2f} "
                    f"{row['goodput_ratio']:>6.3f} {row['static_e2e_p99']:>7.1f}/{row['oserve_e2e_p99']:<8.1f} "
                    f"{row['p99_ratio']:>6.3f} | {row['oserve_vs_static_least_load_goodput']:>7.3f}/"
                    f"{row['oserve_vs_static_least_load_p99']:<7.3f}  {row['oserve_choice']} ({row['oserve_router']})"
                )
            rows.append(row)
            print(line, flush=True)
    gaps = [r["gap"] for r in rows]
    print(
        f"\nrefinement gap to the MILP: max {max(gaps):.2%}, mean {sum(gaps) / len(gaps):.2%} (target <= 3%)"
    )
    if not args.no_sim:
        beats = sum(1 for r in rows if r["goodput_ratio"] > 1 and r["p99_ratio"] > 1)
        shape = sum(
            1
            for r in rows
            if r["oserve_vs_static_least_load_goodput"] > 1 and r["oserve_vs_static_least_load_p99"] > 1
        )
        print(
            f"oserve-static beats static on goodput and P99 in {beats}/{len(rows)}; beats the static deployment "
            f"under the same least-load router in {shape}/{len(rows)}"
        )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps({"load": LOAD, "peak_quantile": PEAK, "minutes": args.minutes, "rows": rows}, indent=2)
    )
    print(f"wrote {args.json}")
    return 0


def simulation_check(trace, model, cluster, slo, minutes: float) -> dict:
    """Both static deployments on the same scaled slice; the plan is made for that slice. The slice is scaled so
    its p90 minute loads the best homogeneous deployment to ``LOAD`` of its planned capacity."""
    part = window(trace, 0.0, minutes * 60)
    demands, grid = demands_from_trace(part, peak_quantile=PEAK)
    first = plan(model, cluster, demands, slo, grid=grid)
    part = scale_rate(part, LOAD * first.baseline_alpha, seed=0)
    targets = slo.to_dict()
    start = time.perf_counter()
    static_dep, static_res, _ = simulated_best_homogeneous(part, model, cluster, slo=targets)
    verified = simulated_best_plan(
        part, model, cluster, slo, seeds=[("best homogeneous", static_dep, "weighted", static_res)]
    )
    s, o = static_res.summary, verified.result.summary
    # how much of the difference is routing: the static deployment under OServe's least-load router
    same = next(
        t for t in verified.tried if t.label == "best homogeneous" and t.router == "allowed-least-load"
    )
    return {
        "static_least_load_goodput_rps": same.goodput_rps,
        "static_least_load_e2e_p99": same.e2e_p99_s,
        "oserve_vs_static_least_load_goodput": o["goodput_rps"] / same.goodput_rps
        if same.goodput_rps
        else 1.0,
        "oserve_vs_static_least_load_p99": same.e2e_p99_s / o["e2e_p99"] if o["e2e_p99"] else 1.0,
        "sim_requests": len(part),
        "sim_rate_rps": part.rate_rps,
        "static_deployment": static_dep.note,
        "oserve_deployment": verified.deployment.note,
        "oserve_router": verified.router,
        "oserve_choice": verified.label,
        "candidates": [
            {"label": t.label, "router": t.router, "goodput_rps": t.goodput_rps, "e2e_p99": t.e2e_p99_s}
            for t in verified.tried
        ],
        "static_goodput_rps": s["goodput_rps"],
        "oserve_goodput_rps": o["goodput_rps"],
        "goodput_ratio": o["goodput_rps"] / s["goodput_rps"] if s["goodput_rps"] else float("inf"),
        "static_e2e_p99": s["e2e_p99"],
        "oserve_e2e_p99": o["e2e_p99"],
        "p99_ratio": s["e2e_p99"] / o["e2e_p99"] if o["e2e_p99"] else float("inf"),
        "static_slo_attainment": s["slo_attainment"],
        "oserve_slo_attainment": o["slo_attainment"],
        "sim_wall_s": time.perf_counter() - start,
    }


if __name__ == "__main__":
    sys.exit(main())
