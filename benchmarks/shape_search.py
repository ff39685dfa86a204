"""Is there any deployment that beats the best homogeneous one? Every maximal deployment of a small cluster, simulated.

    python benchmarks/shape_search.py [--scenario azure_code] [--model llama-2-70b] [--cluster 2x8xH100]
                                      [--minutes 5] [--router allowed-least-load]
                                      [--json benchmarks/results/shape_search.json]

The exhaustive check behind ``planner_quality.py``'s simulation column: on the same traffic (the scenario's first
``--minutes``, scaled so its p90 minute loads the planner's best homogeneous deployment to 90% of its planned
capacity), every replica-count vector over the shapes the model fits that fills the cluster (no further replica
fits) is placed and simulated under one router, homogeneous and mixed alike. Prints the top deployments by goodput
at the SLO (then P99 E2E), the best homogeneous one, and the best mixed one's ratios to it. Minutes per scenario:
a 16-GPU cluster has a few dozen such deployments.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np

from oserve.errors import InfeasibleError
from oserve.planner import default_slo, demands_from_trace, plan
from oserve.planner.placement import candidate_configs, packing_rows, place
from oserve.sim import simulate
from oserve.spec import Deployment, get_model, parse_cluster
from oserve.trace import scale_rate, window

sys.path.insert(0, str(Path(__file__).resolve().parent))
from planner_quality import LOAD, PEAK, scenarios


def maximal_counts(cluster, configs) -> list[tuple[int, ...]]:
    """Replica counts per config that pack onto the cluster and leave no room for one more replica."""
    rows = packing_rows(cluster, configs)
    most = [cluster.num_gpus // c.num_gpus for c in configs]
    out = []
    for counts in itertools.product(*(range(m + 1) for m in most)):
        c = np.array(counts, dtype=np.float64)
        if rows.feasible(c) and not any(rows.max_count(c, i) for i in range(len(configs))):
            out.append(counts)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--traces", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/traces")
    p.add_argument("--scenario", default="azure_code", help="azure_code | azure_conv | blend_50_50")
    p.add_argument("--model", default="llama-2-70b")
    p.add_argument("--cluster", default="2x8xH100")
    p.add_argument("--minutes", type=float, default=5.0)
    p.add_argument("--router", default="allowed-least-load")
    p.add_argument("--top", type=int, default=8)
    p.add_argument("--json", type=Path, default=Path(__file__).resolve().parent / "results/shape_search.json")
    args = p.parse_args(argv)
    if not (args.traces / "azure_conv_2023.csv").is_file():
        print(f"traces not found in {args.traces}", file=sys.stderr)
        return 1
    model, cluster = get_model(args.model), parse_cluster(args.cluster)
    slo = default_slo(model, cluster)
    part = window(scenarios(args.traces)[args.scenario], 0.0, args.minutes * 60)
    demands, grid = demands_from_trace(part, peak_quantile=PEAK)
    part = scale_rate(part, LOAD * plan(model, cluster, demands, slo, grid=grid).baseline_alpha, seed=0)
    configs, _ = candidate_configs(model, cluster)
    candidates = maximal_counts(cluster, configs)
    print(
        f"{args.scenario}, {args.model} on {args.cluster}: {len(candidates)} deployments, {len(part)} requests"
    )
    start = time.perf_counter()
    rows = []
    for n, counts in enumerate(candidates, 1):
        try:
            replicas = place(cluster, [(configs[i], k) for i, k in enumerate(counts)])
        except InfeasibleError:
            continue
        deployment = Deployment(model.name, replicas)
        s = simulate(part, deployment, model, cluster, router=args.router, slo=slo.to_dict()).summary
        rows.append(
            {
                "deployment": deployment.describe(),
                "homogeneous": sum(1 for k in counts if k) == 1,
                "goodput_rps": s["goodput_rps"],
                "e2e_p99": s["e2e_p99"],
            }
        )
        print(
            f"  [{n}/{len(candidates)}] {rows[-1]['deployment']}: {s['goodput_rps']:.2f} req/s, "
            f"P99 {s['e2e_p99']:.1f} s",
            flush=True,
        )
    rows.sort(key=lambda r: (-r["goodput_rps"], r["e2e_p99"]))
    print(f"\ntop {args.top} by goodput (router {args.router}):")
    for r in rows[: args.top]:
        kind = "homogeneous" if r["homogeneous"] else "mixed"
        print(f"  {r['goodput_rps']:>8.2f} req/s  P99 {r['e2e_p99']:>6.1f} s  {kind:<11} {r['deployment']}")
    homog = next(r for r in rows if r["homogeneous"])
    mixed = next((r for r in rows if not r["homogeneous"]), None)
    summary = {"best_homogeneous": homog, "best_mixed": mixed}
    if mixed:
        summary["mixed_goodput_ratio"] = mixed["goodput_rps"] / homog["goodput_rps"]
        summary["mixed_p99_ratio"] = homog["e2e_p99"] / mixed["e2e_p99"]
        beats = [
            r
            for r in rows
            if not r["homogeneous"]
            and r["goodput_rps"] > homog["goodput_rps"]
            and r["e2e_p99"] < homog["e2e_p99"]
        ]
        summary["mixed_beating_homogeneous_on_both"] = len(beats)
        print(
            f"best mixed vs best homogeneous: goodput x{summary['mixed_goodput_ratio']:.3f}, "
            f"P99 x{summary['mixed_p99_ratio']:.3f}; mixed deployments better on both: {len(beats)}"
        )
    print(f"{time.perf_counter() - start:.0f} s")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    setup = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    args.json.write_text(json.dumps({"setup": setup, "rows": rows, "summary": summary}, indent=2))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
