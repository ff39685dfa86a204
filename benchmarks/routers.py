"""Which router serves a deployment best: the routers on the best homogeneous deployment, replayed on real traces.

    python benchmarks/routers.py [--traces ../shared/data/traces] [--minutes 5] [--loads 0.9,1.1]
                                 [--json benchmarks/results/routers.json]

Scenarios as ``planner_quality.py``: the Azure 2023 code hour, the conversation hour and a 50/50 blend, for
Llama-3-8B on 1x8xH100, Llama-2-70B on 2x8xH100 and on 4x8xA100-80GB; SLO the model's default on the cluster.
Deployment: the planner's best homogeneous shape (capacity model), as many replicas as the cluster holds. Traffic:
the first ``--minutes`` of the scenario scaled so its p90 minute loads that deployment to each of ``--loads``.
Routers: ``least-tokens`` (the baseline: the ``static`` policy's weighted router on a homogeneous deployment is
the same rule), ``round-robin`` (vLLM behind a plain load balancer), ``jsq``, ``allowed-least-work`` and
``allowed-least-load``. Reported: goodput at the SLO and P99 E2E for each, and each router's ratios to least-tokens
(goodput router / baseline, P99 baseline / router: above 1 is better on both).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from oserve.planner import default_slo, demands_from_trace, plan
from oserve.sim import simulate
from oserve.spec import get_model, parse_cluster
from oserve.trace import scale_rate, window

sys.path.insert(0, str(Path(__file__).resolve().parent))
from planner_quality import PEAK, SETUPS, scenarios

BASELINE = "least-tokens"
ROUTERS = (BASELINE, "round-robin", "jsq", "allowed-least-work", "allowed-least-load")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--traces", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/traces")
    p.add_argument("--minutes", type=float, default=5.0, help="traffic replayed per simulation")
    p.add_argument("--loads", default="0.9,1.1", help="loads relative to the deployment's planned capacity")
    p.add_argument("--json", type=Path, default=Path(__file__).resolve().parent / "results/routers.json")
    args = p.parse_args(argv)
    if not (args.traces / "azure_conv_2023.csv").is_file():
        print(f"traces not found in {args.traces}", file=sys.stderr)
        return 1
    loads = [float(x) for x in args.loads.split(",")]
    rows = []
    print(
        f"{'scenario':<12} {'model':<12} {'cluster':<14} {'deployment':<26} {'load':>4}  "
        + "  ".join(f"{r:>20}" for r in ROUTERS)
    )
    start = time.perf_counter()
    for scenario, trace in scenarios(args.traces).items():
        part = window(trace, 0.0, args.minutes * 60)
        for model_name, spelling in SETUPS:
            model, cluster = get_model(model_name), parse_cluster(spelling)
            slo = default_slo(model, cluster)
            demands, grid = demands_from_trace(part, peak_quantile=PEAK)
            planned = plan(model, cluster, demands, slo, grid=grid)
            deployment = planned.baseline
            for load in loads:
                scaled = scale_rate(part, load * planned.baseline_alpha, seed=0)
                row = {
                    "scenario": scenario,
                    "model": model_name,
                    "cluster": spelling,
                    "deployment": deployment.describe(),
                    "load": load,
                    "requests": len(scaled),
                    "routers": {},
                }
                for router in ROUTERS:
                    s = simulate(scaled, deployment, model, cluster, router=router, slo=slo.to_dict()).summary
                    row["routers"][router] = {"goodput_rps": s["goodput_rps"], "e2e_p99": s["e2e_p99"]}
                base = row["routers"][BASELINE]
                for r in row["routers"].values():
                    r["goodput_ratio"] = (
                        r["goodput_rps"] / base["goodput_rps"] if base["goodput_rps"] else 1.0
                    )
                    r["p99_ratio"] = base["e2e_p99"] / r["e2e_p99"] if r["e2e_p99"] else 1.0
                rows.append(row)
                cells = "  ".join(
                    f"{r['goodput_rps']:>7.2f}/{r['e2e_p99']:>5.1f}s x{r['goodput_ratio']:.2f}"
                    for r in row["routers"].values()
                )
                print(
                    f"{scenario:<12} {model_name:<12} {spelling:<14} {row['deployment'][:26]:<26} {load:>4.1f}  {cells}",
                    flush=True,
                )
    summary = {}
    print(f"\nover {len(rows)} rows, vs {BASELINE} (goodput ratio / P99 ratio; above 1 is better):")
    for router in ROUTERS[1:]:
        g = [r["routers"][router]["goodput_ratio"] for r in rows]
        q = [r["routers"][router]["p99_ratio"] for r in rows]
        both = sum(1 for a, b in zip(g, q, strict=True) if a >= 1 and b >= 1)
        summary[router] = {
            "goodput_ratio_mean": statistics.fmean(g),
            "goodput_ratio_min": min(g),
            "p99_ratio_mean": statistics.fmean(q),
            "p99_ratio_min": min(q),
            "rows_no_worse_on_both": both,
        }
        print(
            f"  {router:<20} goodput x{statistics.fmean(g):.3f} (min {min(g):.3f})  "
            f"P99 x{statistics.fmean(q):.3f} (min {min(q):.3f})  no worse on both: {both}/{len(rows)}"
        )
    print(f"{time.perf_counter() - start:.0f} s")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps({"minutes": args.minutes, "loads": loads, "rows": rows, "summary": summary}, indent=2)
    )
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
