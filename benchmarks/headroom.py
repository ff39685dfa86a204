"""What switching could buy on a phased scenario, switches free: the bound the headline's ``--headroom`` reports.

Every candidate deployment is simulated on the whole phased trace (``adapt.scenarios.PHASES``: ``shifting``,
``day``, ``swing``; this picks ``static`` and the best single candidate) and on each phase kind's requests alone
(the phase's score: a deployment switched in at every phase change, free, meets only its kind's traffic): every homogeneous shape (routed by its plan weights, as ``static``
is) and OServe's own plan for each phase kind's traffic and for the whole trace (``adapt.policy.initial_plan``,
as the adaptive controller's start is planned, routed by the controller's router). Per kind, the best candidate
(goodput within the 2% ``START_TIE``, then p99 E2E) against ``static`` (the best homogeneous shape on the whole trace) and
against the best single candidate (what a start without switching gets), both on the same phase-alone runs.
"""

from __future__ import annotations

import numpy as np

from oserve.adapt.core import ROUTER
from oserve.adapt.decide import DecisionConfig
from oserve.adapt.policy import initial_plan
from oserve.adapt.scenarios import PHASES
from oserve.errors import InfeasibleError
from oserve.planner.baselines import homogeneous_candidates
from oserve.planner.verify import START_TIE, best_index
from oserve.sim import simulate
from oserve.sim.metrics import summarize
from oserve.trace import TypeGrid

__all__ = ["phase_headroom"]

_KEYS = ("goodput_rps", "e2e_p99", "e2e_mean", "slo_attainment")


def _keys(summary: dict) -> dict:
    return {key: float(summary[key]) for key in _KEYS}


def _best(rows: list[dict], name: str) -> dict:
    """The best row on ``name`` as the headline's ``static`` and oserve's start are ranked (``verify.best_index``
    with ``START_TIE``: goodput within 2%, then p99 E2E, and its tail guard)."""
    scores = [(r[name]["goodput_rps"], r[name]["e2e_p99"], r[name]["e2e_mean"]) for r in rows]
    return rows[best_index(scores, tie=START_TIE)]


def phase_headroom(trace, model, cluster, slo, phase_s: float, scenario: str = "shifting") -> dict:
    """The per-phase bound on switching for ``trace`` (scenario ``scenario`` built with ``phase_s``): per phase
    kind the best candidate and its goodput, p99 and mean E2E ratios to ``static`` and to the best single
    candidate; ``bound``: every phase on its best candidate, goodput, mean E2E and P99 E2E (``p99_vs_*``, over every phase's
    completed requests) over all the phases' requests (and ``max_goodput_*``: every phase on its highest-goodput
    candidate, the ceiling without the ranking's tie)."""
    kinds = PHASES[scenario]
    kind = (trace.arrival_s // phase_s).astype(np.int64) % len(kinds)
    phases = (trace.arrival_s // phase_s).astype(np.int64)
    span = {name: phase_s * len(np.unique(phases[kind == k])) for k, name in enumerate(kinds)}
    targets = slo.to_dict()
    parts = {name: trace.take(np.flatnonzero(kind == k)) for k, name in enumerate(kinds)}
    grid = TypeGrid.for_types(trace, 6)
    candidates = [
        (c.deployment.describe(), c.deployment, "weighted", None, True)
        for c in homogeneous_candidates(model, cluster)
    ]
    config = DecisionConfig()
    for label, part in [*((f"plan:{n}", parts[n]) for n in kinds), ("plan:whole", trace)]:
        try:
            dep = initial_plan(part, grid, model, cluster, slo, config, prior=part).deployment
        except InfeasibleError:
            continue
        candidates.append((f"{label} {dep.describe()}", dep, ROUTER, grid, False))
    rows = []
    e2e: dict[tuple[int, str], np.ndarray] = {}  # (id of its row, phase kind) -> its completed requests' E2E
    for shape, dep, router, typed, homogeneous in candidates:
        runs = {
            name: simulate(t, dep, model, cluster, router=router, grid=typed, slo=targets)
            for name, t in (("whole", trace), *parts.items())
        }
        row = {"shape": shape, "homogeneous": homogeneous, "whole": _keys(runs.pop("whole").summary)}
        for name, res in runs.items():  # the phase kind's requests alone: switched to at every change, free
            row[name] = _keys(summarize(res.records, span[name], slo=targets))
            e2e[id(row), name] = _completed_e2e(res.records)
        rows.append(row)
    static = _best([r for r in rows if r["homogeneous"]], "whole")
    single = _best(rows, "whole")
    out: dict = {
        "scenario": scenario,
        "static": static["shape"],
        "single": single["shape"],
        "candidates": rows,
    }

    def ratios(best: dict, base: dict, name: str) -> dict:
        b, o = base[name], best[name]
        return {
            "goodput": o["goodput_rps"] / max(b["goodput_rps"], 1e-9),
            "p99": b["e2e_p99"] / max(o["e2e_p99"], 1e-9),
            "mean": b["e2e_mean"] / max(o["e2e_mean"], 1e-9),
        }

    met = {"static": 0.0, "single": 0.0, "bound": 0.0, "max": 0.0}
    tails: dict[str, list[np.ndarray]] = {"static": [], "single": [], "bound": []}  # E2E over all phases
    waited = {"static": 0.0, "single": 0.0, "bound": 0.0}  # E2E summed over the requests (mean x count)
    for name in kinds:
        best = _best(rows, name)
        out[name] = {
            "best": best["shape"],
            "vs_static": ratios(best, static, name),
            "vs_single": ratios(best, single, name),
        }
        met["bound"] += best[name]["goodput_rps"] * span[name]
        met["max"] += max(r[name]["goodput_rps"] for r in rows) * span[name]  # no tie: goodput's own ceiling
        met["static"] += static[name]["goodput_rps"] * span[name]
        met["single"] += single[name]["goodput_rps"] * span[name]
        for key, row in (("bound", best), ("static", static), ("single", single)):
            waited[key] += row[name]["e2e_mean"] * len(parts[name])
            tails[key].append(e2e[id(row), name])
    out["bound"] = {
        "goodput_vs_static": met["bound"] / max(met["static"], 1e-9),
        "goodput_vs_single": met["bound"] / max(met["single"], 1e-9),
        "max_goodput_vs_static": met["max"] / max(met["static"], 1e-9),
        "max_goodput_vs_single": met["max"] / max(met["single"], 1e-9),
        "mean_vs_static": waited["static"] / max(waited["bound"], 1e-9),
        "mean_vs_single": waited["single"] / max(waited["bound"], 1e-9),
    }
    # P99 E2E over every phase's requests, each phase on its candidate (the headline's P99, switched for free)
    p99 = {key: _p99(np.concatenate(parts)) for key, parts in tails.items()}
    out["bound"]["p99_s"] = p99
    out["bound"]["p99_vs_static"] = p99["static"] / max(p99["bound"], 1e-9)
    out["bound"]["p99_vs_single"] = p99["single"] / max(p99["bound"], 1e-9)
    return out


def _completed_e2e(records) -> np.ndarray:
    """E2E of the requests that completed (the P99s everywhere are over these, as ``sim.metrics``'s)."""
    done = records["finish_s"].notna().to_numpy() & ~records["dropped"].to_numpy().astype(bool)
    if "rejected" in records:
        done &= ~records["rejected"].to_numpy().astype(bool)
    return (records["finish_s"] - records["arrival_s"]).to_numpy()[done]


def _p99(values: np.ndarray) -> float:
    return float(np.percentile(values, 99)) if len(values) else float("nan")
