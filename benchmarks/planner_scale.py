"""How long the planner takes as the cluster grows (one core).

    python benchmarks/planner_scale.py [--traces ../shared/data/traces] [--json benchmarks/results/planner_scale.json]

Llama-2-70B, 8 request types cut from a 50/50 blend of the real Azure 2023 code and conversation hours, rates
scaled with the cluster (1 req/s per GPU: alpha about 1.1-1.6), SLO the model's default on the cluster. Clusters of
8, 32, 64, 128, 512 and 1,024 GPUs: all H100 (8-GPU nodes), and mixed (half H100, half A100-80GB nodes). For each,
wall seconds of the whole ``plan`` call (capacities, baselines, solve, placement) with the exact MILP and with the
flow-guided refinement, and the alpha each reaches. Targets: <= 1 s at 64 GPUs, <= 10 s at 1,024.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from oserve.planner import TypeDemand, default_slo, demands_from_trace, plan
from oserve.spec import get_model, parse_cluster
from oserve.trace import blend, load_trace

MODEL = "llama-2-70b"
RATE_PER_GPU = 1.0
SIZES = (8, 32, 64, 128, 512, 1024)


def cluster_spec(gpus: int, mixed: bool) -> str:
    nodes = gpus // 8
    if not mixed:
        return f"{nodes}x8xH100"
    return (
        f"{max(1, nodes // 2)}x8xH100+{max(1, nodes - nodes // 2)}x8xA100-80GB"
        if nodes > 1
        else "1x4xH100+1x4xA100-80GB"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--traces", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/traces")
    p.add_argument(
        "--json", type=Path, default=Path(__file__).resolve().parent / "results/planner_scale.json"
    )
    args = p.parse_args(argv)
    code, conv = args.traces / "azure_code_2023.csv", args.traces / "azure_conv_2023.csv"
    if not (code.is_file() and conv.is_file()):
        print(f"traces not found in {args.traces}", file=sys.stderr)
        return 1
    mix = blend([load_trace(code), load_trace(conv)], weights=[0.5, 0.5], seed=0)
    base, grid = demands_from_trace(mix, num_types=8)
    total = sum(d.rate_rps for d in base)
    model = get_model(MODEL)
    rows = []
    print(f"{MODEL}, 8 types from a 50/50 code/conv blend, {RATE_PER_GPU} req/s per GPU")
    print(
        f"{'GPUs':>6} {'cluster':<28} {'milp s':>7} {'alpha':>7} {'refine s':>9} {'alpha':>7} {'gap':>6} {'homog.':>7}"
    )
    for mixed in (False, True):
        for gpus in SIZES:
            spelling = cluster_spec(gpus, mixed)
            cluster = parse_cluster(spelling)
            demands = [
                TypeDemand(
                    d.name,
                    d.rate_rps / total * RATE_PER_GPU * cluster.num_gpus,
                    d.prompt_tokens,
                    d.output_tokens,
                )
                for d in base
            ]
            slo = default_slo(model, cluster)
            row = {"gpus": cluster.num_gpus, "cluster": spelling, "mixed": mixed, "types": len(demands)}
            for method in ("milp", "refine"):
                start = time.perf_counter()
                result = plan(model, cluster, demands, slo, grid=grid, method=method, milp_time_limit_s=60)
                row[f"{method}_seconds"] = time.perf_counter() - start
                row[f"{method}_alpha"] = result.alpha
                row["baseline_alpha"] = result.baseline_alpha
                row[f"{method}_replicas"] = len(result.deployment.replicas)
            row["refine_gap"] = 1 - row["refine_alpha"] / row["milp_alpha"] if row["milp_alpha"] else 0.0
            rows.append(row)
            print(
                f"{row['gpus']:>6} {spelling:<28} {row['milp_seconds']:>7.2f} {row['milp_alpha']:>7.3f} "
                f"{row['refine_seconds']:>9.2f} {row['refine_alpha']:>7.3f} {row['refine_gap']:>6.1%} "
                f"{row['baseline_alpha']:>7.3f}"
            )
    at64 = max(r["milp_seconds"] for r in rows if r["gpus"] == 64)
    at1024 = max(r["milp_seconds"] for r in rows if r["gpus"] == 1024)
    print(f"\nslowest at 64 GPUs: {at64:.2f} s (target 1 s); at 1,024: {at1024:.2f} s (target 10 s)")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"model": MODEL, "rate_per_gpu": RATE_PER_GPU, "rows": rows}, indent=2))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
