"""The headline: OServe (forecast, plan, switch) against the paper's baselines and ours, on real traces.

    python benchmarks/headline.py [--traces ../shared/data/traces] [--minutes 10] [--scenarios shifting,conv,...]
                                  [--setups short,long,mixed | llama-3-8b@1x8xH100,...] [--loads 0.6,0.9,1.2]
                                  [--baselines static,vllm,...] [--oracle] [--sensitivity]
                                  [--json benchmarks/results/headline.json]
    python benchmarks/headline.py --merge a.json,b.json,...   # earlier runs' rows: one table, summary and aims

For every scenario x setup (``adapt.scenarios``: conv, code, shifting, ramp, swing from the Azure 2023 traces; long,
two-class, day with Mooncake's long documents too — those only on setups whose model holds 32k tokens; every
source trace scaled to each ``--loads`` share of its reference rate: by default the rate at which ``static`` keeps
90% of requests within the SLO in the simulator, ``--load-reference planned`` the planner's capacity of the best
homogeneous deployment for the p90 minute; ``adapt.load_reference``) it simulates,
through the policy registry (``oserve simulate --policy``, same code), every ``--baselines`` policy (default: every
registered policy not named ``oserve*``: ``static``, ``llumnix``, ``vllm``, ``vllm-tp-node``, ``vllm-reload``, and
``dynamo`` where registered) and

- ``oserve``: the adaptive controller: it starts from the plan for the scenario's traffic (the information
  ``static`` gets), then EWMA forecast, re-plan every minute, re-route, and switch in waves when the gain beats
  twice the switch plan's cost (30 s cold restarts, weights over the fastest links);
- ``oserve-oracle`` with ``--oracle``: the same with the true future rates;
- ``oserve-p99`` with ``--p99-first``: the same from a tail-first start (the lowest P99 within 2% of static's
  goodput), with its own summary and aims.

A scenario with SLO classes (``SCENARIO_SLO``: ``two-class``) is scored per class. Figures, for oserve against each
baseline: P99 E2E ratio baseline / oserve at the reference load (the middle of ``--loads``), goodput ratio, and the
ratio of max sustainable loads at the SLO (the load where SLO attainment crosses 90%, interpolated on the grid; the
grid's end when it never does). Switch overheads are inside the simulation. Setups: ``short`` (``SETUPS``),
``long`` (``LONG_SETUPS``: long-context models), ``mixed`` (``MIXED_SETUPS``: H100 + A100 clusters), ``all``, or
explicit ``model@cluster`` spellings. ``--sensitivity`` adds, on the ``--phased`` scenarios (default shifting) at
the reference load, forecasts off by +-10/25/50%, switch costs x2/x5 and standby engines (0.1 s wake-ups); ``--headroom`` (``headroom.py``) the bound
on switching there: every homogeneous shape and OServe's plan for each phase kind, scored per phase.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from oserve.adapt.decide import DecisionConfig
from oserve.adapt.load_reference import LOAD_REFERENCES, knees_found
from oserve.adapt.policy import DemandSource, start_adaptive
from oserve.adapt.registry import POLICIES, SimContext, parse_policies, simulate_policy
from oserve.adapt.scenarios import (
    LONG_CONTEXT_TOKENS,
    LONG_SCENARIOS,
    MIXED_CLUSTERS,
    PHASES,
    SCENARIOS,
    build_scenario,
    scenario_slo,
)
from oserve.cli.options import grid_option
from oserve.planner import default_slo
from oserve.planner.slo_classes import parse_slo_classes
from oserve.sim import simulate
from oserve.sim.metrics import summarize
from oserve.spec import get_model, parse_cluster

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling modules: headline_table, headroom
from headline_table import knee_lines, load_knees, load_rows, max_load, other_adaptive, report

SETUPS = ("llama-3-8b@1x8xH100", "llama-2-70b@2x8xH100", "llama-2-70b@4x8xA100-80GB")
#: long-context models (131k tokens), for the long scenarios too
LONG_SETUPS = ("llama-3.1-8b@1x8xH100", "llama-3.1-70b@2x8xH100")
#: H100 + A100 in one cluster, as many GPUs as the model's homogeneous setup (``adapt.scenarios.MIXED_CLUSTERS``)
MIXED_SETUPS = tuple(
    f"{m}@{MIXED_CLUSTERS[m]}" for m in ("llama-3-8b", "llama-2-70b", "llama-3.1-8b", "llama-3.1-70b")
)
SETUP_GROUPS = {"short": SETUPS, "long": LONG_SETUPS, "mixed": MIXED_SETUPS}
ADAPTIVE = ("oserve", "oserve-oracle", "oserve-p99")  # OServe's own policies; every other one is a baseline


def _adaptive(trace, model, cluster, slo, source: DemandSource, config: DecisionConfig, static):
    seed = ("static", *static)  # (label, deployment, router, result)
    start, policy = start_adaptive(trace, model, cluster, slo, source, config, prior=trace, seeds=[seed])
    return simulate_started(trace, model, cluster, slo, start, policy).summary


def simulate_started(trace, model, cluster, slo, start, policy):
    """The adaptive ``policy`` run on ``trace`` from its ``start`` (``start_adaptive``'s pair), routed and typed as
    it starts."""
    return simulate(
        trace,
        start,
        model,
        cluster,
        router=policy.router,
        grid=policy.grid,
        policy=policy,
        slo=slo.to_dict(),
    )


def _over(a: float, b: float, none: float) -> float:
    """``a / b``, or ``none`` where ``b`` is not positive."""
    return a / b if b > 0 else none


def _row(summary: dict) -> dict:
    keys = ("goodput_rps", "slo_attainment", "e2e_p99", "e2e_mean", "ttft_mean", "tpot_mean", "switches")
    keys += ("completed", "dropped", "rejected")  # the P99s are over completed requests only
    out = {k: float(summary.get(k, np.nan)) for k in keys}
    out["gpu_hours"] = float(summary.get("gpu_seconds", np.nan)) / 3600.0  # GPUs held over the run
    if "slo_attainment_by_class" in summary:  # a scenario with SLO classes: each class's attainment too
        out["slo_attainment_by_class"] = {k: float(v) for k, v in summary["slo_attainment_by_class"].items()}
    return out


def class_latency(records) -> dict[str, dict[str, float]]:
    """Per SLO class (records scored by ``sim.with_classes``: a ``slo_class`` column), the P99 E2E and P99 TTFT
    of its completed requests (``sim.metrics.summarize`` of the class's records): the headline's P99 E2E is over
    every request, and on ``two-class`` the batch class (E2E target 600 s) can set it. Empty without classes."""
    if "slo_class" not in records:
        return {}
    out = {}
    for name, part in records.groupby("slo_class", sort=True):
        summary = summarize(part, 0.0)
        out[str(name)] = {"e2e_p99": float(summary["e2e_p99"]), "ttft_p99": float(summary["ttft_p99"])}
    return out


def setups_of(text: str) -> list[str]:
    """``short,long,mixed,all`` groups and ``model@cluster`` spellings -> the setups, each once, in order."""
    out: list[str] = []
    for part in (x.strip() for x in text.split(",") if x.strip()):
        if part == "all":
            out += [s for group in SETUP_GROUPS.values() for s in group]
        elif part in SETUP_GROUPS:
            out += SETUP_GROUPS[part]
        elif "@" in part:
            out.append(part)
        else:
            raise SystemExit(
                f"setup {part!r}: expected model@cluster or one of {', '.join(SETUP_GROUPS)}, all"
            )
    return list(dict.fromkeys(out))


def _setup(setup: str):
    model_name, spelling = setup.split("@")
    return get_model(model_name), parse_cluster(spelling)


def default_baselines() -> str:
    """Every registered policy but OServe's own (``oserve*``): the paper's baselines and ours."""
    return ",".join(n for n in POLICIES if not n.startswith("oserve"))


def scenario_context(trace, model, cluster, scenario: str) -> SimContext:
    """The registry's context for running policies on ``trace`` as ``oserve simulate --policy`` does:
    the scenario's SLO classes, the planning policies' type grid (6 types, the classes' prompt rules as edges)."""
    classes = parse_slo_classes(scenario_slo(scenario), default_slo(model, cluster))
    grid = grid_option(trace, 6, None, None, classes.prompt_thresholds)
    return SimContext(
        trace,
        model,
        cluster,
        None,
        None,
        classes.default.to_dict(),
        lambda _msg: None,
        grid=grid,
        classes=classes,
    )


def run_policies(names: list[str], trace, model, cluster, scenario: str) -> dict[str, dict]:
    """Every policy ``names`` on ``trace`` through the registry, as ``oserve simulate --policy`` runs them (one
    context, so ``llumnix`` and ``oserve`` reuse ``static``'s search and ``vllm-reload`` the ``vllm`` run),
    scored under the scenario's SLO classes."""
    ctx = scenario_context(trace, model, cluster, scenario)
    out = {}
    for name in names:
        run, result = simulate_policy(name, ctx)
        row = {**_row(result.summary), "deployment": run.deployment.describe()}
        if by_class := class_latency(result.records):
            row["latency_by_class"] = by_class
        if run.candidates:  # every candidate oserve's start check ranked (benchmarks/start_bound.py)
            row["start_candidates"] = [asdict(c) for c in run.candidates]
        out[name] = row
    return out


def ratios(baseline: list[dict], policy: list[dict], loads: list[float], ref: int) -> dict[str, float]:
    """``policy`` against ``baseline`` over the load grid: P99 E2E (baseline / policy) and goodput (policy /
    baseline) at the reference load, max sustainable load (policy / baseline)."""
    b, o = baseline[ref], policy[ref]
    m_b = max_load(loads, [r["slo_attainment"] for r in baseline])
    m_o = max_load(loads, [r["slo_attainment"] for r in policy])
    out = {
        "p99_ratio": b["e2e_p99"] / o["e2e_p99"] if o["e2e_p99"] > 0 else float("inf"),
        "max_load_ratio": m_o / m_b if m_b > 0 else float("inf"),
        "goodput_ratio": o["goodput_rps"] / b["goodput_rps"]
        if b["goodput_rps"]
        else (float("inf") if o["goodput_rps"] else 1.0),  # a baseline with no goodput loses to any
    }
    # with SLO classes, the same P99 ratios per class (reported beside the aim's P99 over all, not instead)
    b_cls, o_cls = b.get("latency_by_class", {}), o.get("latency_by_class", {})
    if b_cls and o_cls:
        out["p99_ratio_by_class"] = {
            k: {
                m: b_cls[k][m] / o_cls[k][m] if o_cls[k][m] > 0 else float("inf")
                for m in ("e2e_p99", "ttft_p99")
            }
            for k in sorted(set(b_cls) & set(o_cls))
        }
    return out


def scenario_trace(args, scenario: str, model, cluster, slo, load: float, seed: int = 0):
    """``scenario`` on ``model``/``cluster`` at ``load``, with the run's ``--traces``, ``--minutes`` and ``--phase``."""
    return build_scenario(
        scenario,
        args.traces,
        model,
        cluster,
        slo,
        load=load,
        minutes=args.minutes,
        phase_s=args.phase,
        seed=seed,
        offset_minutes=getattr(args, "offset", 0.0),
        reference=getattr(args, "load_reference", "planned"),
        cache_dir=getattr(args, "load_cache", None),
        progress=lambda msg: print(f"  {msg}", flush=True),
    )


def add_load_options(p: argparse.ArgumentParser) -> None:
    """``--load-reference`` and ``--load-cache`` (``scenario_trace`` reads them)."""
    p.add_argument(
        "--load-reference",
        choices=LOAD_REFERENCES,
        default="simulated",
        help="what load 1.0 is: the rate at which static keeps 90%% within the SLO in the simulator (default) "
        "or the planner's capacity of the best homogeneous deployment (adapt.load_reference)",
    )
    p.add_argument(
        "--load-cache",
        type=Path,
        help="a folder keeping each simulated knee as JSON (parallel runs of one headline share it)",
    )


def _phased_setups(args, load: float):
    """(setup, scenario, model, cluster, SLO, trace at ``load``) for every setup and ``--phased`` scenario."""
    for setup in args.setup_list:
        model, cluster = _setup(setup)
        slo = default_slo(model, cluster)
        for scenario in args.phased.split(","):
            if scenario in LONG_SCENARIOS and model.max_position_embeddings < LONG_CONTEXT_TOKENS:
                continue
            trace = scenario_trace(args, scenario, model, cluster, slo, load)
            yield setup, scenario, model, cluster, slo, trace


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--traces", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/traces")
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--scenarios", default=",".join(SCENARIOS), help=f"of {', '.join(SCENARIOS)}")
    p.add_argument(
        "--setups", default="all", help=f"model@cluster spellings or groups {', '.join(SETUP_GROUPS)}, all"
    )
    p.add_argument("--loads", default="0.6,0.9,1.2")
    p.add_argument(
        "--phase", type=float, default=300.0, help="seconds per phase of the shifting and day scenarios"
    )
    p.add_argument(
        "--offset", type=float, default=0.0, help="start the Azure windows this many minutes into the hour"
    )
    add_load_options(p)
    p.add_argument(
        "--baselines",
        default=default_baselines(),
        help=f"registered policies to compare oserve with (default: {default_baselines()})",
    )
    p.add_argument("--oracle", action="store_true")
    p.add_argument(
        "--p99-first",
        action="store_true",
        help="also run oserve-p99 (its start: the lowest P99 within 2%% of static's goodput) and its aims",
    )
    p.add_argument("--sensitivity", action="store_true")
    p.add_argument(
        "--headroom",
        action="store_true",
        help="per setup: every homogeneous shape and OServe's per-phase plans on the --phased scenarios, scored "
        "per phase (the bound on switching)",
    )
    p.add_argument(
        "--phased",
        default="shifting",
        help=f"the phased scenarios --headroom and --sensitivity run on (of {', '.join(PHASES)})",
    )
    p.add_argument("--json", type=Path, default=Path(__file__).resolve().parent / "results/headline.json")
    p.add_argument(
        "--merge",
        default="",
        help="comma-separated headline JSON files: print their rows' table, summary and aims (no simulation); "
        "--json gets the merged rows",
    )
    args = p.parse_args(argv)
    if args.merge:
        files = [Path(f) for f in args.merge.split(",") if f]
        merged = load_rows(files)
        checked = report(merged)
        checked.update(other_adaptive(merged))
        knees = load_knees(files)
        if knees:
            print()
            print("\n".join(knee_lines(knees)))
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {"merged": [str(f) for f in files], "rows": merged, **checked, "knees": knees},
                indent=2,
                default=float,
            )
        )
        print(f"wrote {args.json}")
        return 0
    args.setup_list = setups_of(args.setups)
    phased = set(PHASES) & {
        *args.scenarios.split(","),
        *(args.phased.split(",") if args.headroom or args.sensitivity else ()),
    }
    if phased and args.minutes is not None and args.minutes * 60 < 2 * args.phase:
        print(
            f"warning: --minutes {args.minutes:g} is shorter than two --phase {args.phase:g} s phases: "
            f"{', '.join(sorted(phased))} would be a single phase (no shift); lower --phase or raise --minutes",
            file=sys.stderr,
        )
    loads = [float(x) for x in args.loads.split(",")]
    reference = loads[len(loads) // 2]
    ref = loads.index(reference)
    config = DecisionConfig()
    baselines = [b for b in parse_policies(args.baselines) if b not in ADAPTIVE]
    adaptive = [
        "oserve",
        *(["oserve-oracle"] if args.oracle else []),
        *(["oserve-p99"] if args.p99_first else []),
    ]
    names = list(dict.fromkeys([*baselines, *adaptive]))
    rows, skipped = [], []
    start_all = time.perf_counter()
    for setup in args.setup_list:
        model, cluster = _setup(setup)
        slo = default_slo(model, cluster)
        for scenario in [x for x in args.scenarios.split(",") if x]:
            if scenario in LONG_SCENARIOS and model.max_position_embeddings < LONG_CONTEXT_TOKENS:
                why = (
                    f"{model.name} holds {model.max_position_embeddings:,} tokens (< {LONG_CONTEXT_TOKENS:,})"
                )
                skipped.append({"setup": setup, "scenario": scenario, "why": why})
                print(f"{setup:<40} {scenario:<9} skipped: {why}", flush=True)
                continue
            per_load: dict[str, list[dict]] = {n: [] for n in names}
            for load in loads:
                trace = scenario_trace(args, scenario, model, cluster, slo, load)
                for name, r in run_policies(names, trace, model, cluster, scenario).items():
                    per_load[name].append({**r, "requests": len(trace)})
            row = {
                "setup": setup,
                "scenario": scenario,
                "slo": scenario_slo(scenario),
                "loads": loads,
                "reference_load": reference,
                **per_load,
                "ratios": {
                    a: {b: ratios(per_load[b], per_load[a], loads, ref) for b in baselines} for a in adaptive
                },
            }
            for a in adaptive if "static" in baselines else ():  # the keys of the earlier headline files
                for key, value in row["ratios"][a]["static"].items():
                    row[f"{a}_{key}"] = value
            rows.append(row)
            n_req = per_load[names[0]][ref]["requests"]
            print(f"{setup} | {scenario} | load {reference:g} ({n_req:,} requests)", flush=True)
            for name in names:
                r = per_load[name][ref]
                by_class = r.get("slo_attainment_by_class")
                classes = (
                    " (" + ", ".join(f"{k} {v:.1%}" for k, v in by_class.items()) + ")" if by_class else ""
                )
                latency = r.get("latency_by_class", {})
                per_class = "".join(
                    f"  {k}: p99 E2E {v['e2e_p99']:.1f} s TTFT {v['ttft_p99']:.2f} s"
                    for k, v in latency.items()
                )
                print(
                    f"  {name:<13} {r['deployment']:<44} goodput {r['goodput_rps']:7.2f} req/s  "
                    f"att. {r['slo_attainment']:6.1%}{classes}  p99 E2E {r['e2e_p99']:7.1f} s  "
                    f"GPU-h {r['gpu_hours']:.2f}  switches {r['switches']:.0f}{per_class}",
                    flush=True,
                )
            for a in adaptive:
                print(
                    f"  {a} vs "
                    + " | ".join(
                        f"{b}: p99 x{x['p99_ratio']:.2f} goodput x{x['goodput_ratio']:.2f} "
                        f"max-load x{x['max_load_ratio']:.2f}"
                        + "".join(
                            f" {k} p99 E2E x{v['e2e_p99']:.2f} TTFT x{v['ttft_p99']:.2f}"
                            for k, v in x.get("p99_ratio_by_class", {}).items()
                        )
                        for b, x in row["ratios"][a].items()
                    ),
                    flush=True,
                )
    sensitivity = []
    if args.sensitivity:
        from sensitivity import run_sensitivity

        sensitivity = run_sensitivity(_phased_setups(args, reference), config, _adaptive, _row)
    headroom = []
    if args.headroom:
        from headroom import phase_headroom

        for setup, scenario, model, cluster, slo, trace in _phased_setups(args, reference):
            h = {"setup": setup, **phase_headroom(trace, model, cluster, slo, args.phase, scenario)}
            headroom.append(h)
            print(
                f"headroom {setup} | {scenario} | static {h['static']} | best single {h['single']}",
                flush=True,
            )
            for k in PHASES[scenario]:
                st, si = h[k]["vs_static"], h[k]["vs_single"]
                print(
                    f"  {k:<6} best {h[k]['best']:<60} vs static: goodput x{st['goodput']:.3f} "
                    f"p99 x{st['p99']:.2f} mean x{st['mean']:.2f} | vs single: goodput x{si['goodput']:.3f} "
                    f"p99 x{si['p99']:.2f} mean x{si['mean']:.2f}",
                    flush=True,
                )
            b = h["bound"]
            print(
                f"  bound: goodput x{b['goodput_vs_static']:.3f} of static, x{b['goodput_vs_single']:.3f} of "
                f"the best single candidate; mean E2E x{b['mean_vs_static']:.3f} / x{b['mean_vs_single']:.3f}; "
                f"P99 E2E x{b['p99_vs_static']:.3f} / x{b['p99_vs_single']:.3f}; "
                f"goodput's ceiling (no tie) x{b['max_goodput_vs_static']:.3f} / x{b['max_goodput_vs_single']:.3f}",
                flush=True,
            )
    checked = {**report(rows), **other_adaptive(rows)} if rows else {}
    if args.load_reference == "simulated" and knees_found():
        print()
        print("\n".join(knee_lines([asdict(k) for k in knees_found()])))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps(
            {
                "minutes": args.minutes,
                "baselines": baselines,
                "policies": names,
                "rows": rows,
                "skipped": skipped,
                "sensitivity": sensitivity,
                "headroom": headroom,
                "load_reference": args.load_reference,
                "knees": [asdict(k) for k in knees_found()],
                "wall_seconds": time.perf_counter() - start_all,
                **checked,
            },
            indent=2,
            default=float,
        )
    )
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
