"""Latency mode: when the cluster has capacity to spare, spend it on latency instead of unused throughput.

Maximising the load scale alpha is right near saturation; at 50% load it picks many small replicas whose every
request is slower than on a wide one. So when the best alpha clears ``headroom`` (the demand with margin), the
planner solves a second MILP over the same capacities: keep alpha >= ``headroom`` and minimise the rate-weighted
mean of each type's unloaded E2E latency on the config it is routed to::

    minimise     sum_kc rate_k * y_kc * latency_kc / sum_k rate_k
    subject to   sum_c y_kc = 1                                           (every type with load)
                 sum_k headroom * rate_k * y_kc / mu_kc - cap * n_c <= 0  (every config)
                 packing rows @ n <= limits

``counts`` given: the same with the replicas fixed (an LP): how fast a running deployment serves the demand.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from oserve.planner.capacity import CapacityModel
from oserve.planner.demand import TypeDemand
from oserve.planner.lp import solve
from oserve.planner.placement import PackingRows
from oserve.spec import ReplicaConfig

__all__ = ["LatencyResult", "latency_matrix", "min_latency"]


@dataclass(frozen=True, slots=True)
class LatencyResult:
    mean_latency_s: float  # inf when the demand x headroom does not fit
    counts: np.ndarray
    shares: np.ndarray  # types x configs: each type's share routed to each config (rows sum to 1)
    status: str


def latency_matrix(
    capm: CapacityModel, demands: Sequence[TypeDemand], configs: Sequence[ReplicaConfig]
) -> np.ndarray:
    """Unloaded E2E (s) of each type's mean request on each config: TTFT + (output - 1) x TPOT."""
    out = np.empty((len(demands), len(configs)))
    for k, d in enumerate(demands):
        for j, c in enumerate(configs):
            ttft, tpot = capm.unloaded(c, d.prompt_tokens, d.output_tokens)
            out[k, j] = ttft + max(0.0, d.output_tokens - 1) * tpot
    return out


def min_latency(
    rates_rps: np.ndarray,
    mu_rps: np.ndarray,
    latency_s: np.ndarray,
    packing: PackingRows,
    *,
    headroom: float,
    cap: float = 1.0,
    counts: np.ndarray | None = None,
    time_limit_s: float | None = 10.0,
) -> LatencyResult:
    """The counts (or, with ``counts``, just the routing) that serve ``headroom`` x the demand at the least mean
    unloaded latency."""
    rates = np.asarray(rates_rps, dtype=np.float64)
    mu = np.asarray(mu_rps, dtype=np.float64)
    k_types, n_cfg = mu.shape
    active = [k for k in range(k_types) if rates[k] > 0]
    pairs = [(k, c) for k in active for c in range(n_cfg) if mu[k, c] > 0]
    none = np.zeros(n_cfg, np.int64) if counts is None else np.asarray(counts)
    empty = np.zeros((k_types, n_cfg))
    if not active or any(not np.any(mu[k] > 0) for k in active):
        return LatencyResult(np.inf, none, empty, "infeasible")
    n_vars = n_cfg + len(pairs)  # n_c | y_kc
    total = rates[active].sum()
    cap_base = len(active)
    pack_base = cap_base + n_cfg
    demand_row = {k: i for i, k in enumerate(active)}
    rows, cols, vals = [], [], []
    for c in range(n_cfg):
        rows.append(cap_base + c)
        cols.append(c)
        vals.append(-cap)
        for r in np.flatnonzero(packing.coeffs[:, c]):
            rows.append(pack_base + r)
            cols.append(c)
            vals.append(packing.coeffs[r, c])
    cost = np.zeros(n_vars)
    for j, (k, c) in enumerate(pairs, start=n_cfg):
        rows += [demand_row[k], cap_base + c]
        cols += [j, j]
        vals += [1.0, headroom * rates[k] / mu[k, c]]
        cost[j] = rates[k] * latency_s[k, c] / total
    n_rows = pack_base + len(packing.limits)
    matrix = sp.coo_matrix((vals, (rows, cols)), shape=(n_rows, n_vars))
    row_lo = np.concatenate([np.ones(cap_base), np.full(n_cfg + len(packing.limits), -np.inf)])
    row_hi = np.concatenate([np.ones(cap_base), np.zeros(n_cfg), packing.limits])
    col_lo = np.zeros(n_vars)
    col_hi = np.full(n_vars, np.inf)
    integer = np.zeros(n_vars, bool)
    if counts is None:
        integer[:n_cfg] = True
        for c in range(n_cfg):
            col_hi[c] = packing.max_count(np.zeros(n_cfg), c)
    else:
        col_lo[:n_cfg] = col_hi[:n_cfg] = np.asarray(counts, dtype=np.float64)
    sol = solve(
        cost,
        matrix,
        row_lo,
        row_hi,
        col_lo,
        col_hi,
        integer=integer if integer.any() else None,
        time_limit_s=time_limit_s,
        maximize=False,
    )
    if not sol.ok:
        return LatencyResult(np.inf, none, empty, sol.status)
    shares = empty.copy()
    for j, (k, c) in enumerate(pairs, start=n_cfg):
        shares[k, c] = max(0.0, sol.x[j])
    counts_out = np.rint(sol.x[:n_cfg]).astype(np.int64)
    return LatencyResult(float(sol.objective), counts_out, shares, sol.status)
