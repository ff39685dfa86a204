"""Forecast -> MILP window: build a ``FleetProblem`` from the fleet, its workload history and the current state.

``FleetContext`` holds what every plan shares (pools and prices as arrays, per-region lead and load times, the
hourly history); ``make_problem`` forecasts the window's IW and NIW load from the history before ``origin_h``
only, scales IW by the within-hour peak factor (at least 1 / the NIW fill cap), and folds the NIW already queued into the backlog.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from oserve.adapt.forecast import Forecaster
from oserve.fleet.capacity import CapacityTable
from oserve.fleet.forecast import fleet_forecaster, forecast_series
from oserve.fleet.ilp import FleetPlan, FleetProblem, solve_fleet
from oserve.fleet.spec import FleetSpec
from oserve.fleet.workload import FleetWorkload

__all__ = ["FleetContext", "fitted_forecaster", "make_problem", "plan_window"]


@dataclass(frozen=True, slots=True, eq=False)
class FleetContext:
    fleet: FleetSpec
    workload: FleetWorkload
    gpu_names: tuple[str, ...]
    pools_od: np.ndarray  # regions x GPU types
    pools_spot: np.ndarray
    price_od: np.ndarray
    price_spot: np.ndarray
    lead_min: np.ndarray  # regions
    load_min: np.ndarray  # regions x models
    latency_ms: np.ndarray
    hourly: np.ndarray  # (regions * models * tiers) x hours, req/s
    peak_factor: np.ndarray  # regions x models
    spot_eviction_per_h: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))  # regions x GPU types
    cache: dict[Any, Any] = field(default_factory=dict)  # fitted forecasters shared by the policies of a run

    @classmethod
    def build(cls, fleet: FleetSpec, workload: FleetWorkload) -> FleetContext:
        gpus = tuple(g.name for g in fleet.gpu_types())
        shape = (len(fleet.regions), len(gpus))
        od, spot, p_od, p_spot, evict = (np.zeros(shape) for _ in range(5))
        for r, region in enumerate(fleet.regions):
            for pool in region.pools:
                g = gpus.index(pool.gpu.name)
                od[r, g], spot[r, g] = pool.on_demand, pool.spot
                evict[r, g] = pool.spot_eviction_per_h
                p_od[r, g], p_spot[r, g] = pool.price_per_hour, pool.spot_price_per_hour
        for g in range(len(gpus)):  # a region without this type: price it like the others (it holds none)
            have = p_od[:, g] > 0
            if have.any():
                p_od[~have, g] = p_od[have, g].max()
                p_spot[~have, g] = p_spot[have, g].max()
        load = np.array([[fleet.load_min(r, m) for m in range(len(fleet.models))] for r in range(shape[0])])
        hourly = workload.hourly_rps()
        return cls(
            fleet,
            workload,
            gpus,
            od,
            spot,
            p_od,
            p_spot,
            np.array([r.scale_out_lead_min for r in fleet.regions], dtype=np.float64),
            load,
            np.array(fleet.latency_ms, dtype=np.float64),
            hourly.reshape(-1, hourly.shape[-1]),
            workload.peak_factor(),
            evict,
        )

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.fleet.regions), len(self.fleet.models)


def make_problem(
    ctx: FleetContext,
    table: CapacityTable,
    forecaster: Forecaster,
    origin_h: int,
    horizon_h: int,
    *,
    current: np.ndarray | None = None,
    backlog_by_hour: np.ndarray | None = None,
    ahead_h: int = 1,
    bias: float = 0.0,
    instant: bool = False,
) -> FleetProblem:
    """The window of hours ``origin_h + ahead_h ..`` planned at the start of hour ``origin_h``.

    ``backlog_by_hour`` (models x absolute due hour) is the NIW queue; ``current`` (regions x configs) the
    instances serving or on their way; ``bias`` scales every forecast (sensitivity runs); ``instant`` plans a
    fresh start (no lead-time loss in the first hour).
    """
    R, M = ctx.shape
    T = 2
    f = forecast_series(ctx.hourly, origin_h, ahead_h + horizon_h, forecaster) * (1.0 + bias)
    f = f.reshape(R, M, T, ahead_h + horizon_h)
    # IW capacity covers the hour's busiest minutes (peak factor) and holds its mean at the NIW fill cap, so
    # NIW can run beside IW (``simulate.tier_split``) on the instances the MILP shares between the tiers
    iw = f[:, :, 0, ahead_h:] * np.maximum(ctx.peak_factor, 1.0 / table.fill_cap)[:, :, None]
    niw_rps = f[:, :, 1].sum(axis=0)  # models x (ahead + horizon)
    niw = niw_rps[:, ahead_h:] * 3600.0
    d = max(1, round(ctx.fleet.niw_deadline_h))
    start = origin_h + ahead_h
    backlog = np.zeros((M, horizon_h))
    if backlog_by_hour is not None:
        for m in range(M):
            due = np.flatnonzero(backlog_by_hour[m] > 0)
            # a request in due bucket b must be served by the end of hour b - 1
            rel = np.clip(due - 1 - start, 0, horizon_h - 1)
            np.add.at(backlog[m], rel, backlog_by_hour[m, due])
    for k in range(ahead_h):  # NIW forecast to arrive before the window: due d - 1 hours after its hour
        rel = min(horizon_h - 1, max(0, origin_h + k + d - 1 - start))
        backlog[:, rel] += niw_rps[:, k] * 3600.0
    hours = np.arange(horizon_h)
    delay = ctx.lead_min[:, None] + ctx.load_min  # regions x models, minutes
    late = np.clip(delay[:, :, None] - 60.0 * (hours + ahead_h)[None, None, :], 0.0, 60.0) / 60.0
    loss = np.zeros_like(late) if instant else late
    return FleetProblem(
        iw_rps=iw,
        niw_arrivals=niw,
        niw_backlog=backlog,
        deadline_h=d,
        table=table,
        pools_od=ctx.pools_od,
        pools_spot=ctx.pools_spot,
        price_od=ctx.price_od,
        price_spot=ctx.price_spot,
        current=np.zeros((R, len(table.configs))) if current is None else current,
        loss=loss,
        load_h=ctx.load_min / 60.0,
        latency_ms=ctx.latency_ms,
        max_route_ms=ctx.fleet.max_route_latency_ms,
        objective=ctx.fleet.objective,
        region_names=tuple(ctx.fleet.region_names),
        model_names=tuple(ctx.fleet.model_names),
        start_hour=start,
    )


def fitted_forecaster(ctx: FleetContext, name: str, upto_h: int) -> Forecaster:
    """``name`` fitted on the hours before ``upto_h`` (once per context: the planned policies share it)."""
    key = ("forecaster", name, upto_h)
    if key not in ctx.cache:
        f = fleet_forecaster(name)
        f.fit(ctx.hourly[:, :upto_h].T)
        ctx.cache[key] = f
    return ctx.cache[key]


def plan_window(problem: FleetProblem, *, time_limit_s: float = 10.0) -> FleetPlan:
    return solve_fleet(problem, time_limit_s=time_limit_s)
