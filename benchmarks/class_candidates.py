"""Why ``oserve`` starts where it does on a scenario with SLO classes: every start candidate, per class.

    python benchmarks/class_candidates.py [--setup llama-3.1-8b@1x8xH100] [--scenario two-class] [--load 0.9]
                                          [--minutes 4] [--traces ../shared/data/traces]

For the scenario as ``benchmarks/headline.py`` builds it, each of ``oserve``'s start candidates (``static``'s
deployment, the best isolated one, the P/D pools and hybrid, ``oserve-static``'s verified plan: the registry's own
searches, one context) with its goodput, SLO attainment and P99 E2E over all requests (what the ranking and the
headline's P99 ratio use) and, per class, attainment, P99 E2E and P99 TTFT, and how many of the requests above the
overall P99 each class holds. Then a bound on the P99 over all: each class alone on a whole cluster of its own
(every homogeneous shape, the best P99 kept), the two runs' requests pooled: no deployment sharing one cluster
between the classes does better than that (it gives each class twice the GPUs).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from headline import _setup, scenario_context
from oserve.adapt import registry
from oserve.adapt.scenarios import build_scenario
from oserve.planner import default_slo
from oserve.planner.baselines import homogeneous_candidates
from oserve.sim import simulate


def _latency(records) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(request ids, E2E, TTFT) of the completed requests."""
    done = records[records["finish_s"].notna() & ~records["dropped"].astype(bool)]
    arrival = done["arrival_s"].to_numpy()
    return (
        done["request_id"].to_numpy(),
        done["finish_s"].to_numpy() - arrival,
        done["first_token_s"].to_numpy() - arrival,
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--setup", default="llama-3.1-8b@1x8xH100")
    p.add_argument("--scenario", default="two-class")
    p.add_argument("--load", type=float, default=0.9)
    p.add_argument("--minutes", type=float, default=4.0)
    p.add_argument("--traces", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/traces")
    args = p.parse_args(argv)
    model, cluster = _setup(args.setup)
    slo = default_slo(model, cluster)
    trace = build_scenario(
        args.scenario, args.traces, model, cluster, slo, load=args.load, minutes=args.minutes
    )
    ctx = scenario_context(trace, model, cluster, args.scenario)
    if ctx.classes is None or ctx.classes.single:
        raise SystemExit(f"scenario {args.scenario} has one SLO class: nothing to split")
    names, _ = ctx.classes.assign(trace)
    classes = sorted(set(names.tolist()))
    print(
        f"{args.setup} | {args.scenario} | load {args.load:g}: {len(trace):,} requests, "
        + ", ".join(f"{k} {int((names == k).sum()):,}" for k in classes)
    )
    static = registry.build_policy("static", ctx)
    candidates = [("static", static.deployment, static.router, ctx.score(static.result))]
    candidates += registry._isolation_seeds(ctx) + registry._pool_seeds(ctx) + registry._plan_seeds(ctx)
    for label, deployment, router, result in candidates:
        s = result.summary
        ids, e2e, ttft = _latency(result.records)
        cls = names[ids]
        top = cls[e2e > np.percentile(e2e, 99)]
        print(
            f"{label} ({router}): {deployment.describe()}\n"
            f"    goodput {s['goodput_rps']:.2f} req/s  att. {s['slo_attainment']:.1%}  "
            f"p99 E2E {s['e2e_p99']:.2f} s  above it: "
            + ", ".join(f"{k} {int((top == k).sum())}" for k in classes)
        )
        for k in classes:
            m = cls == k
            print(
                f"    {k:<8} att. {s['slo_attainment_by_class'][k]:6.1%}  p99 E2E "
                f"{np.percentile(e2e[m], 99):6.2f} s  p99 TTFT {np.percentile(ttft[m], 99):5.2f} s"
            )
    pooled, shapes = [], []
    for k in classes:
        part = trace.take(np.flatnonzero(names == k))
        best = None
        for cand in homogeneous_candidates(model, cluster, pps=(1,)):
            r = simulate(part, cand.deployment, model, cluster, router="least-requests", slo=ctx.slo)
            e2e = _latency(r.records)[1]
            if best is None or np.percentile(e2e, 99) < np.percentile(best[1], 99):
                best = (cand.deployment.describe(), e2e)
        shapes.append(f"{k} alone on {best[0]}: p99 E2E {np.percentile(best[1], 99):.2f} s")
        pooled.append(best[1])
    bound = float(np.percentile(np.concatenate(pooled), 99))
    print(
        "bound (each class on a cluster of its own): "
        + "; ".join(shapes)
        + f"; pooled p99 E2E {bound:.2f} s: static at most x{candidates[0][3].summary['e2e_p99'] / bound:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
