"""The fleet simulation: minute steps over days, instances per region x config, IW and NIW load as fluid.

Each minute: instances requested earlier arrive (after the region's scale-out lead time they are billed and
load the model; after the model-load time they serve); the policy sets the counts it wants; IW load is served
where it arrives, or routed to the nearest region with room within the latency limit (policies that route);
IW beyond the capacity at SLO misses the SLO; IW is packed onto the fewest instances that hold it at the NIW fill
cap, NIW runs beside it up to the cap and at full throughput on the instances IW leaves free (``tier_split``),
earliest deadline first (from the whole fleet's queue where NIW is routable); spot GPUs are reclaimed at the
pools' eviction rates (``_Fleet.evict``). Capacity per instance is the planner's mu at the SLO calibrated against
the simulator (``fleet.calibrate``). ``check`` replays sampled region-hours request by request in the simulator.

Metrics: GPU-hours and dollars billed (spot GPUs first, up to the spot GPUs available), IW SLO attainment
(share of IW requests offered within the capacity at SLO; 99 % of those meet it in the simulator, per the
calibration), NIW deadlines met (share of NIW requests due in the run finished in time) and scaling actions
(instances added or removed).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from oserve.fleet.capacity import CapacityTable
from oserve.fleet.planning import FleetContext

__all__ = ["FleetPolicy", "FleetResult", "SimView", "iw_first", "simulate_fleet", "tier_split"]

WINDOW_MIN = 15  # recent IW load kept for policies
SPOT_RECLAIM_MIN = 60  # a reclaimed spot GPU stays out of its pool this long


@dataclass(slots=True)
class SimView:
    """What a policy sees at minute ``t`` (arrays: regions x configs, or regions x models)."""

    t: int
    active: np.ndarray
    pending: np.ndarray  # requested or loading
    load_recent: np.ndarray  # WINDOW_MIN x regions x models: IW req/s served at each region, newest last
    missed_recent: np.ndarray  # WINDOW_MIN x regions x models: IW req/s over capacity
    niw_cap_rps: np.ndarray  # regions x models: NIW capacity left after IW this minute
    niw_queue: np.ndarray  # queues x models x due hour: NIW requests waiting
    niw_late: np.ndarray  # queues x models: requests past their deadline still waiting
    niw_arrived_recent: np.ndarray  # regions x models: NIW req/s arriving, mean of the last 10 minutes


class FleetPolicy(Protocol):
    name: str
    table: CapacityTable
    routes_iw: bool  # IW may go to another region within the latency limit
    pooled_niw: bool  # NIW may run in any region

    def start(self, ctx: FleetContext, t0: int) -> np.ndarray:
        """Instances (regions x configs) serving at the first minute."""
        ...

    def desired(self, view: SimView) -> np.ndarray | None:
        """Instances wanted now (regions x configs), None for no change."""
        ...


@dataclass(frozen=True, slots=True, eq=False)
class FleetResult:
    policy: str
    gpu_hours: float
    cost_usd: float
    iw_slo_attainment: float
    niw_deadline_met: float
    scaling_actions: int
    table: CapacityTable
    counts: np.ndarray  # regions x configs x hours (at each hour's middle)
    iw_load_rps: np.ndarray  # regions x models x hours, offered at origin
    iw_served_rps: np.ndarray  # regions x models x hours, served in the region (its own and routed in)
    iw_capacity_rps: np.ndarray  # regions x models x hours, mean
    iw_attained: np.ndarray  # regions x models x hours: share of IW within capacity (at the serving region)
    niw_served: np.ndarray  # regions x models x hours, requests
    gpus: np.ndarray  # regions x models x hours, mean GPUs billed
    start_hour: int
    wall_seconds: float
    notes: tuple[str, ...] = field(default_factory=tuple)
    spot_evictions: int = 0  # instances stopped by spot reclaims

    def summary(self) -> dict[str, Any]:
        return {
            "gpu_hours": self.gpu_hours,
            "cost_usd": self.cost_usd,
            "iw_slo_attainment": self.iw_slo_attainment,
            "niw_deadline_met": self.niw_deadline_met,
            "scaling_actions": self.scaling_actions,
        }


class _Fleet:
    """Instances in flight: requested -> (lead) allocated and loading -> (load) serving."""

    def __init__(self, ctx: FleetContext, table: CapacityTable, initial: np.ndarray) -> None:
        self.table = table
        self.model_of, self.gpu_of, self.gpus = table.model_of, table.gpu_index, table.gpus
        R = ctx.shape[0]
        self.active = np.asarray(initial, dtype=np.float64).copy()
        self.loading = np.zeros_like(self.active)
        self.requested = np.zeros_like(self.active)
        self.events: dict[int, list[tuple[int, int, int, float]]] = {}
        self.lead = ctx.lead_min
        self.delay_load = ctx.load_min[:, self.model_of]  # regions x configs
        self.pool = ctx.pools_od + ctx.pools_spot  # regions x GPU types
        self.spot_pool = ctx.pools_spot
        self.actions = 0
        self.R = R
        # spot eviction: GPUs due to be reclaimed (fluid), reclaimed and not yet back, and when they come back
        rate = ctx.spot_eviction_per_h
        self.evict_per_min = rate / 60.0 if rate.shape == self.pool.shape else np.zeros_like(self.pool)
        self.evict_due = np.zeros_like(self.pool)
        self.reclaimed = np.zeros_like(self.pool)
        self.returns: dict[int, list[tuple[int, int, float]]] = {}
        self.evictions = 0

    def spot_available(self) -> np.ndarray:
        return np.maximum(self.spot_pool - self.reclaimed, 0.0)

    def evict(self, t: int, spot_in_use: np.ndarray) -> None:
        """Reclaim spot GPUs at the pools' eviction rates: whole serving instances of the type (the largest
        group first) stop at once, and their GPUs stay out of the spot pool for ``SPOT_RECLAIM_MIN``; the
        policy sees the capacity gone and re-requests it (after the lead time, on-demand while spot is out)."""
        self.evict_due += spot_in_use * self.evict_per_min
        for r, g in zip(*np.nonzero(self.evict_due >= 1.0), strict=True):
            while True:
                room = min(self.evict_due[r, g], self.spot_pool[r, g] - self.reclaimed[r, g])
                js = np.flatnonzero((self.gpu_of == g) & (self.active[r] >= 1) & (self.gpus <= room))
                if js.size == 0:
                    break
                j = js[np.argmax(self.active[r, js] * self.gpus[js])]
                self.active[r, j] -= 1
                self.evict_due[r, g] -= self.gpus[j]
                self.reclaimed[r, g] += self.gpus[j]
                self.returns.setdefault(t + SPOT_RECLAIM_MIN, []).append(
                    (int(r), int(g), float(self.gpus[j]))
                )
                self.evictions += 1
            self.evict_due[r, g] = min(self.evict_due[r, g], float(self.gpus[self.gpu_of == g].max()))

    @property
    def pending(self) -> np.ndarray:
        return self.loading + self.requested

    def reserved_gpus(self) -> np.ndarray:
        used = (self.active + self.pending) * self.gpus[None, :]
        out = np.zeros_like(self.pool)
        np.add.at(out, (slice(None), self.gpu_of), used)
        return out

    def tick(self, t: int) -> None:
        for r, g, k in self.returns.pop(t, ()):
            self.reclaimed[r, g] -= k
        for kind, r, j, k in self.events.pop(t, ()):
            if kind == 0:  # allocated: billed, loading
                self.requested[r, j] -= k
                self.loading[r, j] += k
            else:
                self.loading[r, j] -= k
                self.active[r, j] += k

    def reconcile(self, t: int, desired: np.ndarray) -> None:
        have = self.active + self.pending
        diff = np.rint(desired) - have
        room = self.pool - self.reclaimed - self.reserved_gpus()
        for r, j in zip(*np.nonzero(diff > 0), strict=True):
            g = self.gpu_of[j]
            k = float(min(diff[r, j], np.floor(room[r, g] / self.gpus[j])))
            if k <= 0:
                continue
            room[r, g] -= k * self.gpus[j]
            self.requested[r, j] += k
            self.actions += int(k)
            alloc = t + max(1, round(self.lead[r]))
            ready = alloc + max(0, round(self.delay_load[r, j]))
            self.events.setdefault(alloc, []).append((0, int(r), int(j), k))
            self.events.setdefault(max(ready, alloc), []).append((1, int(r), int(j), k))
        for r, j in zip(*np.nonzero(diff < 0), strict=True):
            k = float(-diff[r, j])
            self.actions += int(k)
            k = self._cancel(int(r), int(j), k)
            self.active[r, j] -= min(k, self.active[r, j])

    def _cancel(self, r: int, j: int, k: float) -> float:
        """Withdraw up to ``k`` instances still on their way (latest first); return how many remain to remove."""
        for minute in sorted(self.events, reverse=True):
            if k <= 0:
                break
            evs = self.events[minute]
            for i, (kind, rr, jj, n) in enumerate(evs):
                if kind == 1 and rr == r and jj == j and n > 0:
                    take = min(n, k)
                    evs[i] = (kind, rr, jj, n - take)
                    k -= take
                    # its allocation event, if still ahead, shrinks by the same amount
                    if not self._shrink_alloc(r, j, take):
                        self.loading[r, j] -= take
        return k

    def _shrink_alloc(self, r: int, j: int, k: float) -> bool:
        for minute in sorted(self.events, reverse=True):
            evs = self.events[minute]
            for i, (kind, rr, jj, n) in enumerate(evs):
                if kind == 0 and rr == r and jj == j and n >= k:
                    evs[i] = (kind, rr, jj, n - k)
                    self.requested[r, j] -= k
                    return True
        return False


def iw_first(table: CapacityTable, models: int) -> list[np.ndarray]:
    """Per model, its configs in order of IW-to-NIW capacity ratio (IW fills the first ones; NIW-only last)."""
    mu_iw, mu_niw, model_of = table.mu_iw, table.mu_niw, table.model_of
    ratio = np.where(mu_niw > 0, mu_iw / np.maximum(mu_niw, 1e-12), np.inf)
    ratio = np.where(mu_iw > 0, ratio, -1.0)
    order = np.lexsort((-ratio, model_of))
    return [order[model_of[order] == m] for m in range(models)]


def tier_split(
    active: np.ndarray, iw_rps: np.ndarray, table: CapacityTable, js: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """How a region-model's instances (``active``: regions x configs ``js`` of one model, in IW-first order)
    split between the tiers with ``iw_rps`` (regions) of IW to serve.

    IW goes on the fewest instances that hold it at ``table.fill_cap`` of their IW capacity, configs in order;
    NIW runs beside it up to the cap (at the IW SLO: ``mu_fill`` req/s per instance) and at full throughput
    (``mu_niw``) on the instances IW leaves free. IW beyond the cap of every instance spreads over all of them,
    up to their full capacity, with no NIW beside it. Returns (IW instances, NIW req/s beside IW, NIW req/s on
    free instances), each regions x configs.
    """
    cap = table.fill_cap
    mu_iw, mu_niw, mu_fill = table.mu_iw[js], table.mu_niw[js], table.mu_fill[js]
    held = active * mu_iw * cap  # IW req/s each config holds at the cap
    before = np.cumsum(held, axis=1) - held
    iw_j = np.clip(iw_rps[:, None] - before, 0.0, held)
    used = np.divide(iw_j, mu_iw, out=np.zeros_like(iw_j), where=mu_iw > 0)  # instances' worth of IW
    k = np.minimum(np.ceil(used / cap - 1e-9), active)
    fill = np.maximum(k * cap - used, 0.0) * mu_fill
    free = (active - k) * mu_niw
    over = iw_rps > held.sum(axis=1) + 1e-12
    if over.any():
        serves_iw = mu_iw > 0
        k[over] = np.where(serves_iw, active[over], 0.0)
        fill[over] = 0.0
        free[over] = np.where(serves_iw, 0.0, active[over] * mu_niw)
    return k, fill, free


def _route(load: np.ndarray, cap: np.ndarray, pairs: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """IW served per region after sending overflow to regions with room, nearest first; and what stays unmet."""
    served = np.minimum(load, cap)
    over = load - served
    spare = cap - served
    for o, r in pairs:
        move = np.minimum(over[o], spare[r])
        over[o] -= move
        spare[r] -= move
        served[r] += move
    return served, over


def simulate_fleet(
    ctx: FleetContext, policy: FleetPolicy, *, hours: int | None = None, progress=None
) -> FleetResult:
    """Run ``policy`` from the workload's evaluation start for ``hours`` (default: to its end)."""
    began = time.perf_counter()
    w = ctx.workload
    tab = policy.table
    R, M = ctx.shape
    J = len(tab.configs)
    t0 = w.eval_start_min
    t_end = w.minutes if hours is None else min(w.minutes, t0 + 60 * hours)
    H = (t_end - t0) // 60
    d_min = round(ctx.fleet.niw_deadline_h * 60)
    model_of, gpus, mu_iw = tab.model_of, tab.gpus, tab.mu_iw
    onehot = np.zeros((J, M))
    onehot[np.arange(J), model_of] = 1.0
    groups = iw_first(tab, M)
    pairs = sorted(
        (
            (o, r)
            for o in range(R)
            for r in range(R)
            if o != r and ctx.latency_ms[o, r] <= ctx.fleet.max_route_latency_ms
        ),
        key=lambda p: ctx.latency_ms[p],
    )
    fleet = _Fleet(ctx, tab, policy.start(ctx, t0))
    Q = 1 if policy.pooled_niw else R
    n_hours_total = w.minutes // 60 + d_min // 60 + 3
    queue = np.zeros((Q, M, n_hours_total))
    late = np.zeros((Q, M))
    # NIW that arrived before the start is taken as done: the run counts deadlines of what arrives in it
    iw_req = w.requests[:, :, 0]
    niw_req = w.requests[:, :, 1]
    load_recent = np.zeros((WINDOW_MIN, R, M))
    missed_recent = np.zeros((WINDOW_MIN, R, M))
    niw_recent = np.zeros((10, R, M))
    niw_cap = np.zeros((R, M))
    gpu_price_od, gpu_price_spot = ctx.price_od, ctx.price_spot
    G = len(ctx.gpu_names)
    gpu_minutes = 0.0
    cost = 0.0
    iw_offered = iw_missed = 0.0
    niw_missed = 0.0
    rec_counts = np.zeros((R, J, H))
    rec_load = np.zeros((R, M, H))
    rec_served = np.zeros((R, M, H))
    rec_cap = np.zeros((R, M, H))
    rec_att_num = np.zeros((R, M, H))
    rec_att_den = np.zeros((R, M, H))
    rec_niw = np.zeros((R, M, H))
    rec_gpus = np.zeros((R, M, H))
    bucket_window = d_min // 60 + 2
    for t in range(t0, t_end):
        h = (t - t0) // 60
        fleet.tick(t)
        if t > t0:
            view = SimView(
                t,
                fleet.active,
                fleet.pending,
                load_recent,
                missed_recent,
                niw_cap,
                queue,
                late,
                niw_recent.mean(axis=0),
            )
            desired = policy.desired(view)
            if desired is not None:
                fleet.reconcile(t, desired)
        active = fleet.active
        # IW
        offered = iw_req[:, :, t] / 60.0
        cap = (active * mu_iw) @ onehot
        if policy.routes_iw:
            served, unmet = _route(offered, cap, pairs)
        else:
            served, unmet = np.minimum(offered, cap), np.maximum(offered - cap, 0.0)
        iw_offered += offered.sum()
        iw_missed += unmet.sum()
        load_recent = np.roll(load_recent, -1, axis=0)
        load_recent[-1] = served
        missed_recent = np.roll(missed_recent, -1, axis=0)
        missed_recent[-1] = unmet
        # NIW capacity left: IW packed at the fill cap, NIW beside it and on the instances IW leaves free
        niw_cap = np.zeros((R, M))
        for m, js in enumerate(groups):
            _, fill, free = tier_split(active[:, js], served[:, m], tab, js)
            niw_cap[:, m] = (fill + free).sum(axis=1)
        # NIW arrivals and EDF service
        arriving = niw_req[:, :, t]
        niw_recent = np.roll(niw_recent, -1, axis=0)
        niw_recent[-1] = arriving / 60.0
        queue[:, :, (t + d_min) // 60] += arriving.sum(axis=0, keepdims=True) if Q == 1 else arriving
        budget = (niw_cap.sum(axis=0, keepdims=True) if Q == 1 else niw_cap) * 60.0
        from_late = np.minimum(late, budget)
        late -= from_late
        budget = budget - from_late
        b0 = t // 60
        win = queue[:, :, b0 : b0 + bucket_window]
        cum = np.cumsum(win, axis=2)
        take = np.clip(budget[:, :, None] - (cum - win), 0.0, win)
        win -= take
        done = from_late + take.sum(axis=2)  # queues x models
        if Q == 1:
            share = np.divide(
                niw_cap,
                niw_cap.sum(axis=0, keepdims=True),
                out=np.zeros_like(niw_cap),
                where=niw_cap.sum(axis=0, keepdims=True) > 0,
            )
            rec_niw[:, :, h] += share * done
        else:
            rec_niw[:, :, h] += done
        if t % 60 == 59:  # deadlines falling at the next hour's start
            due = queue[:, :, b0 + 1]
            niw_missed += due.sum()
            late += due
            queue[:, :, b0 + 1] = 0.0
        # billing: GPUs allocated (loading or serving), spot first
        billed_j = (active + fleet.loading) * gpus[None, :]
        billed = np.zeros((R, G))
        np.add.at(billed, (slice(None), tab.gpu_index), billed_j)
        spot = np.minimum(billed, fleet.spot_available())
        fleet.evict(t, spot)
        cost += float((spot * gpu_price_spot + (billed - spot) * gpu_price_od).sum()) / 60.0
        gpu_minutes += float(billed.sum())
        rec_gpus[:, :, h] += (billed_j @ onehot) / 60.0
        rec_load[:, :, h] += offered / 60.0
        rec_served[:, :, h] += served / 60.0
        rec_cap[:, :, h] += cap / 60.0
        rec_att_den[:, :, h] += offered
        rec_att_num[:, :, h] += offered - unmet
        if t % 60 == 30:
            rec_counts[:, :, h] = active
        if progress is not None and t % 1440 == 0:
            progress(f"{policy.name}: day {(t - t0) // 1440 + 1}")
    due_total = float(niw_req[:, :, t0 : max(t0, t_end - d_min)].sum())
    met = min(1.0, max(0.0, 1.0 - niw_missed / due_total)) if due_total > 0 else 1.0
    return FleetResult(
        policy=policy.name,
        gpu_hours=gpu_minutes / 60.0,
        cost_usd=cost,
        iw_slo_attainment=1.0 - iw_missed / iw_offered if iw_offered > 0 else 1.0,
        niw_deadline_met=met,
        scaling_actions=fleet.actions,
        table=tab,
        counts=rec_counts,
        iw_load_rps=rec_load,
        iw_served_rps=rec_served,
        iw_capacity_rps=rec_cap,
        iw_attained=np.divide(rec_att_num, rec_att_den, out=np.ones_like(rec_att_num), where=rec_att_den > 0),
        niw_served=rec_niw,
        gpus=rec_gpus,
        start_hour=t0 // 60,
        wall_seconds=time.perf_counter() - began,
        notes=(f"NIW due in the run: {due_total:,.0f} requests, late: {niw_missed:,.0f}",),
        spot_evictions=fleet.evictions,
    )
