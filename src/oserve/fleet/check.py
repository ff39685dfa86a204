"""Request-level check of the fleet simulation: replay sampled region-hours in OServe's simulator.

The fleet simulation treats load as fluid against capacity at the SLO. For a few region-hours (the busiest by
IW utilisation, then random ones) this builds the instances that served IW in that region for that model in that
hour — as ``simulate.tier_split`` packs IW at the NIW fill cap; the instances IW left free ran NIW only and do
not touch IW — laid out by the planner (``plan``) where they are of several shapes, homogeneous otherwise, and
replays Poisson arrivals at the hour's IW rate served there plus the NIW that fits beside it (all the NIW room
the hour's NIW could fill: the worst case), with request lengths drawn from the real samples, through
``oserve.sim.simulate``; IW requests are scored against the IW SLO.

The window is 180 s of arrivals, or as long as 6,000 requests take (at most 30 minutes) for slow slices.
Large pools are checked as a proportional slice (at most ``max_gpus`` GPUs, the load scaled by the slice's share
of the pool's capacity), as the fluid model assumes load balances across a pool's instances.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from oserve.errors import OServeError
from oserve.fleet.calibrate import node_cluster, slo_met
from oserve.fleet.explain import hour_label
from oserve.fleet.planning import FleetContext
from oserve.fleet.simulate import FleetResult, iw_first, tier_split
from oserve.planner import demands_from_trace, plan
from oserve.sim import simulate
from oserve.spec import Deployment
from oserve.trace import Trace

__all__ = ["RegionHourCheck", "check_region_hours"]

# A slow slice (the code models: 2 instances, ~7 req/s) gets a longer window: 180 s of it is ~1,300 requests,
# whose attainment scatters by +-0.3 points around 99 %; 6,000 requests narrow that to ~0.13.
MIN_REQUESTS, MAX_WINDOW_S = 6000, 1800.0


@dataclass(frozen=True, slots=True)
class RegionHourCheck:
    policy: str
    region: str
    model: str
    hour: str
    instances: str  # e.g. "12 x H100:tp1 (slice: 8)"
    gpus_simulated: int
    iw_rps: float
    niw_rps: float
    predicted_attainment: float  # the fluid model's share of IW within capacity
    simulated_attainment: float  # IW requests meeting the SLO in the simulator
    ttft_p99_s: float
    tpot_p99_s: float
    requests: int

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__slots__}


def _pick(result: FleetResult, samples: int, rng: np.random.Generator) -> list[tuple[int, int, int]]:
    util = np.divide(
        result.iw_served_rps,
        result.iw_capacity_rps,
        out=np.zeros_like(result.iw_served_rps),
        where=result.iw_capacity_rps > 0,
    )
    util = np.where(result.iw_served_rps > 0, util, -1.0)
    busiest = np.unravel_index(int(np.argmax(util)), util.shape)
    picks = [tuple(int(v) for v in busiest)]
    candidates = np.argwhere(util > 0)
    for i in rng.permutation(len(candidates)):
        if len(picks) >= samples:
            break
        pick = tuple(int(v) for v in candidates[i])
        if pick not in picks:
            picks.append(pick)
    return picks[:samples]


def check_region_hours(
    ctx: FleetContext,
    result: FleetResult,
    *,
    samples: int = 2,
    seed: int = 0,
    max_gpus: int = 8,
    window_s: float = 180.0,
    min_requests: int = MIN_REQUESTS,
) -> list[RegionHourCheck]:
    """Replay ``samples`` region-hours of ``result`` request by request (module docstring): ``window_s`` seconds
    of arrivals, longer (up to ``MAX_WINDOW_S``) where that holds fewer than ``min_requests``."""
    rng = np.random.default_rng(seed)
    tab, w = result.table, ctx.workload
    groups = iw_first(tab, ctx.shape[1])
    out = []
    for r, m, h in _pick(result, samples, rng):
        js = groups[m]
        iw_served = float(result.iw_served_rps[r, m, h])
        k, fill, _ = tier_split(result.counts[r, js, h][None, :], np.array([iw_served]), tab, js)
        counts = {int(j): int(n) for j, n in zip(js, k[0], strict=True) if n > 0}
        if not counts:
            continue
        # NIW beside IW: what the hour's NIW could have put there, at most what it served (conservative)
        niw_beside = min(float(fill.sum()), float(result.niw_served[r, m, h]) / 3600.0)
        total_gpus = sum(tab.configs[j].gpus * n for j, n in counts.items())
        share = min(1.0, max_gpus / total_gpus)
        sliced = {j: math.floor(n * share) for j, n in counts.items()}
        if sum(sliced.values()) == 0:
            top = max(counts, key=lambda j: counts[j] * tab.configs[j].gpus)
            sliced[top] = 1
        full_cap = sum(tab.configs[j].mu_iw_rps * n + 1e-9 for j, n in counts.items())
        slice_cap = sum(tab.configs[j].mu_iw_rps * n for j, n in sliced.items())
        scale = slice_cap / full_cap
        iw_rps, niw_rps = iw_served * scale, niw_beside * scale
        window = float(
            np.clip(min_requests / max(iw_rps + niw_rps, 1e-9), window_s, max(window_s, MAX_WINDOW_S))
        )
        trace, is_iw = _trace(w.lengths, m, iw_rps, niw_rps, window, rng)
        if len(trace) == 0:
            continue
        spec = ctx.fleet.models[m].spec
        slo = tab.slos[m]
        by_type: dict[str, int] = {}
        for j, n in sliced.items():
            c = tab.configs[j].config
            by_type[c.gpu.name] = by_type.get(c.gpu.name, 0) + n * c.num_gpus
        cluster = node_cluster(by_type)
        heterogeneous = len({tab.configs[j].config for j in sliced if sliced[j] > 0}) > 1
        try:
            if heterogeneous:
                demands, grid = demands_from_trace(trace, num_types=4)
                deployment = plan(spec, cluster, demands, slo, grid=grid, pps=(1,)).deployment
                router = "allowed-least-tokens"
            else:
                j = max(sliced, key=lambda j: sliced[j])
                deployment = Deployment.homogeneous(spec.name, cluster, tab.configs[j].config, sliced[j])
                router = "least-tokens"
        except OServeError:
            continue
        sim = simulate(trace, deployment, spec, cluster, router=router, slo=slo.to_dict())
        ids, ok, ttft, tpot = slo_met(sim, slo)
        iw_mask = is_iw[ids]
        all_counts = {int(j): int(result.counts[r, j, h]) for j in js if result.counts[r, j, h] > 0}
        label = ", ".join(f"{n} x {tab.configs[j].label}" for j, n in all_counts.items())
        iw_label = ", ".join(f"{n} x {tab.configs[j].label}" for j, n in counts.items())
        out.append(
            RegionHourCheck(
                policy=result.policy,
                region=ctx.fleet.region_names[r],
                model=ctx.fleet.model_names[m],
                hour=hour_label(result.start_hour + h),
                instances=f"{label}; serving IW: {iw_label}; slice simulated: {deployment.describe()}",
                gpus_simulated=sum(n * tab.configs[j].gpus for j, n in sliced.items()),
                iw_rps=iw_rps,
                niw_rps=niw_rps,
                predicted_attainment=float(result.iw_attained[r, m, h]),
                simulated_attainment=float(ok[iw_mask].mean()) if iw_mask.any() else math.nan,
                ttft_p99_s=float(np.nanpercentile(ttft[iw_mask], 99)) if iw_mask.any() else math.nan,
                tpot_p99_s=float(np.nanpercentile(tpot[iw_mask], 99)) if iw_mask.any() else math.nan,
                requests=len(trace),
            )
        )
    return out


def _trace(
    lengths: dict[tuple[int, str], tuple[np.ndarray, np.ndarray]],
    model: int,
    iw_rps: float,
    niw_rps: float,
    window_s: float,
    rng: np.random.Generator,
) -> tuple[Trace, np.ndarray]:
    parts, flags = [], []
    for tier, rate in (("iw", iw_rps), ("niw", niw_rps)):
        n = int(rng.poisson(rate * window_s)) if rate > 0 else 0
        prompts, outputs = lengths[(model, tier)]
        pick = rng.integers(0, len(prompts), n)
        parts.append((rng.uniform(0, window_s, n), prompts[pick], outputs[pick]))
        flags.append(np.full(n, tier == "iw"))
    arrival = np.concatenate([p[0] for p in parts])
    order = np.argsort(arrival, kind="stable")
    trace = Trace.from_arrays(
        arrival[order],
        np.concatenate([p[1] for p in parts])[order],
        np.concatenate([p[2] for p in parts])[order],
        duration_s=window_s,
        name="fleet-check",
        sort=False,
    )
    return trace, np.concatenate(flags)[order]
