"""Every ranking a headline row makes, with its candidates: the ``static`` baseline's homogeneous shapes, the plan
check's (``oserve-static``), the isolation search's and ``oserve``'s start among its seeds, each as ``(label, goodput req/s, p99 E2E s, mean E2E s)`` and the winner;
then the policies' figures as ``headline.py`` prints them.

    python benchmarks/start_candidates.py --setup llama-3.1-8b@1x8xH100 --scenario swing --load 0.9 \
        [--minutes 20 --phase 300] [--offset 30 --seed 1] [--baselines static,vllm] [--json out.json]

Use it to see why a start won (issue 20: a P/D pool won 8B swing on a goodput edge with a worse p99).
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import oserve.adapt.policy as adapt_policy
import oserve.planner.isolate as isolate
import oserve.planner.search as search
import oserve.planner.verify as verify
from headline import _setup, ratios, run_policies, scenario_trace
from oserve.planner import default_slo


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--traces", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/traces")
    p.add_argument("--setup", required=True)
    p.add_argument("--scenario", required=True)
    p.add_argument("--load", type=float, default=0.9)
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--phase", type=float, default=300.0)
    p.add_argument(
        "--offset", type=float, default=0.0, help="minutes into the Azure hours (a held-out window)"
    )
    p.add_argument("--seed", type=int, default=0, help="the rate scaling's resampling seed")
    p.add_argument("--baselines", default="static,vllm")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    model, cluster = _setup(args.setup)
    slo = default_slo(model, cluster)
    trace = scenario_trace(args, args.scenario, model, cluster, slo, args.load, seed=args.seed)
    rankings: list[dict] = []
    rank = verify.best_index

    def recording(where: str):
        def best_index(scores, *a, **k):
            i = rank(scores, *a, **k)
            caller = inspect.currentframe().f_back.f_locals  # the ranking's candidates, for their labels
            if "tried" in caller:
                labels = [f"{t.label} ({t.router})" for t in caller["tried"]]
            elif "summaries" in caller:  # the static baseline's homogeneous shapes
                labels = [f"{c.deployment.describe()} ({caller['router']})" for c in caller["scored"]]
            else:
                labels = [f"{s[0]}: {s[1].describe()} ({s[2]})" for s in caller["scored"]]
            rows = [
                [label, float(s[0]), float(s[1]), float(s[2]) if len(s) > 2 else float("nan")]
                for label, s in zip(labels, scores, strict=True)
            ]
            rankings.append({"where": where, "candidates": rows, "chosen": i})
            return i

        return best_index

    # the four call sites
    search.best_index = recording("static")
    verify.best_index = recording("plan check")
    isolate.best_index = recording("isolation")
    adapt_policy.best_index = recording("oserve start")
    names = [*[b for b in args.baselines.split(",") if b], "oserve"]
    out = run_policies(names, trace, model, cluster, args.scenario)
    print(f"{args.setup} | {args.scenario} | load {args.load:g} ({len(trace):,} requests)")
    for r in rankings:
        print(f"  {r['where']}: chose #{r['chosen']}")
        for i, (label, g, q, m) in enumerate(r["candidates"]):
            mark = "*" if i == r["chosen"] else " "
            print(f"   {mark} goodput {g:8.3f} req/s  p99 E2E {q:8.2f} s  mean {m:6.2f} s  {label}")
    for name, row in out.items():
        print(
            f"  {name:<8} {row['deployment']:<50} goodput {row['goodput_rps']:7.2f}  "
            f"att. {row['slo_attainment']:6.1%}  p99 {row['e2e_p99']:6.2f} s  switches {row['switches']:.0f}"
        )
    vs = {b: ratios([out[b]], [out["oserve"]], [args.load], 0) for b in names if b != "oserve"}
    for b, x in vs.items():
        print(f"  oserve vs {b}: p99 x{x['p99_ratio']:.3f} goodput x{x['goodput_ratio']:.3f}")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {"args": vars(args), "rankings": rankings, "policies": out, "ratios": vs},
                indent=2,
                default=str,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
