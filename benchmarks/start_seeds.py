"""The start candidates' (goodput, p99 E2E, mean E2E) on several scenario seeds: how stable their order is.

    python benchmarks/start_seeds.py llama-3.1-8b@1x8xH100 swing [--minutes 20 --phase 300 --load 0.9 --seeds 4]

Candidates: the best homogeneous shape (searched per seed) under ``weighted`` and ``allowed-least-load``, and
OServe's P/D pools and hybrid (``pool_options``) under ``POOL_ROUTER``. The spread of their differences across
seeds is what ``verify.best_index``'s ties are weighed against (docs/adapt.md, "The start ranking's tail guard").
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from headline import scenario_trace
from oserve.planner import default_slo, simulated_best_homogeneous
from oserve.planner.disagg_plan import POOL_ROUTER, pool_options
from oserve.sim import simulate
from oserve.spec import get_model, parse_cluster


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("setup")
    p.add_argument("scenario")
    p.add_argument("--traces", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/traces")
    p.add_argument("--minutes", type=float, default=20.0)
    p.add_argument("--phase", type=float, default=300.0)
    p.add_argument("--load", type=float, default=0.9)
    p.add_argument("--seeds", type=int, default=4)
    args = p.parse_args(argv)
    name, spelling = args.setup.split("@")
    model, cluster = get_model(name), parse_cluster(spelling)
    slo = default_slo(model, cluster)
    for seed in range(args.seeds):
        trace = scenario_trace(args, args.scenario, model, cluster, slo, args.load, seed=seed)
        static, _, _ = simulated_best_homogeneous(trace, model, cluster, router="weighted", slo=slo.to_dict())
        runs = [(f"{static.describe()} ({r})", static, r) for r in ("weighted", "allowed-least-load")]
        runs += [(o.label, o.deployment, POOL_ROUTER) for o in pool_options(trace, model, cluster, slo)]
        for label, dep, router in runs:
            s = simulate(trace, dep, model, cluster, router=router, slo=slo.to_dict()).summary
            print(
                f"seed {seed} ({len(trace):,} requests)  goodput {s['goodput_rps']:7.3f} req/s  "
                f"p99 E2E {s['e2e_p99']:6.2f} s  mean E2E {s['e2e_mean']:5.3f} s  {label}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
