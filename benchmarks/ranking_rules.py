"""What other ranking rules would have started oserve from, on the rows ``start_candidates.py`` recorded: each
row's ``static`` shapes and ``oserve start`` candidates re-ranked by ``verify.best_index`` under other ties and
tail guards (the same rule for both, as the code ranks both), and oserve's pick against static's.

    python benchmarks/start_candidates.py --setup S --scenario X --load 0.9 --baselines static [--offset 30 --seed 1] --json row.json
    python benchmarks/ranking_rules.py row1.json,row2.json,... [--json benchmarks/results/ranking_rules.json]

No row switched in the recorded runs, so a candidate's recorded figures are what oserve would have measured with
it. The plan check's and isolation search's rankings keep the default (they only make candidates). Files recorded
before the static ranking was (no ``static`` entry) keep static's recorded run under every rule.

The rule to adopt is chosen by ``choose``, fixed before the held-out rows were run (docs/adapt.md, "The ranking
rule, chosen on held-out windows"): record the rows on windows the headline does not score (``--offset 30 --seed
1``), then score the choice on the headline's own windows. It picked the 2% tie (``verify.START_TIE``) on rows
recorded under the 0.5% one (``--recorded-tie 0.005``); "default" below is the rule the rows were recorded under.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import numpy as np

from oserve.planner.verify import START_TIE, TAIL_GAIN, TAIL_TIE, TIE, best_index

TIES = (TIE, 0.01, START_TIE)
TAIL_TIES = (TAIL_TIE, 0.05)
TAIL_GAINS = (TAIL_GAIN, 0.05)
FLOOR = 0.98
GOODPUT_COST = 0.003  # ``choose``: a rule may cost at most 0.3% of oserve's mean goodput
ROW_GOODPUT_FLOOR = 0.98  # ... and at most 2% on any row
P99_GAIN = 1.02  # ... and replaces the default only for fewer rows below the floor or a P99 2% better


def _scores(candidates: list[list]) -> list[tuple[float, ...]]:
    return [tuple(c[1:3]) if np.isnan(c[3]) else tuple(c[1:4]) for c in candidates]


def _row(path: Path) -> dict:
    data = json.loads(path.read_text())
    starts = [r for r in data["rankings"] if r["where"] == "oserve start"]
    if not starts or "static" not in data["policies"]:
        raise SystemExit(f"{path}: no 'oserve start' ranking or no static run (start_candidates.py --json)")
    statics = [r for r in data["rankings"] if r["where"] == "static"]
    args = data["args"]
    row = {
        "row": f"{args['setup']} {args['scenario']}",
        "candidates": starts[-1]["candidates"],
        "chosen": starts[-1]["chosen"],
        "static": data["policies"]["static"],
        "static_ranking": statics[0] if statics else None,
    }
    seed = [i for i, c in enumerate(row["candidates"]) if c[0].startswith("static:")]
    row["static_seed"] = seed[0] if seed else None
    if statics:
        won = statics[0]["candidates"][statics[0]["chosen"]]
        if abs(won[1] - row["static"]["goodput_rps"]) > 1e-6 * max(1.0, won[1]):
            raise SystemExit(f"{path}: the recorded static ranking's winner is not the static run")
    return row


def rerank(row: dict, rule: tuple[float, float, float]) -> tuple[tuple[float, ...], tuple[float, ...], int]:
    """(oserve's pick, static's pick, oserve's index) under ``rule`` = (tie, tail tie, tail gain)."""
    tie, tail_tie, tail_gain = rule
    scores = _scores(row["candidates"])
    static = (
        row["static"]["goodput_rps"],
        row["static"]["e2e_p99"],
        row["static"].get("e2e_mean", float("nan")),
    )
    if row["static_ranking"] is not None:
        shapes = _scores(row["static_ranking"]["candidates"])
        static = shapes[best_index(shapes, tie=tie, tail_tie=tail_tie, tail_gain=tail_gain)]
        if row["static_seed"] is not None:  # oserve's start weighs static's pick among its seeds
            scores[row["static_seed"]] = static
    i = best_index(scores, tie=tie, tail_tie=tail_tie, tail_gain=tail_gain)
    return scores[i], static, i


def evaluate(
    rows: list[dict], rule: tuple[float, float, float], default: list, recorded: tuple[float, float, float]
) -> dict:
    """Rule ``rule``'s figures over ``rows``; ``default``: oserve's picks under the ``recorded`` rule."""
    p99, goodput, own_g, own_q, below, changed = [], [], [], [], [], []
    for r, base in zip(rows, default, strict=True):
        pick, static, i = rerank(r, rule)
        p99.append(static[1] / pick[1] if pick[1] > 0 else float("inf"))
        goodput.append(pick[0] / static[0] if static[0] else float("inf"))
        own_g.append(pick[0] / base[0] if base[0] else 1.0)
        own_q.append(base[1] / pick[1] if pick[1] > 0 else 1.0)
        if min(p99[-1], goodput[-1]) < FLOOR:
            below.append(r["row"])
        if i != r["chosen"]:
            changed.append(r["row"])
    return {
        "tie": rule[0],
        "tail_tie": rule[1],
        "tail_gain": rule[2],
        "default": rule == recorded,
        "current": rule == (START_TIE, TAIL_TIE, TAIL_GAIN),
        "p99_vs_static_mean": float(np.mean(p99)),
        "p99_vs_static_worst": float(min(p99)),
        "goodput_vs_static_mean": float(np.mean(goodput)),
        "goodput_vs_static_worst": float(min(goodput)),
        "goodput_vs_default_mean": float(np.mean(own_g)),
        "goodput_vs_default_worst": float(min(own_g)),
        "p99_vs_default_geomean": float(np.exp(np.mean(np.log(own_q)))),
        "rows_below_floor": below,
        "changed_rows": changed,
    }


def choose(items: list[dict]) -> dict:
    """The rule to adopt: among rules costing at most ``GOODPUT_COST`` of oserve's mean goodput and
    ``1 - ROW_GOODPUT_FLOOR`` on any row (against the default rule), the fewest rows below ``FLOOR`` of static,
    then the best P99 (geometric mean against the default's); it replaces the default only with fewer rows below
    the floor or a P99 at least ``P99_GAIN`` better. Fixed before the held-out rows were run."""
    default = next(x for x in items if x["default"])
    ok = [
        x
        for x in items
        if x["goodput_vs_default_mean"] >= 1 - GOODPUT_COST
        and x["goodput_vs_default_worst"] >= ROW_GOODPUT_FLOOR
    ]
    best = min(ok, key=lambda x: (len(x["rows_below_floor"]), -x["p99_vs_default_geomean"]))
    fewer = len(best["rows_below_floor"]) < len(default["rows_below_floor"])
    better = len(best["rows_below_floor"]) == len(default["rows_below_floor"]) and (
        best["p99_vs_default_geomean"] >= P99_GAIN
    )
    return best if fewer or better else default


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("files", help="comma-separated start_candidates.py JSON files")
    p.add_argument(
        "--recorded-tie",
        type=float,
        default=START_TIE,
        help=f"the start's and static's goodput tie the rows were recorded under (records before 2026-12-03: {TIE})",
    )
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    rows = [_row(Path(f)) for f in args.files.split(",") if f]
    default_rule = (args.recorded_tie, TAIL_TIE, TAIL_GAIN)
    if [rerank(r, default_rule)[2] for r in rows] != [r["chosen"] for r in rows]:
        raise SystemExit(
            "the recorded rule does not reproduce the recorded starts: not the same code (--recorded-tie?)"
        )
    for r in rows:
        if r["static_ranking"] is not None:
            shapes = _scores(r["static_ranking"]["candidates"])
            if best_index(shapes, *default_rule) != r["static_ranking"]["chosen"]:
                raise SystemExit(
                    f"{r['row']}: the recorded rule does not reproduce static's pick (--recorded-tie?)"
                )
    default = [rerank(r, default_rule)[0] for r in rows]
    out = [
        evaluate(rows, rule, default, default_rule) for rule in itertools.product(TIES, TAIL_TIES, TAIL_GAINS)
    ]
    for item in out:
        print(
            f"tie {item['tie']:5.1%} tail tie {item['tail_tie']:4.0%} tail gain {item['tail_gain']:4.0%}"
            f"{' (recorded)' if item['default'] else ''}{' (current)' if item['current'] else ''}: vs static P99 x{item['p99_vs_static_mean']:.3f} mean "
            f"(worst x{item['p99_vs_static_worst']:.3f}), goodput x{item['goodput_vs_static_mean']:.4f} (worst "
            f"x{item['goodput_vs_static_worst']:.4f}); vs the default goodput x{item['goodput_vs_default_mean']:.4f} "
            f"(worst x{item['goodput_vs_default_worst']:.4f}), P99 x{item['p99_vs_default_geomean']:.3f}; below "
            f"x{FLOOR}: {', '.join(item['rows_below_floor']) or 'none'}; changed: {len(item['changed_rows'])} of "
            f"{len(rows)}",
            flush=True,
        )
    pick = choose(out)
    print(
        f"chosen (choose): tie {pick['tie']:.1%}, tail tie {pick['tail_tie']:.0%}, tail gain {pick['tail_gain']:.0%}"
        f"{' (the recorded rule)' if pick['default'] else ''}"
    )
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps({"files": args.files.split(","), "rules": out, "chosen": pick}, indent=2)
        )
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
