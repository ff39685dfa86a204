"""The exact optimum over the same model: choose replica counts per config and the routing together (a MILP).

Integer ``n_c`` replicas of every candidate config, the flow LP's shares ``y_kc`` and alpha, plus the packing rows
of ``placement`` so the counts fit the nodes::

    maximise alpha
    subject to   sum_c y_kc = alpha                                  (every type with load)
                 sum_k rate_k * y_kc / mu_kc - cap * n_c <= 0        (every config)
                 packing rows @ n <= limits                           (TP groups fit the nodes)

Small: (types x configs) continuous and (configs) integer columns however many GPUs the cluster has, so HiGHS
solves it in well under a second at 1,024 GPUs; ``time_limit_s`` bounds it anyway (the answer then says so).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from oserve.planner.lp import solve
from oserve.planner.placement import PackingRows

__all__ = ["MilpResult", "optimal_counts"]


@dataclass(frozen=True, slots=True)
class MilpResult:
    alpha: float
    counts: np.ndarray  # replicas per config
    status: str  # optimal | time_limit | infeasible | ...
    mip_gap: float
    solve_seconds: float


def optimal_counts(
    rates_rps: np.ndarray,
    mu_rps: np.ndarray,
    packing: PackingRows,
    *,
    cap: float = 1.0,
    time_limit_s: float | None = 60.0,
) -> MilpResult:
    """The counts per config (columns of ``mu_rps``) that maximise alpha, with the optimality gap HiGHS proved."""
    rates = np.asarray(rates_rps, dtype=np.float64)
    mu = np.asarray(mu_rps, dtype=np.float64)
    k_types, n_cfg = mu.shape
    active = [k for k in range(k_types) if rates[k] > 0]
    pairs = [(k, c) for k in active for c in range(n_cfg) if mu[k, c] > 0]
    if not active or any(not np.any(mu[k] > 0) for k in active):
        return MilpResult(0.0, np.zeros(n_cfg, np.int64), "infeasible", 0.0, 0.0)
    n_vars = 1 + n_cfg + len(pairs)  # alpha | n_c | y_kc
    demand_row = {k: i for i, k in enumerate(active)}
    cap_base = len(active)
    pack_base = cap_base + n_cfg
    rows, cols, vals = [], [], []
    for i in range(len(active)):
        rows.append(i)
        cols.append(0)
        vals.append(-1.0)
    for c in range(n_cfg):
        rows.append(cap_base + c)
        cols.append(1 + c)
        vals.append(-cap)
        for r in np.flatnonzero(packing.coeffs[:, c]):
            rows.append(pack_base + r)
            cols.append(1 + c)
            vals.append(packing.coeffs[r, c])
    for j, (k, c) in enumerate(pairs, start=1 + n_cfg):
        rows += [demand_row[k], cap_base + c]
        cols += [j, j]
        vals += [1.0, rates[k] / mu[k, c]]
    n_rows = pack_base + len(packing.limits)
    matrix = sp.coo_matrix((vals, (rows, cols)), shape=(n_rows, n_vars))
    row_lo = np.concatenate([np.zeros(cap_base), np.full(n_cfg + len(packing.limits), -np.inf)])
    row_hi = np.concatenate([np.zeros(cap_base), np.zeros(n_cfg), packing.limits])
    col_hi = np.full(n_vars, np.inf)
    for c in range(n_cfg):
        col_hi[1 + c] = packing.max_count(np.zeros(n_cfg), c)
    integer = np.zeros(n_vars, bool)
    integer[1 : 1 + n_cfg] = True
    cost = np.zeros(n_vars)
    cost[0] = 1.0
    sol = solve(
        cost, matrix, row_lo, row_hi, np.zeros(n_vars), col_hi, integer=integer, time_limit_s=time_limit_s
    )
    if not sol.ok:
        return MilpResult(0.0, np.zeros(n_cfg, np.int64), sol.status, sol.mip_gap, sol.solve_seconds)
    counts = np.rint(sol.x[1 : 1 + n_cfg]).astype(np.int64)
    return MilpResult(float(sol.x[0]), counts, sol.status, sol.mip_gap, sol.solve_seconds)
