"""Fit a serving stack's factors to a handful of whole-iteration measurements, and predict with them.

Points are CSV rows ``model,gpu,tp,pp,phase,num_seqs,length,seconds``: ``prefill`` is one forward pass over
``num_seqs`` prompts of ``length`` tokens; ``decode`` is one step of ``num_seqs`` sequences with ``length`` tokens
of context each. The fit adjusts the stack factors per GPU type (:class:`StackFactors`) on top of the calibration:
kernel scales in log space under a strong prior (the calibration's measured efficiencies), the per-step overhead
and the all-reduce skew per GPU freely, so that a few points of one TP degree predict the others.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import least_squares

from oserve.errors import CalibrationError, OServeError
from oserve.perf.calibration import Calibration, StackFactors, builtin_calibration
from oserve.perf.costmodel import CostModel
from oserve.spec.gpu import get_gpu
from oserve.spec.model import get_model
from oserve.spec.replica import ReplicaConfig

__all__ = ["POINT_COLUMNS", "FitResult", "fit_points", "predict_points", "read_points"]

POINT_COLUMNS = ("model", "gpu", "tp", "pp", "phase", "num_seqs", "length", "seconds")


def read_points(path: Path | str, *, need_seconds: bool = True) -> pd.DataFrame:
    """Read and validate a measurement (or query) CSV; errors name the file, line and column."""
    path = Path(path)
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except FileNotFoundError as exc:
        raise CalibrationError(f"points file not found: {path}") from exc
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise CalibrationError(f"{path}: not a readable CSV: {exc}") from exc
    raw.columns = [c.strip().lower() for c in raw.columns]
    required = [c for c in POINT_COLUMNS if need_seconds or c != "seconds"]
    missing = [c for c in required if c not in raw.columns]
    if missing:
        raise CalibrationError(f"{path}: missing columns {missing}; expected {','.join(POINT_COLUMNS)}")
    if raw.empty:
        raise CalibrationError(f"{path}: no rows")
    records: list[dict[str, object]] = []
    for i, row in enumerate(raw.to_dict("records")):
        line = i + 2  # the header is line 1
        try:
            rec: dict[str, object] = dict(row)
            for col in ("tp", "pp", "num_seqs", "length"):
                value = int(str(row[col]).strip())
                if value < 1:
                    raise ValueError(f"{col} must be >= 1, got {value}")
                rec[col] = value
            phase = str(row["phase"]).strip().lower()
            if phase not in ("prefill", "decode"):
                raise ValueError(f"phase must be 'prefill' or 'decode', got {row['phase']!r}")
            rec["phase"] = phase
            rec["model"], rec["gpu"] = str(row["model"]).strip(), str(row["gpu"]).strip()
            if need_seconds:
                seconds = float(row["seconds"])
                if not np.isfinite(seconds) or seconds <= 0:
                    raise ValueError(f"seconds must be a positive number, got {row['seconds']!r}")
                rec["seconds"] = seconds
            get_model(str(rec["model"]))
            ReplicaConfig(get_gpu(str(rec["gpu"])), tp=int(rec["tp"]), pp=int(rec["pp"]))  # validates tp, pp
        except (ValueError, OServeError) as exc:
            raise CalibrationError(f"{path}:{line}: {exc}") from exc
        records.append(rec)
    out = pd.DataFrame.from_records(records, columns=list(raw.columns))
    return out


def _models_for(points: pd.DataFrame, calibration: Calibration) -> list[CostModel]:
    models = []
    cache: dict[tuple[str, str, int, int], CostModel] = {}
    for row in points.itertuples(index=False):
        key = (str(row.model).strip(), str(row.gpu).strip(), int(row.tp), int(row.pp))
        if key not in cache:
            replica = ReplicaConfig(get_gpu(key[1]), tp=key[2], pp=key[3])
            cache[key] = CostModel(get_model(key[0]), replica, calibration)
        models.append(cache[key])
    return models


def _predict(models: list[CostModel], points: pd.DataFrame) -> np.ndarray:
    out = np.empty(len(points))
    for i, (cm, row) in enumerate(zip(models, points.itertuples(index=False), strict=True)):
        n, length = int(row.num_seqs), int(row.length)
        out[i] = cm.prefill_time(n, length) if row.phase == "prefill" else cm.decode_time(n, length)
    return out


def predict_points(points: pd.DataFrame, calibration: Calibration | None = None) -> pd.DataFrame:
    """The rows with a ``predicted_seconds`` column added."""
    calibration = calibration or builtin_calibration()
    out = points.copy()
    out["predicted_seconds"] = _predict(_models_for(points, calibration), points)
    return out


class FitResult:
    """A fitted calibration with the fit's own error on the points."""

    def __init__(
        self,
        calibration: Calibration,
        factors: dict[str, StackFactors],
        mape_before: float,
        mape_after: float,
        num_points: int,
    ) -> None:
        self.calibration = calibration
        self.factors = factors
        self.mape_before = mape_before
        self.mape_after = mape_after
        self.num_points = num_points


# Parameters: five scales in log space (compute, memory, attention, decode attention, communication), then the
# per-step overhead (ms) and the all-reduce skew per GPU (us), both absolute so that a calibration with none
# (today's vLLM under CUDA graphs) can gain them.
_N_PARAMS = 7


def _with_factors(base: Calibration, gpu_name: str, p: np.ndarray) -> Calibration:
    """``base`` with the GPU's stack factors set from parameters ``p`` (see ``_N_PARAMS``)."""
    start = base.for_gpu(get_gpu(gpu_name))
    s = start.stack
    stack = replace(  # fields not fitted (the all-reduce launch cost) stay as the calibration has them
        s,
        compute_scale=float(s.compute_scale * np.exp(p[0])),
        memory_scale=float(s.memory_scale * np.exp(p[1])),
        attention_scale=float(s.attention_scale * np.exp(p[2])),
        decode_attention_scale=float(s.decode_attention_scale * np.exp(p[3])),
        comm_scale=float(s.comm_scale * np.exp(p[4])),
        iteration_overhead_s=float(s.iteration_overhead_s + p[5] * 1e-3),
        allreduce_skew_s_per_gpu=float(s.allreduce_skew_s_per_gpu + p[6] * 1e-6),
    )
    return base.with_gpu(gpu_name, replace(start, stack=stack))


def _fit_gpu(base: Calibration, gpu_name: str, rows: pd.DataFrame) -> Calibration:
    """Least squares on log error with the calibration as a prior: the measured kernel efficiencies move only
    when the points insist (a 10% scale change costs as much as a 2% miss on every point), while the per-step
    overhead and the all-reduce skew — what differs most between stacks on the same GPUs — move freely. So a
    few points of one TP degree leave the TP scaling the calibration measured in place."""
    y = rows["seconds"].to_numpy(float)
    start = base.for_gpu(get_gpu(gpu_name)).stack
    weights = np.sqrt(len(y)) * np.array([0.2, 0.2, 0.1, 0.1, 0.2, 0.002, 0.0005])

    def residual(p: np.ndarray) -> np.ndarray:
        pred = _predict(_models_for(rows, _with_factors(base, gpu_name, p)), rows)
        return np.concatenate([np.log(pred / y), weights * p])

    lo = np.array([-3.0] * 5 + [-start.iteration_overhead_s * 1e3, -start.allreduce_skew_s_per_gpu * 1e6])
    hi = np.array([3.0] * 5 + [200.0, 500.0])
    # start the absolute terms just inside their bounds: on a bound, trf's first step can stall at once
    x0 = np.array([0.0] * 5 + [0.1, 1.0])
    fit = least_squares(residual, x0, bounds=(lo, hi), x_scale=np.array([0.5] * 5 + [1.0, 10.0]))
    return _with_factors(base, gpu_name, fit.x)


def fit_points(points: pd.DataFrame, base: Calibration | None = None) -> FitResult:
    """Fit :class:`StackFactors` per GPU type in ``points``; returns the calibration with them applied."""
    base = base or builtin_calibration()
    if len(points) == 0:
        raise CalibrationError("no measurement points to fit")
    measured = points["seconds"].to_numpy(float)
    before = _predict(_models_for(points, base), points)
    calibration = base
    factors: dict[str, StackFactors] = {}
    for gpu_name, rows in points.groupby(points["gpu"].map(lambda g: get_gpu(str(g)).name)):
        name = str(gpu_name)
        fitted = _fit_gpu(base, name, rows).per_gpu[name]
        calibration = calibration.with_gpu(name, fitted)
        factors[name] = fitted.stack
    after = _predict(_models_for(points, calibration), points)
    calibration = replace(calibration, note=f"oserve perf fit on {len(points)} points")
    return FitResult(
        calibration,
        factors,
        float(np.mean(np.abs(before / measured - 1))),
        float(np.mean(np.abs(after / measured - 1))),
        len(points),
    )
