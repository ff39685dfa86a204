"""Performance model: per-iteration time and KV capacity of a replica, calibrated to measurements.

Public surface: ``CostModel`` and ``BatchStats`` (iteration time, KV capacity), ``Calibration`` and
``builtin_calibration`` (efficiency factors per GPU family), ``calibrate_from_profiles`` (fit them to per-op
profiles), ``fit_points`` / ``predict_points`` (fit a serving stack from a few whole-iteration measurements).
"""

from oserve.perf.calibration import (
    Calibration,
    GpuCalibration,
    StackFactors,
    builtin_calibration,
    calibrate_from_profiles,
)
from oserve.perf.costmodel import BatchStats, CostModel, MemoryPlan

__all__ = [
    "BatchStats",
    "Calibration",
    "CostModel",
    "GpuCalibration",
    "MemoryPlan",
    "StackFactors",
    "builtin_calibration",
    "calibrate_from_profiles",
]
