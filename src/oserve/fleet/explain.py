"""Why a fleet plan falls short: each shortfall named by region, hour and the constraint that binds it.

The MILP keeps shortfall columns, so an infeasible window still solves; a positive shortfall is then traced to
its cause: every GPU pool the load could reach (its region's, and those within the IW routing latency) full that
hour -> ``pool``; the hour within the scale-out lead time of now, so added instances cannot serve in time ->
``lead_time``; for NIW, the pools full through the hours before the deadline -> ``niw_deadline``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from oserve.fleet.ilp import FleetPlan, FleetProblem

__all__ = ["Shortfall", "explain", "hour_label"]


@dataclass(frozen=True, slots=True)
class Shortfall:
    tier: str  # "iw" | "niw"
    region: str  # the origin region ("" for NIW, which may run anywhere)
    model: str
    hour: int  # index in the planning window
    amount: float  # req/s (IW) or requests (NIW)
    constraint: str  # "pool" | "lead_time" | "niw_deadline" | "capacity"
    message: str


def hour_label(absolute_hour: int) -> str:
    return f"day {absolute_hour // 24} {absolute_hour % 24:02d}:00 UTC"


def _full_pools(p: FleetProblem, plan: FleetPlan, region: int, model: int, hour: int) -> list[str]:
    """Pools of ``region`` that could host ``model`` and have no room for one more of its instances at ``hour``."""
    tab = p.table
    out = []
    for g, name in enumerate(tab.gpu_names):
        sizes = [tab.configs[j].gpus for j in tab.of_model(model) if tab.gpu_index[j] == g]
        total = p.pools_od[region, g] + p.pools_spot[region, g]
        if not sizes or total <= 0:
            continue
        used = plan.gpus_od[region, g, hour] + plan.gpus_spot[region, g, hour]
        if used > total - min(sizes) + 1e-6:
            out.append(f"{name} ({int(total)} GPUs)")
    return out


def _hostable(p: FleetProblem, region: int, model: int) -> bool:
    tab = p.table
    return any(
        p.pools_od[region, tab.gpu_index[j]] + p.pools_spot[region, tab.gpu_index[j]] >= tab.configs[j].gpus
        for j in tab.of_model(model)
    )


def explain(p: FleetProblem, plan: FleetPlan, *, limit: int = 5) -> list[Shortfall]:
    """The plan's shortfalls, largest first within each tier (IW before NIW), as sentences."""
    regions = p.region_names or tuple(f"region{r}" for r in range(p.shape[0]))
    models = p.model_names or tuple(f"model{m}" for m in range(p.iw_rps.shape[1]))
    out: list[Shortfall] = []
    for o, m, h in sorted(
        zip(*np.nonzero(plan.iw_short > 1e-4), strict=True), key=lambda t: -plan.iw_short[t]
    ):
        amount = float(plan.iw_short[o, m, h])
        reach = [r for r in range(p.shape[0]) if r == o or p.latency_ms[o, r] <= p.max_route_ms]
        when = hour_label(p.start_hour + int(h))
        head = (
            f"IW demand of {models[m]} in {regions[o]} at hour {h} ({when}) exceeds what the fleet can serve "
            f"by {amount:.3g} req/s of {p.iw_rps[o, m, h]:.3g}"
        )
        full = {r: _full_pools(p, plan, r, m, h) for r in reach}
        if all(full[r] or not _hostable(p, r, m) for r in reach):
            pools = "; ".join(f"{regions[r]}: {', '.join(full[r])}" for r in reach if full[r])
            others = [regions[r] for r in reach if r != o]
            tail = (
                f"binding constraint: GPU pool size, full in {pools or 'no region hosting it'}"
                + (f" (regions within {p.max_route_ms:g} ms: {', '.join(others)})" if others else "")
                + "; add GPUs to those pools, allow more routing latency, or lower the load"
            )
            constraint = "pool"
        elif p.loss[o, m, h] >= 0.999:
            tail = (
                "binding constraint: scale-out lead time, instances requested now are not serving before the "
                "hour ends; provision ahead (a longer history) or shorten the lead time"
            )
            constraint = "lead_time"
        else:
            tail = "binding constraint: capacity of the configs allowed for the model"
            constraint = "capacity"
        out.append(Shortfall("iw", regions[o], models[m], int(h), amount, constraint, f"{head}: {tail}"))
        if len(out) >= limit:
            break
    for m in range(plan.niw_short.shape[0]):
        hours = np.flatnonzero(plan.niw_short[m] > 0.5)
        if hours.size == 0 or len(out) >= limit + 1:
            continue
        h = int(hours[0])
        window = range(max(0, h - p.deadline_h + 1), h + 1)
        busy = {}
        for r in range(p.shape[0]):
            n_full = sum(1 for t in window if _full_pools(p, plan, r, m, t))
            if n_full:
                busy[regions[r]] = n_full
        where = ", ".join(f"{k} ({v} of {len(window)} h)" for k, v in busy.items()) or "no region (capacity)"
        message = (
            f"NIW of {models[m]}: {plan.niw_short[m, h]:,.0f} requests due by the end of hour {h} "
            f"({hour_label(p.start_hour + h)}) cannot finish within the {p.deadline_h} h deadline: "
            f"binding constraint: NIW deadline with GPU pools full in {where}"
        )
        out.append(Shortfall("niw", "", models[m], h, float(plan.niw_short[m, h]), "niw_deadline", message))
    return out
