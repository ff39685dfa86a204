"""The headline: OServe (forecast, plan, switch) against the best static homogeneous deployment, on real traces.

    python benchmarks/headline.py [--traces ../shared/data/traces] [--minutes 10] [--scenarios shifting,conv,...]
                                  [--setups llama-3-8b@1x8xH100,...] [--loads 0.6,0.9,1.2] [--oracle]
                                  [--sensitivity] [--json benchmarks/results/headline.json]

For every scenario x cluster (``adapt.scenarios``: conv, code, shifting, ramp — real Azure 2023 traces scaled so the
p90 minute loads the best homogeneous deployment to each ``--loads`` share) it simulates

- ``static``: the best homogeneous deployment, found by simulating every fitting shape on the whole scenario
  (hindsight), routed by the plan's weights — what ``oserve simulate --policy static`` runs;
- ``oserve``: the adaptive controller (``oserve simulate --policy oserve``): it starts from the plan for the
  scenario's traffic (the information ``static`` gets), then EWMA forecast, re-plan every minute, re-route, and
  switch in waves when the gain beats twice the switch plan's cost (30 s cold restarts, weights over the fastest
  links);
- ``oserve-oracle`` with ``--oracle``: the same with the true future rates.

Figures: P99 E2E ratio static / oserve at the reference load (the middle of ``--loads``), and the max sustainable
load at the SLO (the load where SLO attainment crosses 90%, interpolated on the grid; the grid's end when it never
does) and its ratio oserve / static. Switch overheads are inside the simulation. ``--sensitivity`` adds, on the
shifting scenario at the reference load, forecasts off by +-10/25/50% and switch costs x2/x5.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from oserve.adapt.decide import DecisionConfig
from oserve.adapt.forecast import make_forecaster
from oserve.adapt.policy import DemandSource, ForecastSource, NoisySource, OracleSource, start_adaptive
from oserve.adapt.scenarios import SCENARIOS, build_scenario
from oserve.planner import default_slo, simulated_best_homogeneous
from oserve.planner.baselines import homogeneous_candidates
from oserve.sim import simulate
from oserve.sim.metrics import summarize
from oserve.spec import get_model, parse_cluster

SETUPS = ("llama-3-8b@1x8xH100", "llama-2-70b@2x8xH100", "llama-2-70b@4x8xA100-80GB")
ATTAINMENT = 0.9


def _adaptive(trace, model, cluster, slo, source: DemandSource, config: DecisionConfig, static):
    start, policy = start_adaptive(trace, model, cluster, slo, source, config, prior=trace, seeds=[static])
    result = simulate(
        trace,
        start,
        model,
        cluster,
        router=policy.router,
        grid=policy.grid,
        policy=policy,
        slo=slo.to_dict(),
    )
    return result.summary


def _row(summary: dict) -> dict:
    keys = ("goodput_rps", "slo_attainment", "e2e_p99", "ttft_mean", "tpot_mean", "switches")
    return {k: float(summary.get(k, np.nan)) for k in keys}


def phase_headroom(trace, model, cluster, slo, phase_s: float) -> dict:
    """What switching between homogeneous shapes could buy on a shifting trace, switches free: every shape
    simulated on the whole trace, scored per phase kind (code phases, conversation phases); the best shape of
    each kind against the one shape the static search keeps (best goodput over the whole trace)."""
    kind = (trace.arrival_s // phase_s).astype(np.int64) % 2  # 0: code phases, 1: conversation phases
    phases = trace.arrival_s // phase_s
    span = {k: phase_s * len(np.unique(phases[kind == k])) for k in (0, 1)}
    shapes = []
    for cand in homogeneous_candidates(model, cluster):
        res = simulate(trace, cand.deployment, model, cluster, slo=slo.to_dict())
        rec = res.records
        per = {}
        for k, name in ((0, "code"), (1, "conv")):
            part = summarize(rec[kind[rec["request_id"].to_numpy()] == k], span[k], slo=slo.to_dict())
            per[name] = {"goodput_rps": part["goodput_rps"], "e2e_p99": part["e2e_p99"]}
        shapes.append({"shape": cand.deployment.describe(), "whole": res.summary["goodput_rps"], **per})
    static = max(shapes, key=lambda s: s["whole"])
    out = {"static": static["shape"], "shapes": shapes}
    for name in ("code", "conv"):
        best = max(shapes, key=lambda s: (s[name]["goodput_rps"], -s[name]["e2e_p99"]))
        out[name] = {
            "best": best["shape"],
            "goodput_ratio": best[name]["goodput_rps"] / max(static[name]["goodput_rps"], 1e-9),
            "p99_ratio": static[name]["e2e_p99"] / max(best[name]["e2e_p99"], 1e-9),
        }
    return out


def _shifting_setups(args, load: float):
    """(setup, model, cluster, SLO, shifting trace at ``load``) for every setup asked for."""
    for setup in args.setups.split(","):
        model_name, spelling = setup.split("@")
        model, cluster = get_model(model_name), parse_cluster(spelling)
        slo = default_slo(model, cluster)
        trace = build_scenario(
            "shifting", args.traces, model, cluster, slo, load=load, minutes=args.minutes, phase_s=args.phase
        )
        yield setup, model, cluster, slo, trace


def max_load(loads: list[float], attainment: list[float]) -> float:
    """The load where attainment crosses ``ATTAINMENT`` (linear between grid points); the grid's ends otherwise."""
    if attainment[0] < ATTAINMENT:
        return loads[0] * attainment[0] / ATTAINMENT
    for (l0, a0), (l1, a1) in itertools.pairwise(zip(loads, attainment, strict=True)):
        if a1 < ATTAINMENT <= a0:
            return l0 + (l1 - l0) * (a0 - ATTAINMENT) / (a0 - a1)
    return loads[-1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--traces", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/traces")
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--scenarios", default=",".join(SCENARIOS))
    p.add_argument("--setups", default=",".join(SETUPS))
    p.add_argument("--loads", default="0.6,0.9,1.2")
    p.add_argument("--phase", type=float, default=300.0, help="seconds per phase of the shifting scenario")
    p.add_argument("--oracle", action="store_true")
    p.add_argument("--sensitivity", action="store_true")
    p.add_argument(
        "--headroom",
        action="store_true",
        help="per setup: every homogeneous shape on the shifting scenario, per phase (the bound on switching)",
    )
    p.add_argument("--json", type=Path, default=Path(__file__).resolve().parent / "results/headline.json")
    args = p.parse_args(argv)
    loads = [float(x) for x in args.loads.split(",")]
    reference = loads[len(loads) // 2]
    config = DecisionConfig()
    policies = {"oserve": lambda: ForecastSource(make_forecaster("ewma"))}
    if args.oracle:
        policies["oserve-oracle"] = OracleSource
    rows = []
    start_all = time.perf_counter()
    for setup in args.setups.split(","):
        model_name, spelling = setup.split("@")
        model, cluster = get_model(model_name), parse_cluster(spelling)
        slo = default_slo(model, cluster)
        for scenario in [x for x in args.scenarios.split(",") if x]:
            per_load: dict[str, list[dict]] = {"static": [], **{n: [] for n in policies}}
            for load in loads:
                trace = build_scenario(
                    scenario,
                    args.traces,
                    model,
                    cluster,
                    slo,
                    load=load,
                    minutes=args.minutes,
                    phase_s=args.phase,
                )
                dep, res, _ = simulated_best_homogeneous(trace, model, cluster, slo=slo.to_dict())
                per_load["static"].append({**_row(res.summary), "deployment": dep.describe()})
                for name, make in policies.items():
                    per_load[name].append(
                        _row(_adaptive(trace, model, cluster, slo, make(), config, (dep, res)))
                    )
            ref = loads.index(reference)
            row = {
                "setup": setup,
                "scenario": scenario,
                "loads": loads,
                "reference_load": reference,
                **per_load,
            }
            for name in policies:
                st, os_ = per_load["static"][ref], per_load[name][ref]
                m_static = max_load(loads, [r["slo_attainment"] for r in per_load["static"]])
                m_policy = max_load(loads, [r["slo_attainment"] for r in per_load[name]])
                row[f"{name}_p99_ratio"] = (
                    st["e2e_p99"] / os_["e2e_p99"] if os_["e2e_p99"] > 0 else float("inf")
                )
                row[f"{name}_max_load_ratio"] = m_policy / m_static if m_static > 0 else float("inf")
                row[f"{name}_goodput_ratio"] = (
                    os_["goodput_rps"] / st["goodput_rps"] if st["goodput_rps"] else 0.0
                )
            rows.append(row)
            print(
                f"{setup:<28} {scenario:<9} static {per_load['static'][ref]['deployment']:<28} "
                + " ".join(
                    f"| {n}: p99 x{row[f'{n}_p99_ratio']:.2f} max-load x{row[f'{n}_max_load_ratio']:.2f} "
                    f"goodput x{row[f'{n}_goodput_ratio']:.2f} switches {per_load[n][ref]['switches']:.0f}"
                    for n in policies
                ),
                flush=True,
            )
    sensitivity = []
    if args.sensitivity:
        for setup, model, cluster, slo, trace in _shifting_setups(args, reference):
            dep, res, _ = simulated_best_homogeneous(trace, model, cluster, slo=slo.to_dict())
            static = _row(res.summary)
            variants = [
                (f"forecast +-{e:.0%}", NoisySource(ForecastSource(make_forecaster("ewma")), e), config)
                for e in (0.1, 0.25, 0.5)
            ]
            variants += [
                (
                    f"switch cost x{f:g}",
                    ForecastSource(make_forecaster("ewma")),
                    replace(config, restart_s=config.restart_s * f, cost_factor=f),
                )
                for f in (2, 5)
            ]
            for label, source, cfg in variants:
                r = _row(_adaptive(trace, model, cluster, slo, source, cfg, (dep, res)))
                item = {
                    "setup": setup,
                    "variant": label,
                    "goodput_ratio": r["goodput_rps"] / static["goodput_rps"]
                    if static["goodput_rps"]
                    else 0.0,
                    "p99_ratio": static["e2e_p99"] / r["e2e_p99"] if r["e2e_p99"] > 0 else float("inf"),
                    "switches": r["switches"],
                }
                sensitivity.append(item)
                print(
                    f"sensitivity {setup:<28} {label:<18} goodput x{item['goodput_ratio']:.3f} "
                    f"p99 x{item['p99_ratio']:.2f} switches {item['switches']:.0f}",
                    flush=True,
                )
    headroom = []
    if args.headroom:
        for setup, model, cluster, slo, trace in _shifting_setups(args, reference):
            h = {"setup": setup, **phase_headroom(trace, model, cluster, slo, args.phase)}
            headroom.append(h)
            print(
                f"headroom {setup:<28} static {h['static']:<26} "
                + " ".join(
                    f"| {k}: best {h[k]['best']} goodput x{h[k]['goodput_ratio']:.3f} p99 x{h[k]['p99_ratio']:.2f}"
                    for k in ("code", "conv")
                ),
                flush=True,
            )
    for name in policies if rows else ():
        p99 = [r[f"{name}_p99_ratio"] for r in rows]
        ml = [r[f"{name}_max_load_ratio"] for r in rows]
        print(
            f"{name}: P99 ratio mean {np.mean(p99):.3f} (min {min(p99):.3f}); max-load ratio mean {np.mean(ml):.3f}"
        )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps(
            {
                "minutes": args.minutes,
                "rows": rows,
                "sensitivity": sensitivity,
                "headroom": headroom,
                "wall_seconds": time.perf_counter() - start_all,
            },
            indent=2,
            default=float,
        )
    )
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
