"""Lower level: route the request types over fixed replicas to sustain the largest common load scale alpha.

Replicas of one config are interchangeable, so the LP works per config group ``g`` with ``n_g`` replicas. With
``y_kg`` the share of type ``k``'s (scaled) load sent to group ``g``::

    maximise alpha
    subject to   sum_g y_kg = alpha                              for every type k with rate_k > 0   (demand)
                 sum_k rate_k * y_kg / mu_kg <= cap * n_g        for every group g                  (capacity)
                 y_kg >= 0, and y_kg = 0 where mu_kg = 0

Alpha >= 1 means the replicas carry the workload within the SLO with ``1 - 1/alpha`` to spare. The demand rows'
duals are the types' shares of the bottleneck (they sum to 1); a capacity row's dual is the alpha one more unit of
that group's capacity would add, so ``cap * dual`` prices one more replica of the config, including configs the
deployment does not use yet (``n_g = 0``) — the refinement's guide. A second solve at fixed alpha picks, among the
optimal routings, the one that spends the least replica time (each type where it is served most cheaply).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from oserve.planner.lp import solve

__all__ = ["FlowResult", "max_load_scale"]


@dataclass(frozen=True, slots=True)
class FlowResult:
    """The LP's answer; arrays are (types x groups) or per type / per group."""

    alpha: float
    shares: np.ndarray  # types x groups: fraction of each type's load sent to each group (rows sum to 1)
    utilisation: np.ndarray  # per group: busy fraction of its replicas at load alpha (0 where n_g = 0)
    type_bottleneck: np.ndarray  # per type: share of the binding demand (sums to 1 when alpha is finite)
    replica_value: np.ndarray  # per group: alpha one more replica would add (first-order)
    solve_seconds: float

    def limiting_types(self, names: list[str], top: int = 3) -> list[tuple[str, float]]:
        order = np.argsort(-self.type_bottleneck)
        return [
            (names[i], float(self.type_bottleneck[i])) for i in order[:top] if self.type_bottleneck[i] > 1e-6
        ]


def max_load_scale(
    rates_rps: np.ndarray, mu_rps: np.ndarray, counts: np.ndarray, *, cap: float = 1.0
) -> FlowResult:
    """Solve the flow LP for per-type ``rates_rps``, capacities ``mu_rps`` (types x groups), replicas ``counts``."""
    rates = np.asarray(rates_rps, dtype=np.float64)
    mu = np.asarray(mu_rps, dtype=np.float64)
    counts = np.asarray(counts, dtype=np.float64)
    k_types, n_groups = mu.shape
    active = np.flatnonzero(rates > 0)
    empty = FlowResult(0.0, np.zeros_like(mu), np.zeros(n_groups), np.zeros(k_types), np.zeros(n_groups), 0.0)
    if active.size == 0:
        return empty
    unserved = [k for k in active if not np.any(mu[k] > 0)]
    if unserved:  # a type no config can serve within the SLO: nothing scales
        bottleneck = np.zeros(k_types)
        bottleneck[unserved] = 1.0 / len(unserved)
        return FlowResult(0.0, np.zeros_like(mu), np.zeros(n_groups), bottleneck, np.zeros(n_groups), 0.0)

    pairs = [(k, g) for k in active for g in range(n_groups) if mu[k, g] > 0]
    n_vars = 1 + len(pairs)  # alpha, then y_kg
    demand_row = {k: i for i, k in enumerate(active)}
    rows, cols, vals = [], [], []
    for i in range(len(active)):
        rows.append(i)
        cols.append(0)
        vals.append(-1.0)
    base = len(active)
    for j, (k, g) in enumerate(pairs, start=1):
        rows += [demand_row[k], base + g]
        cols += [j, j]
        vals += [1.0, rates[k] / mu[k, g]]
    matrix = sp.coo_matrix((vals, (rows, cols)), shape=(base + n_groups, n_vars))
    row_lo = np.concatenate([np.zeros(base), np.full(n_groups, -np.inf)])
    row_hi = np.concatenate([np.zeros(base), cap * counts])
    col_lo = np.zeros(n_vars)
    col_hi = np.full(n_vars, np.inf)
    cost = np.zeros(n_vars)
    cost[0] = 1.0
    first = solve(cost, matrix, row_lo, row_hi, col_lo, col_hi)
    if not first.ok:
        return empty
    alpha = float(first.x[0])
    duals = np.abs(first.row_duals) if first.row_duals.size else np.zeros(base + n_groups)
    bottleneck = np.zeros(k_types)
    bottleneck[active] = duals[:base]
    total = bottleneck.sum()
    if total > 0:
        bottleneck /= total
    value = cap * duals[base:]
    seconds = first.solve_seconds

    # among the optimal routings, the one that spends the least replica time
    x = first.x
    if alpha > 0:
        col_lo[0] = col_hi[0] = alpha * (1 - 1e-7)
        work = np.zeros(n_vars)
        work[1:] = [rates[k] / mu[k, g] for k, g in pairs]
        second = solve(work, matrix, row_lo, row_hi, col_lo, col_hi, maximize=False)
        seconds += second.solve_seconds
        if second.ok:
            x = second.x
    shares = np.zeros_like(mu)
    used = np.zeros(n_groups)
    for j, (k, g) in enumerate(pairs, start=1):
        shares[k, g] = x[j]
        used[g] += rates[k] * x[j] / mu[k, g]
    row_sum = shares.sum(axis=1, keepdims=True)
    shares = np.divide(shares, row_sum, out=np.zeros_like(shares), where=row_sum > 0)
    utilisation = np.divide(used, counts, out=np.zeros(n_groups), where=counts > 0)
    return FlowResult(alpha, shares, utilisation, bottleneck, value, seconds)
