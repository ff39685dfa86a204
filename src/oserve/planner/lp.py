"""One thin door to HiGHS (``highspy``): a sparse LP / MILP in, values, duals and status out.

The planner's flow LP, its exact MILP and the fleet's ILP all build ``scipy.sparse`` constraint matrices and call
``solve``; HiGHS's own types stay behind this module.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass

import highspy
import numpy as np
import scipy.sparse as sp

__all__ = ["LpSolution", "describe_mip", "solve"]

INF = highspy.kHighsInf


@dataclass(frozen=True, slots=True)
class LpSolution:
    """``status`` is ``optimal``, ``time_limit`` (best found so far in ``x``), ``infeasible`` or ``unbounded``."""

    status: str
    objective: float
    x: np.ndarray
    row_duals: np.ndarray  # empty for a MILP
    mip_gap: float
    solve_seconds: float

    @property
    def ok(self) -> bool:
        return self.status in ("optimal", "time_limit") and self.x.size > 0


_BANNER_SILENCED = False


def _new_highs() -> highspy.Highs:
    """A ``Highs`` instance. The first one a process builds prints HiGHS's copyright banner on the C-level stdout
    before any option can turn logging off; it is built with that descriptor pointed at /dev/null."""
    global _BANNER_SILENCED
    if _BANNER_SILENCED:
        return highspy.Highs()
    sys.stdout.flush()
    try:
        saved = os.dup(1)
    except OSError:  # no stdout descriptor at all: nothing to print the banner on
        return highspy.Highs()
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 1)
            h = highspy.Highs()
    finally:
        os.dup2(saved, 1)
        os.close(saved)
    _BANNER_SILENCED = True
    return h


def solve(
    cost: np.ndarray,
    matrix: sp.spmatrix,
    row_lower: np.ndarray,
    row_upper: np.ndarray,
    col_lower: np.ndarray,
    col_upper: np.ndarray,
    *,
    integer: np.ndarray | None = None,
    maximize: bool = True,
    time_limit_s: float | None = None,
    mip_rel_gap: float = 1e-6,
    start: np.ndarray | None = None,
) -> LpSolution:
    """Optimise ``cost @ x`` subject to ``row_lower <= matrix @ x <= row_upper`` and the column bounds.

    ``integer`` is a boolean mask of integer columns (a MILP); bounds may be ``±np.inf``. ``start`` is a MILP's
    starting point, NaN where unknown (HiGHS completes a partial one by solving for the rest).
    """
    a = sp.csc_matrix(matrix, dtype=np.float64)
    n_rows, n_cols = a.shape
    lp = highspy.HighsLp()
    lp.num_col_, lp.num_row_ = n_cols, n_rows
    lp.col_cost_ = np.asarray(cost, dtype=np.float64)
    lp.col_lower_ = _bounds(col_lower)
    lp.col_upper_ = _bounds(col_upper)
    lp.row_lower_ = _bounds(row_lower)
    lp.row_upper_ = _bounds(row_upper)
    lp.sense_ = highspy.ObjSense.kMaximize if maximize else highspy.ObjSense.kMinimize
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.start_ = a.indptr.astype(np.int32)
    lp.a_matrix_.index_ = a.indices.astype(np.int32)
    lp.a_matrix_.value_ = a.data
    is_mip = integer is not None and bool(np.any(integer))
    if is_mip:
        lp.integrality_ = [
            highspy.HighsVarType.kInteger if flag else highspy.HighsVarType.kContinuous for flag in integer
        ]
    h = _new_highs()
    h.setOptionValue("output_flag", False)
    h.setOptionValue("threads", 1)
    if time_limit_s is not None:
        h.setOptionValue("time_limit", float(time_limit_s))
    if is_mip:
        h.setOptionValue("mip_rel_gap", float(mip_rel_gap))
    began = time.perf_counter()
    h.passModel(lp)
    if is_mip and start is not None:
        known = np.flatnonzero(~np.isnan(start)).astype(np.int32)
        h.setSolution(int(known.size), known, np.asarray(start, dtype=np.float64)[known])
    h.run()
    elapsed = time.perf_counter() - began
    status = _status(h.getModelStatus())
    solution = h.getSolution()
    info = h.getInfo()
    x = np.asarray(solution.col_value, dtype=np.float64)
    if status not in ("optimal", "time_limit") or (status == "time_limit" and not solution.value_valid):
        x = np.empty(0)
    duals = (
        np.asarray(solution.row_dual, dtype=np.float64)
        if (not is_mip and solution.dual_valid)
        else np.empty(0)
    )
    gap = float(info.mip_gap) if is_mip else 0.0
    return LpSolution(status, float(info.objective_function_value), x, duals, gap, elapsed)


def describe_mip(status: str, seconds: float, gap: float) -> str:
    """What an exact solve proved, in words: optimal, or how far its best answer may be from the optimum."""
    if status == "optimal" and gap <= 1e-4:
        return f"MILP: proven optimal in {seconds:.3f} s"
    if status in ("optimal", "time_limit"):
        why = "time limit" if status == "time_limit" else "relative-gap tolerance"
        return f"MILP: stopped at its {why} after {seconds:.3f} s, within {gap:.2%} of the proven optimum"
    return f"MILP: {status} after {seconds:.3f} s"


def _bounds(values: np.ndarray) -> np.ndarray:
    out = np.asarray(values, dtype=np.float64).copy()
    out[np.isposinf(out)] = INF
    out[np.isneginf(out)] = -INF
    return out


def _status(model_status: object) -> str:
    s = highspy.HighsModelStatus
    if model_status == s.kOptimal:
        return "optimal"
    if model_status == s.kTimeLimit:
        return "time_limit"
    if model_status == s.kInfeasible:
        return "infeasible"
    if model_status in (s.kUnbounded, s.kUnboundedOrInfeasible):
        return "unbounded"
    return str(model_status).rsplit(".", 1)[-1]
