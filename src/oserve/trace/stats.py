"""Length percentiles and per-window summaries of a trace (what ``oserve trace stats`` prints)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from oserve.errors import ConfigError
from oserve.trace.core import Trace

__all__ = [
    "LengthStats",
    "TraceStats",
    "WindowStats",
    "length_stats",
    "trace_stats",
    "window_index",
    "window_stats",
]


@dataclass(frozen=True, slots=True)
class LengthStats:
    """Distribution of a length column, in tokens (zeros when there are no requests)."""

    mean: float = 0.0
    p50: float = 0.0
    p90: float = 0.0
    p99: float = 0.0
    max: float = 0.0

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def length_stats(values: np.ndarray) -> LengthStats:
    if len(values) == 0:
        return LengthStats()
    p50, p90, p99 = np.quantile(values, [0.5, 0.9, 0.99])
    return LengthStats(float(values.mean()), float(p50), float(p90), float(p99), float(values.max()))


@dataclass(frozen=True, slots=True)
class TraceStats:
    """Whole-trace figures: size, span (s), mean rate (req/s) and length distributions (tokens)."""

    name: str
    num_requests: int
    duration_s: float
    rate_rps: float
    prompt: LengthStats
    output: LengthStats

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "num_requests": self.num_requests,
            "duration_s": self.duration_s,
            "rate_rps": self.rate_rps,
            "prompt_tokens": self.prompt.to_dict(),
            "output_tokens": self.output.to_dict(),
        }


def trace_stats(trace: Trace) -> TraceStats:
    return TraceStats(
        trace.name,
        len(trace),
        trace.duration_s,
        trace.rate_rps,
        length_stats(trace.prompt_tokens),
        length_stats(trace.output_tokens),
    )


def window_index(trace: Trace, window_s: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(window of each request, window start times s, window lengths s); the last window may be shorter."""
    if not window_s > 0:
        raise ConfigError(f"window must be > 0 s, got {window_s}")
    count = max(1, math.ceil(trace.duration_s / window_s))
    starts = np.arange(count, dtype=np.float64) * window_s
    lengths = np.minimum(window_s, trace.duration_s - starts)
    lengths = np.where(lengths > 0, lengths, window_s)  # zero-length trace: one nominal window
    which = np.minimum((trace.arrival_s // window_s).astype(np.int64), count - 1)
    return which, starts, lengths


@dataclass(frozen=True, slots=True)
class WindowStats:
    """One window: start and length (s), requests, rate (req/s), length distributions (tokens)."""

    start_s: float
    duration_s: float
    num_requests: int
    rate_rps: float
    prompt: LengthStats
    output: LengthStats

    def to_dict(self) -> dict[str, Any]:
        return {
            "start_s": self.start_s,
            "duration_s": self.duration_s,
            "num_requests": self.num_requests,
            "rate_rps": self.rate_rps,
            "prompt_tokens": self.prompt.to_dict(),
            "output_tokens": self.output.to_dict(),
        }


def _grouped(values: np.ndarray, which: np.ndarray, count: int) -> list[LengthStats]:
    frame = pd.DataFrame({"w": which, "v": values})
    grouped = frame.groupby("w")["v"]
    table = pd.concat(
        [
            grouped.mean().rename("mean"),
            grouped.quantile(0.5).rename("p50"),
            grouped.quantile(0.9).rename("p90"),
            grouped.quantile(0.99).rename("p99"),
            grouped.max().rename("max"),
        ],
        axis=1,
    ).reindex(range(count), fill_value=0.0)
    return [LengthStats(*map(float, row)) for row in table.itertuples(index=False)]  # one per window


def window_stats(trace: Trace, window_s: float) -> list[WindowStats]:
    """Rate and length percentiles per ``window_s``-second window (vectorised group-by)."""
    which, starts, lengths = window_index(trace, window_s)
    counts = np.bincount(which, minlength=len(starts))
    prompts = _grouped(trace.prompt_tokens, which, len(starts))
    outputs = _grouped(trace.output_tokens, which, len(starts))
    return [
        WindowStats(float(s), float(d), int(c), float(c / d), p, o)
        for s, d, c, p, o in zip(starts, lengths, counts, prompts, outputs, strict=True)
    ]
