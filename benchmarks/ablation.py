"""The paper's ablation: vLLM's default, then OServe's deployment, its routing and its switching added one at a time.

    python benchmarks/ablation.py [--traces ../shared/data/traces] [--minutes 4] [--phase 300]
                                  [--scenarios shifting,day,long,two-class] [--setups long,M@C,...]
                                  [--loads 0.9] [--blind-routers least-requests,round-robin]
                                  [--json benchmarks/results/ablation.json]

Per scenario x setup (the headline's: ``adapt.scenarios``, each source at each ``--loads`` share of its
``--load-reference`` rate, by default the rate at which ``static`` keeps 90% within the SLO in the simulator;
setups as ``headline.py --setups``) it builds the steps of
``oserve.adapt.ablation`` on one registry context (the one ``headline.py`` and ``oserve simulate --policy`` use)
and simulates each:

- ``vllm``: vLLM's default deployment, round-robin;
- ``+hetero``: OServe's planned deployment (``oserve-static``'s), fixed, behind a type-blind router (the first
  ``--blind-routers``, default least requests: a plain least-request balancer, Envoy's or llm-d's queue scorer);
- ``+routing``: the same deployment under OServe's type-aware router (``oserve-static``);
- ``+switching``: the adaptive ``oserve`` (it plans its own start: the deployment is printed);

and for comparison ``+hetero/ROUTER`` (the plan under each further blind router, e.g. round-robin) and
``vllm/ROUTER`` (vLLM's deployment under ``+hetero``'s router: how much of ``+hetero``'s gain is the router's),
``static`` (the best homogeneous deployment) as a reference. Figures per step against ``vllm`` and against the
step before it (the increment): P99 E2E ratio (before / step), goodput ratio (step / before) at the reference
load (the middle of ``--loads``), and with several loads the max sustainable load ratio (where SLO attainment
crosses 90% on the grid). A scenario with SLO classes (``two-class``) is scored per class.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from headline import (
    LONG_SETUPS,
    _row,
    _setup,
    add_load_options,
    max_load,
    ratios,
    scenario_context,
    scenario_trace,
    setups_of,
)
from oserve.adapt.ablation import BLIND_ROUTER, STEPS, ablation_steps, is_heterogeneous
from oserve.adapt.load_reference import knees_found
from oserve.adapt.registry import simulate_policy, simulate_run
from oserve.adapt.scenarios import LONG_CONTEXT_TOKENS, LONG_SCENARIOS, MIXED_CLUSTERS
from oserve.planner import default_slo

DEFAULT_SETUPS = ",".join([*LONG_SETUPS, f"llama-3.1-8b@{MIXED_CLUSTERS['llama-3.1-8b']}"])
#: the OServe paper's ablation (means over its workloads): each part's gain over the step before
PAPER_INCREMENTS = {"+hetero": 0.34, "+routing": 0.64, "+switching": 0.12}


def run_steps(trace, model, cluster, scenario: str, blind_routers: list[str]) -> dict[str, dict]:
    """Every step (and comparison run) of the ablation on ``trace``, and ``static`` for reference."""
    ctx = scenario_context(trace, model, cluster, scenario)
    out = {}
    for name, run in ablation_steps(ctx, blind_routers).items():
        summary = simulate_run(run, ctx).summary
        out[name] = {
            **_row(summary),
            "deployment": run.deployment.describe(),
            "router": getattr(run.router, "type", run.router),
            "heterogeneous": is_heterogeneous(run.deployment),
        }
    static, result = simulate_policy("static", ctx)  # searched already, as oserve-static's seed
    out["static"] = {
        **_row(result.summary),
        "deployment": static.deployment.describe(),
        "router": static.router,
    }
    return out


def _fmt(x: float | None, spec: str = ".2f") -> str:
    return "—" if x is None or not np.isfinite(x) else format(x, spec)


def _summary(rows: list[dict], key: str, names: list[str], what: str) -> list[dict]:
    out = []
    for name in names:
        p99 = [r[key][name]["p99_ratio"] for r in rows]
        good = [r[key][name]["goodput_ratio"] for r in rows]
        out.append(
            {
                "step": name,
                "against": what,
                "rows": len(rows),
                "p99_mean": float(np.mean(p99)),
                "p99_min": float(np.min(p99)),
                "p99_max": float(np.max(p99)),
                "goodput_mean": float(np.mean(good)),
                "goodput_min": float(np.min(good)),
                "goodput_max": float(np.max(good)),
            }
        )
    return out


def report(rows: list[dict]) -> list[dict]:
    """Print (and return) the ratios over ``rows``: every step and comparison run against ``vllm``, every step
    against the one before it."""
    if not rows:
        return []
    extras = sorted({n for r in rows for n in r["vs_vllm"]} - set(STEPS))
    common = [n for n in extras if all(n in r["vs_vllm"] for r in rows)]
    summary = _summary(rows, "vs_vllm", [*STEPS[1:], *common], "vllm")
    summary += _summary(rows, "increments", list(STEPS[1:]), "previous step")
    print(f"\nover {len(rows)} scenario x setup rows (ratios: mean, min..max):")
    for s in summary:
        paper = PAPER_INCREMENTS.get(s["step"]) if s["against"] == "previous step" else None
        print(
            f"  {s['step']:<22} vs {s['against']:<14} p99 x{s['p99_mean']:.2f} "
            f"({s['p99_min']:.2f}..{s['p99_max']:.2f})  goodput x{s['goodput_mean']:.3f} "
            f"({s['goodput_min']:.3f}..{s['goodput_max']:.3f})"
            + (f"   paper: +{paper:.0%}" if paper is not None else "")
        )
    return summary


def markdown(rows: list[dict]) -> str:
    """One markdown table row per scenario x setup x run at the reference load."""
    head = (
        "| setup | scenario | run | deployment (start) | router | P99 E2E s | goodput req/s | att. | switches "
        "| vs vllm: P99 x | goodput x | over previous: P99 x | goodput x |"
    )
    lines = [head, "|" + " --- |" * 5 + " ---: |" * 8]
    for row in rows:
        ref = row["loads"].index(row["reference_load"])
        for name, runs in row["runs"].items():
            r, x, inc = runs[ref], row["vs_vllm"].get(name), row["increments"].get(name)
            by_class = r.get("slo_attainment_by_class")
            att = f"{r['slo_attainment']:.1%}" + (
                " (" + ", ".join(f"{k or 'default'} {v:.0%}" for k, v in by_class.items()) + ")"
                if by_class
                else ""
            )
            lines.append(
                f"| {row['setup']} | {row['scenario']} | {name} | {r['deployment']} | {r['router']} "
                f"| {r['e2e_p99']:.1f} | {r['goodput_rps']:.2f} | {att} | {r['switches']:.0f} "
                f"| {_fmt(x and x['p99_ratio'])} | {_fmt(x and x['goodput_ratio'])} "
                f"| {_fmt(inc and inc['p99_ratio'])} | {_fmt(inc and inc['goodput_ratio'])} |"
            )
    return "\n".join(lines)


def compact(rows: list[dict], blind: str = BLIND_ROUTER) -> str:
    """One markdown row per scenario x setup: P99 E2E and goodput of each step, then each step's P99 and goodput
    ratios over the step before, ``vllm/BLIND``'s over vllm (the router alone) and ``+hetero``'s over
    ``vllm/BLIND`` (the deployment alone, both behind the blind router)."""
    head = (
        "| setup | scenario | vllm P99 s / goodput | +hetero | +routing | +switching (switches) "
        f"| +hetero x (P99 / goodput) | +routing x | +switching x | vllm/{blind} x | +hetero over vllm/{blind} |"
    )
    lines = [head, "| --- | --- |" + " ---: |" * 9]
    for row in rows:
        ref = row["loads"].index(row["reference_load"])
        run = {n: r[ref] for n, r in row["runs"].items()}
        cells = [f"{run[n]['e2e_p99']:.1f} / {run[n]['goodput_rps']:.2f}" for n in STEPS]
        cells[-1] += f" ({run['+switching']['switches']:.0f})"
        incs = [row["increments"][n] for n in STEPS[1:]]
        router = row["vs_vllm"].get(f"vllm/{blind}")
        ratio = [f"{_fmt(x['p99_ratio'])} / {_fmt(x['goodput_ratio'], '.3f')}" for x in [*incs, router] if x]
        same_router = run.get(f"vllm/{blind}")
        if same_router:  # the deployment alone: the plan against vllm's shape, both behind the blind router
            hetero = run["+hetero"]
            ratio.append(
                f"{same_router['e2e_p99'] / hetero['e2e_p99']:.2f} / "
                f"{hetero['goodput_rps'] / max(same_router['goodput_rps'], 1e-9):.3f}"
            )
        lines.append(f"| {row['setup']} | {row['scenario']} | " + " | ".join(cells + ratio) + " |")
    return "\n".join(lines)


def max_loads(rows: list[dict]) -> str:
    """For rows run on a load grid: each step's max sustainable load (the load share where SLO attainment crosses
    90%, ``headline.max_load``) and its ratio over the step before; empty when no row has a grid."""
    grid = [r for r in rows if len(r["loads"]) > 1]
    if not grid:
        return ""
    lines = [
        "| setup | scenario | loads | "
        + " | ".join(f"{n} max load" for n in STEPS)
        + " | "
        + " | ".join(f"{n} x" for n in STEPS[1:])
        + " |",
        "| --- | --- | --- |" + " ---: |" * (2 * len(STEPS) - 1),
    ]
    for row in grid:
        top = {n: max_load(row["loads"], [x["slo_attainment"] for x in row["runs"][n]]) for n in STEPS}
        inc = [_fmt(row["increments"][n]["max_load_ratio"]) for n in STEPS[1:]]
        lines.append(
            f"| {row['setup']} | {row['scenario']} | {','.join(f'{x:g}' for x in row['loads'])} | "
            + " | ".join(f"{top[n]:.2f}" for n in STEPS)
            + " | "
            + " | ".join(inc)
            + " |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--traces", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/traces")
    p.add_argument("--minutes", type=float, default=4.0)
    p.add_argument("--phase", type=float, default=300.0, help="seconds per phase of shifting and day")
    p.add_argument("--scenarios", default="shifting,day,long,two-class")
    p.add_argument("--setups", default=DEFAULT_SETUPS, help="as headline.py --setups")
    p.add_argument("--loads", default="0.9", help="load shares; the reference is the middle one")
    p.add_argument(
        "--blind-routers",
        default=f"{BLIND_ROUTER},round-robin",
        help="type-blind routers for +hetero: the first is the step, the others are compared",
    )
    p.add_argument(
        "--merge",
        default="",
        help="JSON files of earlier runs (comma-separated): print their rows as one markdown table and summary, "
        "write them to --json, run nothing",
    )
    p.add_argument("--json", type=Path, default=Path(__file__).resolve().parent / "results/ablation.json")
    add_load_options(p)
    args = p.parse_args(argv)
    merged = [Path(f) for f in args.merge.split(",") if f]
    if merged:
        rows = [row for f in merged for row in json.loads(f.read_text())["rows"]]
        print(markdown(rows))
        print()
        print(compact(rows))
        print()
        print(max_loads(rows))
        summary = report(rows)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps({"merged": [str(f) for f in merged], "rows": rows, "summary": summary}, indent=2)
        )
        print(f"wrote {args.json}")
        return 0
    setups = setups_of(args.setups)
    scenarios = [s for s in args.scenarios.split(",") if s]
    phased = {"shifting", "day"} & set(scenarios)
    if phased and args.minutes * 60 < 2 * args.phase:
        print(
            f"warning: --minutes {args.minutes:g} is shorter than two --phase {args.phase:g} s phases: "
            f"{', '.join(sorted(phased))} would be a single phase (no shift)",
            file=sys.stderr,
        )
    loads = [float(x) for x in args.loads.split(",")]
    ref = len(loads) // 2
    blind = [r.strip() for r in args.blind_routers.split(",") if r.strip()]
    rows, skipped = [], []
    start_all = time.perf_counter()
    for setup in setups:
        model, cluster = _setup(setup)
        slo = default_slo(model, cluster)
        for scenario in scenarios:
            if scenario in LONG_SCENARIOS and model.max_position_embeddings < LONG_CONTEXT_TOKENS:
                skipped.append({"setup": setup, "scenario": scenario, "why": "context < 32k tokens"})
                print(f"{setup} | {scenario}: skipped (context < {LONG_CONTEXT_TOKENS:,} tokens)", flush=True)
                continue
            started = time.perf_counter()
            per_load: dict[str, list[dict]] = {}
            for load in loads:
                trace = scenario_trace(args, scenario, model, cluster, slo, load)
                for name, r in run_steps(trace, model, cluster, scenario, blind).items():
                    per_load.setdefault(name, []).append({**r, "requests": len(trace)})
            compared = [n for n in per_load if n != "vllm"]
            vs_vllm = {n: ratios(per_load["vllm"], per_load[n], loads, ref) for n in compared}
            increments = {
                b: ratios(per_load[a], per_load[b], loads, ref) for a, b in itertools.pairwise(STEPS)
            }
            if len(loads) == 1:  # no grid: no max sustainable load
                for x in (*vs_vllm.values(), *increments.values()):
                    x["max_load_ratio"] = None
            row = {
                "setup": setup,
                "scenario": scenario,
                "loads": loads,
                "reference_load": loads[ref],
                "runs": per_load,
                "vs_vllm": vs_vllm,
                "increments": increments,
                "wall_seconds": time.perf_counter() - started,
            }
            rows.append(row)
            n_req = per_load["vllm"][ref]["requests"]
            print(f"{setup} | {scenario} | load {loads[ref]:g} ({n_req:,} requests)", flush=True)
            for name, runs in per_load.items():
                r = runs[ref]
                x = vs_vllm.get(name)
                inc = increments.get(name)
                print(
                    f"  {name:<22} {r['deployment']:<46} {r['router']:<19} goodput {r['goodput_rps']:7.2f}  "
                    f"att. {r['slo_attainment']:6.1%}  p99 {r['e2e_p99']:7.1f} s  switches {r['switches']:.0f}"
                    + (
                        f"  | vs vllm: p99 x{_fmt(x['p99_ratio'])} goodput x{_fmt(x['goodput_ratio'])}"
                        f" max-load x{_fmt(x['max_load_ratio'])}"
                        if x
                        else ""
                    )
                    + (
                        f"  | over previous: p99 x{_fmt(inc['p99_ratio'])} goodput x{_fmt(inc['goodput_ratio'])}"
                        if inc
                        else ""
                    ),
                    flush=True,
                )
    summary = report(rows)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps(
            {
                "minutes": args.minutes,
                "phase_s": args.phase,
                "merged": [str(f) for f in merged],
                "blind_routers": blind,
                "rows": rows,
                "skipped": skipped,
                "summary": summary,
                "paper_increments": PAPER_INCREMENTS,
                "load_reference": args.load_reference,
                "knees": [asdict(k) for k in knees_found()],
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
