"""The headline's table, summary and aims, from its rows (one run's, or several runs' JSON merged).

    python benchmarks/headline.py --merge benchmarks/results/hl-a.json,benchmarks/results/hl-b.json [--json out.json]

``table`` prints one markdown line per row x policy (the reference load's figures, oserve's ratios over each
baseline); ``summary`` the mean, best and worst of each ratio over the rows, per baseline; ``aims`` checks them
against issue 20's aims: P99 E2E at the reference load >= 1.5x on average and >= 2x at best against ``vllm``,
``vllm-reload``, ``llumnix`` and ``dynamo``; >= 1.2x against ``static`` on the long-context and two-class
scenarios; never below 0.98x of ``static`` (P99, goodput or max load) on any row.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from start_bound import bound_lines, bound_summary

__all__ = [
    "ATTAINMENT",
    "aims",
    "knee_lines",
    "load_knees",
    "load_rows",
    "max_load",
    "other_adaptive",
    "report",
    "summary",
    "table",
]

METRICS = ("p99_ratio", "goodput_ratio", "max_load_ratio")
OPERATORS = ("vllm", "vllm-reload", "llumnix", "dynamo")  # what operators run: the >= 1.5x / 2x aim
STATIC_AIM_SCENARIOS = ("long", "two-class")  # the >= 1.2x aim against static
FLOOR = 0.98
ATTAINMENT = 0.9  # the max sustainable load: where SLO attainment crosses this


def max_load(loads: list[float], attainment: list[float]) -> float:
    """The load where attainment crosses ``ATTAINMENT`` (linear between grid points); the grid's ends otherwise."""
    if attainment[0] < ATTAINMENT:
        return loads[0] * attainment[0] / ATTAINMENT
    for (l0, a0), (l1, a1) in itertools.pairwise(zip(loads, attainment, strict=True)):
        if a1 < ATTAINMENT <= a0:
            return l0 + (l1 - l0) * (a0 - ATTAINMENT) / (a0 - a1)
    return loads[-1]


def load_rows(paths: Sequence[Path]) -> list[dict]:
    """Every row of every headline JSON in ``paths``; a row (setup, scenario) given twice keeps the later."""
    rows: dict[tuple[str, str], dict] = {}
    for path in paths:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise SystemExit(f"{path}: not a headline JSON file ({exc})") from None
        if not isinstance(data, dict) or not isinstance(data.get("rows"), list):
            raise SystemExit(f"{path}: not a headline JSON file (no 'rows' list)")
        for row in data["rows"]:
            rows[(row["setup"], row["scenario"])] = row
    return list(rows.values())


def load_knees(paths: Sequence[Path]) -> list[dict]:
    """The load references (``knees``) of every headline JSON in ``paths``, each (model, cluster, source, span)
    once; files from before knees were kept give none."""
    knees: dict[tuple, dict] = {}
    for path in paths:
        for k in json.loads(Path(path).read_text()).get("knees", []):
            knees[(k.get("model", ""), k.get("cluster", ""), k["trace"], k.get("span_s", 0.0))] = k
    return list(knees.values())


def knee_lines(knees: Sequence[dict]) -> list[str]:
    """Load 1.0 by each reference per source, as markdown: the planner's factor, the simulated knee's, their ratio
    and static's deployment at the knee."""
    out = [
        "| model | cluster | source | minutes | planned x | simulated x | simulated / planned | static at the knee |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for k in sorted(
        knees, key=lambda k: (k.get("model", ""), k.get("cluster", ""), k["trace"], k.get("span_s", 0))
    ):
        out.append(
            f"| {k.get('model', '?')} | {k.get('cluster', '?')} | {k['trace']} | {k.get('span_s', 0) / 60:.0f} | "
            f"{k['planned']:.3g} | {k['simulated']:.3g} | x{k['simulated'] / k['planned']:.2f} | {k['deployment']} |"
        )
    return out


def _ref(row: dict, name: str) -> dict:
    return row[name][row["loads"].index(row["reference_load"])]


def _policies(row: dict, adaptive: str) -> list[str]:
    return [*row["ratios"][adaptive], adaptive]


def table(rows: Sequence[dict], adaptive: str = "oserve") -> list[str]:
    """Markdown lines: per row and policy the deployment, P99 E2E, goodput, attainment, max load (SLO attainment
    crossing 90% on the load grid), GPU-hours and switches per load, and oserve's ratios over that policy."""
    head = (
        "| setup | scenario | policy | deployment (at the reference load) | P99 E2E s | oserve P99 x | goodput req/s"
        " | oserve goodput x | att. | max load | oserve max-load x | GPU-h | switches per load |"
    )
    lines = [head, "|" + " --- |" * 13]
    for row in rows:
        for name in _policies(row, adaptive):
            r = _ref(row, name)
            x = row["ratios"][adaptive].get(name)
            att = [p["slo_attainment"] for p in row[name]]
            switches = "/".join(f"{p['switches']:.0f}" for p in row[name])

            def ratio(key: str, x: dict | None = x) -> str:
                return "—" if x is None else f"{x[key]:.2f}"

            lines.append(
                f"| {row['setup']} | {row['scenario']} | {name} | {r['deployment']} | {r['e2e_p99']:.1f} | "
                f"{ratio('p99_ratio')} | {r['goodput_rps']:.2f} | {ratio('goodput_ratio')} | "
                f"{r['slo_attainment']:.1%} | {max_load(row['loads'], att):.2f} | {ratio('max_load_ratio')} | "
                f"{r['gpu_hours']:.2f} | {switches} |"
            )
    return lines


def summary(rows: Sequence[dict], adaptive: str = "oserve") -> dict[str, dict]:
    """Per baseline: rows, and for each ratio its mean, best and worst (with the rows where they fall)."""
    out: dict[str, dict] = {}
    baselines = list(dict.fromkeys(b for row in rows for b in row["ratios"][adaptive]))
    for b in baselines:
        have = [row for row in rows if b in row["ratios"][adaptive]]
        item: dict = {"rows": len(have)}
        for m in METRICS:
            values = [row["ratios"][adaptive][b][m] for row in have]
            where = [f"{row['setup']} {row['scenario']}" for row in have]
            item[m] = {
                "mean": float(np.mean(values)),
                "best": float(max(values)),
                "best_row": where[int(np.argmax(values))],
                "worst": float(min(values)),
                "worst_row": where[int(np.argmin(values))],
            }
        out[b] = item
    return out


def summary_lines(s: dict[str, dict], adaptive: str = "oserve") -> list[str]:
    lines = [
        f"| {adaptive} vs | rows | P99 x mean | best | worst | goodput x mean | best | worst | max-load x mean | "
        "best | worst |",
        "|" + " --- |" * 11,
    ]
    for b, item in s.items():
        cells = [f"{item[m][k]:.2f}" for m in METRICS for k in ("mean", "best", "worst")]
        lines.append(f"| {b} | {item['rows']} | " + " | ".join(cells) + " |")
    return lines


def aims(rows: Sequence[dict], adaptive: str = "oserve") -> list[dict]:
    """Issue 20's aims, each with what was measured and whether it is met."""
    s = summary(rows, adaptive)
    out = []
    for b in OPERATORS:
        if b not in s:
            continue
        p = s[b]["p99_ratio"]
        out.append(
            {
                "aim": f">= 1.5x mean and >= 2x best P99 against {b}",
                "measured": f"mean {p['mean']:.2f}, best {p['best']:.2f} ({p['best_row']})",
                "met": p["mean"] >= 1.5 and p["best"] >= 2.0,
            }
        )
    scoped = [r for r in rows if r["scenario"] in STATIC_AIM_SCENARIOS and "static" in r["ratios"][adaptive]]
    if scoped:
        got = [
            (f"{r['setup']} {r['scenario']}", r["ratios"][adaptive]["static"]["p99_ratio"]) for r in scoped
        ]
        out.append(
            {
                "aim": ">= 1.2x P99 against static on " + " and ".join(STATIC_AIM_SCENARIOS),
                "measured": ", ".join(f"{w} {v:.2f}" for w, v in got),
                "met": all(v >= 1.2 for _, v in got),
            }
        )
    if "static" in s:
        below = [
            f"{r['setup']} {r['scenario']} {m} {r['ratios'][adaptive]['static'][m]:.3f}"
            for r in rows
            if "static" in r["ratios"][adaptive]
            for m in METRICS
            if r["ratios"][adaptive]["static"][m] < FLOOR
        ]
        out.append(
            {
                "aim": f"never below {FLOOR}x of static (P99, goodput, max load)",
                "measured": "; ".join(below) or f"worst {min(s['static'][m]['worst'] for m in METRICS):.3f}",
                "met": not below,
            }
        )
    return out


def other_adaptive(rows: Sequence[dict], names: Sequence[str] = ("oserve-p99", "oserve-oracle")) -> dict:
    """For each of ``names`` the rows ran beside ``oserve``: print its summary and aims (the table stays
    oserve's); returns them keyed ``"<name>_summary"`` / ``"<name>_aims"`` for the JSON."""
    out: dict = {}
    for name in names:
        have = [r for r in rows if name in r["ratios"]]
        if not have:
            continue
        s = summary(have, name)
        print(f"\n{name} ({len(have)} rows):")
        print("\n".join(summary_lines(s, name)))
        checked = aims(have, name)
        for a in checked:
            print(f"{'met    ' if a['met'] else 'NOT MET'}  {a['aim']}: {a['measured']}")
        out[f"{name}_summary"], out[f"{name}_aims"] = s, checked
    return out


def report(rows: Sequence[dict], adaptive: str = "oserve") -> dict:
    """Print the table, the summary and the aims; returns the summary and aims for the JSON."""
    for line in table(rows, adaptive):
        print(line)
    print()
    s = summary(rows, adaptive)
    for line in summary_lines(s, adaptive):
        print(line)
    print()
    checked = aims(rows, adaptive)
    for a in checked:
        print(f"{'met    ' if a['met'] else 'NOT MET'}  {a['aim']}: {a['measured']}")
    bounds = bound_lines(rows, adaptive)
    if bounds:
        print("\nWhat any start candidate could buy (benchmarks/start_bound.py):")
        print("\n".join(bounds))
    return {"summary": s, "aims": checked, "bounds": bound_summary(rows, adaptive)}
