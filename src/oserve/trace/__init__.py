"""Traces: one columnar ``Trace`` value, loaders for public trace formats, transforms, request typing.

load_trace(path) -> Trace            azure (2023/2024), mooncake, burstgpt, plain (CSV/Parquet), gzip ok
window / truncate / scale_rate / concat / blend / alternate / clip_lengths  -> Trace
TypeGrid.for_types(trace, 6).classify(trace) -> type index per request
measure_workload / workload_series   -> per-type rates (req/s) and length statistics
"""

from oserve.trace.classify import (
    DEFAULT_NUM_TYPES,
    LiveClassifier,
    OnlineClassifier,
    RequestType,
    TypeGrid,
    classify,
)
from oserve.trace.core import PLAIN_COLUMNS, LoadReport, Trace
from oserve.trace.formats import FORMATS, TraceFormat, detect_format, format_names
from oserve.trace.loaders import load_trace
from oserve.trace.stats import LengthStats, TraceStats, WindowStats, length_stats, trace_stats, window_stats
from oserve.trace.transforms import alternate, blend, clip_lengths, concat, scale_rate, truncate, window
from oserve.trace.workload import TypeLoad, Workload, WorkloadSeries, measure_workload, workload_series

__all__ = [
    "DEFAULT_NUM_TYPES",
    "FORMATS",
    "PLAIN_COLUMNS",
    "LengthStats",
    "LiveClassifier",
    "LoadReport",
    "OnlineClassifier",
    "RequestType",
    "Trace",
    "TraceFormat",
    "TraceStats",
    "TypeGrid",
    "TypeLoad",
    "WindowStats",
    "Workload",
    "WorkloadSeries",
    "alternate",
    "blend",
    "classify",
    "clip_lengths",
    "concat",
    "detect_format",
    "format_names",
    "length_stats",
    "load_trace",
    "measure_workload",
    "scale_rate",
    "trace_stats",
    "truncate",
    "window",
    "window_stats",
    "workload_series",
]
