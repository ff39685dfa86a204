"""The long-horizon plan: instances per region x model x config x hour, by a MILP on HiGHS (``planner.lp``).

After SageServe (arXiv 2502.14617, section 5): forecast IW load must be met at SLO capacity, NIW volume must
finish by its deadline anywhere in the fleet, GPU pools bound what each region can run, and adding an instance
costs its model-load time (and, within the scale-out lead time of now, the hour it cannot serve). Variables per
hour ``h`` (``j`` a (model, config) column of the capacity table)::

    n[r,j,h]  integer  instances          a[r,j,h] >= n[r,j,h] - n[r,j,h-1]   instances added
    xi[r,j,h], xn[r,j,h]  IW / NIW req/s served on them     y[o->r,m,h]  IW req/s of origin o served in r
    god[r,g,h], gsp[r,g,h]  on-demand / spot GPUs in use    s_iw[o,m,h], s_niw[m,h]  shortfalls (priced high)

    sum_r y[o->r,m,h] + s_iw = iw[o,m,h]                    (IW forecast, routed within the latency limit)
    sum_{j of m} xi[r,j,h] = sum_o y[o->r,m,h]
    xi / mu_iw[j] + xn / mu_niw[j] <= n - loss[r,m,h] * a   (capacity at the SLO; loss = share of the hour an
                                                             instance added at h is not serving yet)
    sum_j gpus_j n[r,j,h] (of GPU type g) = god + gsp,  god <= on-demand pool,  gsp <= spot pool
    due[m,h] <= 3600 sum_{r,j of m,t<=h} xn[r,j,t] + s_niw[m,h] <= arrived[m,h]   (EDF: deadlines met in order)

    minimise  sum price * GPUs  +  model-load GPU-hours of added instances * price  +  latency penalty * y
              + big * shortfalls

Shortfalls keep the model feasible, so infeasible input still gets a plan and ``explain`` names the binding
region, hour and constraint (``oserve.fleet.explain``).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace

import numpy as np
import scipy.sparse as sp

from oserve.fleet.capacity import CapacityTable
from oserve.planner.lp import solve

__all__ = ["FleetPlan", "FleetProblem", "solve_fleet"]

_TOL = 1e-6
# forecasts miss by 5-10 % an hour (docs/fleet.md), so a plan proved within 2 % of the optimum is enough
MIP_GAP = 0.02


@dataclass(frozen=True, slots=True, eq=False)
class FleetProblem:
    """One planning window of ``H`` hours from now (hour 0)."""

    iw_rps: (
        np.ndarray
    )  # regions x models x hours: IW load to cover (forecast x max(peak factor, 1 / fill cap))
    niw_arrivals: np.ndarray  # models x hours: NIW requests arriving in the fleet
    niw_backlog: (
        np.ndarray
    )  # models x hours: NIW requests queued now, by the hour they are due (0 = this hour)
    deadline_h: int  # NIW arriving in hour t is due by the end of hour t + deadline_h - 1
    table: CapacityTable
    pools_od: np.ndarray  # regions x GPU types (GPUs)
    pools_spot: np.ndarray
    price_od: np.ndarray  # regions x GPU types, USD per GPU-hour
    price_spot: np.ndarray
    current: np.ndarray  # regions x configs: instances serving or on their way now
    loss: np.ndarray  # regions x models x hours: share of hour h an instance added at h cannot serve
    load_h: np.ndarray  # regions x models: model-load hours billed per added instance
    latency_ms: np.ndarray  # regions x regions
    max_route_ms: float
    objective: str = "cost"  # or "gpu_hours"
    region_names: tuple[str, ...] = ()
    model_names: tuple[str, ...] = ()
    start_hour: int = 0  # absolute hour of hour 0 (for messages)

    @property
    def shape(self) -> tuple[int, int, int]:
        """(regions, configs, hours)."""
        return self.pools_od.shape[0], len(self.table.configs), self.iw_rps.shape[2]


@dataclass(frozen=True, slots=True, eq=False)
class FleetPlan:
    counts: np.ndarray  # regions x configs x hours
    iw_routed: np.ndarray  # origin x serving region x models x hours, req/s
    niw_served: np.ndarray  # regions x models x hours, requests
    gpus_od: np.ndarray  # regions x GPU types x hours
    gpus_spot: np.ndarray
    iw_short: np.ndarray  # origin x models x hours, req/s the plan cannot cover
    niw_short: np.ndarray  # models x hours, requests due by then that cannot finish
    status: str
    mip_gap: float
    solve_seconds: float
    num_columns: int
    num_integers: int
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def feasible(self) -> bool:
        return bool(self.iw_short.max(initial=0.0) <= 1e-4 and self.niw_short.max(initial=0.0) <= 0.5)

    def gpu_hours(self) -> float:
        return float(self.gpus_od.sum() + self.gpus_spot.sum())


class _Columns:
    """Column blocks of the MILP: name -> (offset, shape)."""

    def __init__(self) -> None:
        self.size = 0
        self.blocks: dict[str, tuple[int, tuple[int, ...]]] = {}

    def add(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        count = int(np.prod(shape))
        self.blocks[name] = (self.size, shape)
        index = self.size + np.arange(count).reshape(shape)
        self.size += count
        return index

    def take(self, x: np.ndarray, name: str) -> np.ndarray:
        offset, shape = self.blocks[name]
        return x[offset : offset + int(np.prod(shape))].reshape(shape)


class _Rows:
    def __init__(self) -> None:
        self.rows: list[np.ndarray] = []
        self.cols: list[np.ndarray] = []
        self.vals: list[np.ndarray] = []
        self.lo: list[np.ndarray] = []
        self.hi: list[np.ndarray] = []
        self.count = 0

    def block(self, shape: tuple[int, ...], lo: np.ndarray | float, hi: np.ndarray | float) -> np.ndarray:
        n = int(np.prod(shape))
        index = self.count + np.arange(n).reshape(shape)
        self.count += n
        self.lo.append(np.broadcast_to(np.asarray(lo, float), shape).ravel())
        self.hi.append(np.broadcast_to(np.asarray(hi, float), shape).ravel())
        return index

    def put(self, rows: np.ndarray, cols: np.ndarray, vals: np.ndarray | float) -> None:
        rows, cols = np.asarray(rows), np.asarray(cols)
        self.rows.append(np.broadcast_to(rows, cols.shape).ravel())
        self.cols.append(cols.ravel())
        self.vals.append(np.broadcast_to(np.asarray(vals, float), cols.shape).ravel())

    def matrix(self, n_cols: int) -> sp.csc_matrix:
        return sp.coo_matrix(
            (np.concatenate(self.vals), (np.concatenate(self.rows), np.concatenate(self.cols))),
            shape=(self.count, n_cols),
        ).tocsc()


def _due_and_arrived(p: FleetProblem) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative NIW requests due by the end of each hour, and arrived by then (models x hours)."""
    arrivals, backlog, d = p.niw_arrivals, p.niw_backlog, max(1, p.deadline_h)
    hours = arrivals.shape[1]
    due = np.cumsum(backlog, axis=1)
    shifted = np.zeros_like(arrivals)
    if d <= hours:
        shifted[:, d - 1 :] = arrivals[:, : hours - d + 1]
    due = due + np.cumsum(shifted, axis=1)
    arrived = backlog.sum(axis=1, keepdims=True) + np.cumsum(arrivals, axis=1)
    return due, arrived


def _round_within_pools(n: np.ndarray, pools: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
    """Counts (regions x configs x hours, flattened) rounded up, then down again (smallest fractions first)
    wherever rounding up overfills a region's pool of a GPU type in an hour."""
    limit, gpus, gpu_of = pools  # regions x GPU types; per config; per config
    counts = n.reshape(limit.shape[0], gpus.size, -1)
    up = np.ceil(counts - 1e-6)
    frac = counts - np.floor(counts + 1e-6)
    for g in range(limit.shape[1]):
        js = np.flatnonzero(gpu_of == g)
        used = np.einsum("rjh,j->rh", up[:, js], gpus[js])
        for r, h in zip(*np.nonzero(used > limit[:, g : g + 1] + 1e-9), strict=True):
            for j in js[np.argsort(frac[r, js, h], kind="stable")]:
                if used[r, h] <= limit[r, g] + 1e-9:
                    break
                if frac[r, j, h] > 1e-6 and up[r, j, h] > np.floor(counts[r, j, h] + 1e-6):
                    up[r, j, h] -= 1
                    used[r, h] -= gpus[j]
    return up.ravel()


def _dive_start(cost, matrix, row_lo, row_hi, lo, hi, cols: _Columns, time_limit_s, pools, rounds: int = 12):
    """A first incumbent by diving on the LP relaxation, so HiGHS need not find one through its root cuts.

    The relaxation runs each region-model-hour on an IW config and a NIW config, both fractional; rounding all
    up wastes 6-8 %, and HiGHS's own heuristics only get close after root cut rounds that take 5-20 s here.
    Each round fixes the half of the fractional counts nearest an integer to it and re-solves, so the rest
    (other configs, NIW timing) absorbs the rounding; after ``rounds`` rounds, or once 60 % of the time limit is
    spent, every count left goes up. Returns the last LP's solution (integral counts, so a MILP solution), or None.
    """
    began = time.perf_counter()
    offset, shape = cols.blocks["n"]
    size = int(np.prod(shape))
    b_lo, b_hi = lo.copy(), hi.copy()

    def shortfall(x: np.ndarray) -> float:
        return float(cols.take(x, "siw").sum() + cols.take(x, "sniw").sum())

    sol = solve(cost, matrix, row_lo, row_hi, b_lo, b_hi, maximize=False, time_limit_s=time_limit_s)
    if not sol.ok:
        return None
    base = shortfall(sol.x)
    for k in range(rounds + 1):
        n = sol.x[offset : offset + size]
        f = n - np.floor(n)
        frac = np.flatnonzero((f > 1e-6) & (f < 1 - 1e-6))
        if frac.size == 0:
            return sol
        if k >= rounds or time.perf_counter() - began > 0.6 * time_limit_s:
            # last step: every count up (integral ones stay), down where that would overfill a pool, and fixed,
            # so one LP finishes the dive
            up = _round_within_pools(n, pools)
            fixed_lo, fixed_hi = b_lo.copy(), b_hi.copy()
            fixed_lo[offset : offset + size] = fixed_hi[offset : offset + size] = up
            last = solve(
                cost, matrix, row_lo, row_hi, fixed_lo, fixed_hi, maximize=False, time_limit_s=time_limit_s
            )
            return last if last.ok else None
        dist = np.minimum(f[frac], 1 - f[frac])
        pick = frac[np.argsort(dist, kind="stable")[: max(1, (frac.size + 1) // 2)]]
        up = np.ceil(n[pick])
        nearest = np.where(f[pick] >= 0.5, up, np.floor(n[pick]))
        for value in (nearest, up):
            trial_lo, trial_hi = b_lo.copy(), b_hi.copy()
            trial_lo[offset + pick] = value
            trial_hi[offset + pick] = value
            trial = solve(
                cost, matrix, row_lo, row_hi, trial_lo, trial_hi, maximize=False, time_limit_s=time_limit_s
            )
            # rounding down where a pool is tight can leave load unserved: then round this batch up instead
            if trial.ok and shortfall(trial.x) <= base + 1e-6 * max(1.0, base):
                b_lo, b_hi, sol = trial_lo, trial_hi, trial
                break
        else:
            return None
    return None


def solve_fleet(p: FleetProblem, *, time_limit_s: float = 10.0, mip_rel_gap: float = MIP_GAP) -> FleetPlan:
    """Solve the window; infeasible demand shows as shortfalls (``explain`` turns them into sentences)."""
    began = time.perf_counter()
    tab = p.table
    R, J, H = p.shape
    M, G = p.iw_rps.shape[1], p.pools_od.shape[1]
    model_of, gpus, gpu_of = tab.model_of, tab.gpus, tab.gpu_index
    mu_iw, mu_niw = tab.mu_iw, tab.mu_niw
    unit = np.ones_like(p.price_od) if p.objective == "gpu_hours" else p.price_od
    unit_spot = np.ones_like(p.price_spot) if p.objective == "gpu_hours" else p.price_spot
    pairs = [(o, r) for o in range(R) for r in range(R) if p.latency_ms[o, r] <= p.max_route_ms or o == r]
    P = len(pairs)
    cols = _Columns()
    n_i = cols.add("n", (R, J, H))
    a_i = cols.add("a", (R, J, H))
    xi_i = cols.add("xi", (R, J, H))
    xn_i = cols.add("xn", (R, J, H))
    y_i = cols.add("y", (P, M, H))
    od_i = cols.add("od", (R, G, H))
    sp_i = cols.add("sp", (R, G, H))
    siw_i = cols.add("siw", (R, M, H))
    sniw_i = cols.add("sniw", (M, H))
    done_i = cols.add("done", (M, H))

    cost = np.zeros(cols.size)
    lo, hi = np.zeros(cols.size), np.full(cols.size, np.inf)
    # cheapest IW req/s per model, the scale of the penalties
    serve_cost = np.array(
        [min(gpus[j] * unit.min() / mu_iw[j] for j in tab.of_model(m) if mu_iw[j] > 0) for m in range(M)]
    )
    niw_cost = np.array(
        [
            min((gpus[j] * unit.min() / mu_niw[j] for j in tab.of_model(m) if mu_niw[j] > 0), default=1.0)
            for m in range(M)
        ]
    )
    cost[od_i] = unit[:, :, None]
    cost[sp_i] = unit_spot[:, :, None]
    price_j = unit[:, gpu_of]  # regions x configs
    cost[a_i] = (gpus[None, :] * p.load_h[:, model_of] * price_j)[:, :, None]
    for q, (o, r) in enumerate(pairs):
        cost[y_i[q]] = 1e-3 * serve_cost[:, None] * p.latency_ms[o, r]
    cost[siw_i] = 1e4 * serve_cost[None, :, None]
    cost[sniw_i] = 1e4 * niw_cost[:, None] / 3.6  # per thousand requests
    pool_gpus = p.pools_od + p.pools_spot
    n_max = np.floor(pool_gpus[:, gpu_of] / gpus[None, :])  # regions x configs
    hi[n_i] = n_max[:, :, None]
    hi[xi_i[:, mu_iw <= 0, :]] = 0.0
    hi[xn_i[:, mu_niw <= 0, :]] = 0.0
    hi[od_i] = p.pools_od[:, :, None]
    hi[sp_i] = p.pools_spot[:, :, None]

    rows = _Rows()
    # IW demand per origin
    rd = rows.block((R, M, H), p.iw_rps, p.iw_rps)
    rb = rows.block((R, M, H), 0.0, 0.0)
    for q, (o, r) in enumerate(pairs):
        rows.put(rd[o], y_i[q], 1.0)
        rows.put(rb[r], y_i[q], -1.0)
    rows.put(rd, siw_i, 1.0)
    rows.put(rb[:, model_of, :], xi_i, 1.0)
    # capacity per instance group
    rc = rows.block((R, J, H), -np.inf, 0.0)
    ok_iw, ok_niw = mu_iw > 0, mu_niw > 0
    rows.put(rc[:, ok_iw], xi_i[:, ok_iw], (1 / mu_iw[ok_iw])[None, :, None])
    rows.put(rc[:, ok_niw], xn_i[:, ok_niw], (1 / mu_niw[ok_niw])[None, :, None])
    rows.put(rc, n_i, -1.0)
    rows.put(rc, a_i, p.loss[:, model_of, :])
    # scale-out: a >= n[h] - n[h-1], n[-1] = current
    scale_hi = np.zeros((R, J, H))
    scale_hi[:, :, 0] = p.current
    rs = rows.block((R, J, H), -np.inf, scale_hi)
    rows.put(rs, n_i, 1.0)
    rows.put(rs[:, :, 1:], n_i[:, :, :-1], -1.0)
    rows.put(rs, a_i, -1.0)
    # pools
    rp = rows.block((R, G, H), 0.0, 0.0)
    rows.put(rp[:, gpu_of, :], n_i, gpus[None, :, None])
    rows.put(rp, od_i, -1.0)
    rows.put(rp, sp_i, -1.0)
    # NIW deadlines (cumulative, EDF), in thousands of requests so these rows stay near the others' scale:
    # done[m,h] = done[m,h-1] + 3.6 * sum xn[., m, h];  due <= done + s_niw <= arrived
    due, arrived = _due_and_arrived(p)
    rk = rows.block((M, H), 0.0, 0.0)
    rows.put(rk, done_i, 1.0)
    rows.put(rk[:, 1:], done_i[:, :-1], -1.0)
    rows.put(rk[model_of][None, :, :], xn_i, -3.6)
    rn = rows.block((M, H), due / 1e3, np.maximum(arrived, due) / 1e3)
    rows.put(rn, done_i, 1.0)
    rows.put(rn, sniw_i, 1.0)

    integer = np.zeros(cols.size, bool)
    integer[n_i.ravel()] = True
    matrix, row_lo, row_hi = rows.matrix(cols.size), np.concatenate(rows.lo), np.concatenate(rows.hi)
    dive = _dive_start(cost, matrix, row_lo, row_hi, lo, hi, cols, time_limit_s, (pool_gpus, gpus, gpu_of))
    start = None
    if dive is not None:
        start = dive.x.copy()
        start[n_i.ravel()] = np.rint(start[n_i.ravel()])
    sol = solve(
        cost,
        matrix,
        row_lo,
        row_hi,
        lo,
        hi,
        integer=integer,
        maximize=False,
        time_limit_s=max(1.0, time_limit_s - (time.perf_counter() - began)),
        mip_rel_gap=mip_rel_gap,
        start=start,
    )
    notes = [
        f"{R} regions x {M} models x {J} configs x {H} h: {cols.size:,} columns ({int(integer.sum()):,} integer)"
    ]
    if dive is not None and (not sol.ok or dive.objective < sol.objective - 1e-6 * abs(dive.objective)):
        # out of time before HiGHS had (or accepted) an incumbent this good: the dive's own solution
        bound = sol.objective / (1 - sol.mip_gap) if sol.ok and sol.mip_gap < 1 else math.nan
        gap = 1 - bound / dive.objective if bound == bound and dive.objective > 0 else math.nan
        sol = replace(dive, status=sol.status if sol.ok else "time_limit", mip_gap=gap)
        notes.append("the MILP found nothing better than the LP dive in time: the dive's solution")
    if not sol.ok:
        raise RuntimeError(f"fleet MILP ended {sol.status}; the elastic model should always be feasible")
    x = sol.x
    routed = np.zeros((R, R, M, H))
    y = cols.take(x, "y")
    for q, (o, r) in enumerate(pairs):
        routed[o, r] = y[q]
    xn = cols.take(x, "xn")
    niw = np.zeros((R, M, H))
    np.add.at(niw, (slice(None), model_of, slice(None)), xn * 3600.0)
    return FleetPlan(
        counts=np.rint(cols.take(x, "n")).astype(np.int64),
        iw_routed=np.maximum(routed, 0.0),
        niw_served=np.maximum(niw, 0.0),
        gpus_od=cols.take(x, "od"),
        gpus_spot=cols.take(x, "sp"),
        iw_short=np.where(cols.take(x, "siw") > _TOL, cols.take(x, "siw"), 0.0),
        niw_short=np.where(cols.take(x, "sniw") > 5e-4, cols.take(x, "sniw") * 1e3, 0.0),
        status=sol.status,
        mip_gap=sol.mip_gap,
        solve_seconds=time.perf_counter() - began,  # relaxation, the RENS start and the MILP
        num_columns=cols.size,
        num_integers=int(integer.sum()),
        notes=tuple(notes),
    )
