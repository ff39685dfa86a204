"""What other ranking rules would have started oserve from, on the rows ``start_candidates.py`` recorded: each
row's ``oserve start`` candidates re-ranked by ``verify.best_index`` under other ties and tail guards, and the
winner's P99 E2E and goodput against ``static``'s run of the same row.

    python benchmarks/start_candidates.py --setup S --scenario X --load 0.9 --baselines static --json row.json
    python benchmarks/ranking_rules.py row1.json,row2.json,... [--json benchmarks/results/ranking_rules.json]

In sample by construction: oserve's start is ranked on the trace it is then scored on (as ``static`` is chosen
with hindsight), and no row switched, so a candidate's recorded figures are what oserve would have measured with
it. A decision aid for the rule, not a tuning run: the default row must reproduce the recorded choices.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import numpy as np

from oserve.planner.verify import TAIL_GAIN, TAIL_TIE, TIE, best_index

TIES = (TIE, 0.01, 0.02)
TAIL_TIES = (TAIL_TIE, 0.05)
TAIL_GAINS = (TAIL_GAIN, 0.05)
FLOOR = 0.98


def _row(path: Path) -> dict:
    data = json.loads(path.read_text())
    starts = [r for r in data["rankings"] if r["where"] == "oserve start"]
    if not starts or "static" not in data["policies"]:
        raise SystemExit(f"{path}: no 'oserve start' ranking or no static run (start_candidates.py --json)")
    args = data["args"]
    return {
        "row": f"{args['setup']} {args['scenario']}",
        "candidates": starts[-1]["candidates"],
        "chosen": starts[-1]["chosen"],
        "static": data["policies"]["static"],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("files", help="comma-separated start_candidates.py JSON files")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    rows = [_row(Path(f)) for f in args.files.split(",") if f]
    out = []
    for tie, tail_tie, tail_gain in itertools.product(TIES, TAIL_TIES, TAIL_GAINS):
        p99, goodput, picks = [], [], []
        for r in rows:
            scores = [tuple(c[1:3]) if np.isnan(c[3]) else tuple(c[1:4]) for c in r["candidates"]]
            i = best_index(scores, tie=tie, tail_tie=tail_tie, tail_gain=tail_gain)
            picks.append(i)
            g, q = scores[i][0], scores[i][1]
            p99.append(r["static"]["e2e_p99"] / q if q > 0 else float("inf"))
            goodput.append(g / r["static"]["goodput_rps"] if r["static"]["goodput_rps"] else float("inf"))
        below = [r["row"] for r, a, b in zip(rows, p99, goodput, strict=True) if min(a, b) < FLOOR]
        default = (tie, tail_tie, tail_gain) == (TIE, TAIL_TIE, TAIL_GAIN)
        if default and picks != [r["chosen"] for r in rows]:
            raise SystemExit("the default rule does not reproduce the recorded starts: not the same code")
        item = {
            "tie": tie,
            "tail_tie": tail_tie,
            "tail_gain": tail_gain,
            "default": default,
            "p99_vs_static_mean": float(np.mean(p99)),
            "p99_vs_static_worst": float(min(p99)),
            "goodput_vs_static_mean": float(np.mean(goodput)),
            "goodput_vs_static_worst": float(min(goodput)),
            "rows_below_floor": below,
            "changed_rows": [r["row"] for r, i in zip(rows, picks, strict=True) if i != r["chosen"]],
        }
        out.append(item)
        print(
            f"tie {tie:5.1%} tail tie {tail_tie:4.0%} tail gain {tail_gain:4.0%}{' (default)' if default else ''}: "
            f"P99 x{item['p99_vs_static_mean']:.3f} mean (worst x{item['p99_vs_static_worst']:.3f}), goodput "
            f"x{item['goodput_vs_static_mean']:.4f} (worst x{item['goodput_vs_static_worst']:.4f}); below "
            f"x{FLOOR}: {', '.join(below) or 'none'}; changed: {len(item['changed_rows'])} of {len(rows)}",
            flush=True,
        )
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"files": args.files.split(","), "rules": out}, indent=2))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
