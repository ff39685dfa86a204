"""``Workload``: per-type arrival rates (req/s) and length statistics over a window, and their time series."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from oserve.errors import ConfigError
from oserve.trace.classify import TypeGrid
from oserve.trace.core import Trace
from oserve.trace.stats import LengthStats, length_stats, window_index
from oserve.trace.transforms import window

__all__ = ["TypeLoad", "Workload", "WorkloadSeries", "measure_workload", "workload_series"]


@dataclass(frozen=True, slots=True)
class TypeLoad:
    """One request type's share of a window: count, rate (req/s), prompt and output lengths (tokens)."""

    name: str
    count: int
    rate_rps: float
    prompt: LengthStats
    output: LengthStats

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "count": self.count,
            "rate_rps": self.rate_rps,
            "prompt_tokens": self.prompt.to_dict(),
            "output_tokens": self.output.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TypeLoad:
        return cls(
            str(d["name"]),
            int(d["count"]),
            float(d["rate_rps"]),
            LengthStats(**d["prompt_tokens"]),
            LengthStats(**d["output_tokens"]),
        )


@dataclass(frozen=True, slots=True)
class Workload:
    """Per-type load over ``[start_s, start_s + duration_s)``; types in ``grid`` order."""

    grid: TypeGrid
    start_s: float
    duration_s: float
    types: tuple[TypeLoad, ...]

    @property
    def rates_rps(self) -> np.ndarray:
        return np.array([t.rate_rps for t in self.types], dtype=np.float64)

    @property
    def total_rate_rps(self) -> float:
        return float(self.rates_rps.sum())

    @property
    def shares(self) -> np.ndarray:
        """Fraction of requests per type (zeros when empty)."""
        total = sum(t.count for t in self.types)
        return np.array([t.count / total if total else 0.0 for t in self.types])

    def to_dict(self) -> dict[str, Any]:
        return {
            "grid": self.grid.to_dict(),
            "start_s": self.start_s,
            "duration_s": self.duration_s,
            "total_rate_rps": self.total_rate_rps,
            "types": [t.to_dict() for t in self.types],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Workload:
        try:
            return cls(
                TypeGrid.from_dict(d["grid"]),
                float(d["start_s"]),
                float(d["duration_s"]),
                tuple(TypeLoad.from_dict(t) for t in d["types"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"bad workload: {exc}") from exc


def measure_workload(
    trace: Trace, grid: TypeGrid, *, start_s: float = 0.0, end_s: float | None = None
) -> Workload:
    """Per-type rates and lengths of the requests in ``[start_s, end_s)`` (default: the whole trace)."""
    part = trace if start_s == 0.0 and end_s is None else window(trace, start_s, end_s)
    types = grid.classify(part)
    span = part.duration_s
    loads = []
    for rt in grid.types:  # one pass per type (a handful), each vectorised
        mask = types == rt.index
        count = int(mask.sum())
        loads.append(
            TypeLoad(
                rt.name,
                count,
                count / span if span > 0 else 0.0,
                length_stats(part.prompt_tokens[mask]),
                length_stats(part.output_tokens[mask]),
            )
        )
    return Workload(grid, float(start_s), span, tuple(loads))


@dataclass(frozen=True, slots=True, eq=False)
class WorkloadSeries:
    """Per-window per-type request counts; ``rates_rps`` is windows x types (req/s)."""

    grid: TypeGrid
    window_s: float
    start_s: np.ndarray  # (windows,) window start times, s
    window_len_s: np.ndarray  # (windows,) the last window may be shorter
    counts: np.ndarray  # (windows, types) int64

    @property
    def rates_rps(self) -> np.ndarray:
        return self.counts / self.window_len_s[:, None]

    @property
    def total_rate_rps(self) -> np.ndarray:
        return self.rates_rps.sum(axis=1)

    @property
    def shares(self) -> np.ndarray:
        """Fraction of each window's requests per type (rows of zeros for empty windows)."""
        totals = self.counts.sum(axis=1, keepdims=True)
        return np.divide(self.counts, totals, out=np.zeros(self.counts.shape), where=totals > 0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "grid": self.grid.to_dict(),
            "window_s": self.window_s,
            "start_s": self.start_s.tolist(),
            "window_len_s": self.window_len_s.tolist(),
            "counts": self.counts.tolist(),
            "rates_rps": self.rates_rps.tolist(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> WorkloadSeries:
        try:
            return cls(
                TypeGrid.from_dict(d["grid"]),
                float(d["window_s"]),
                np.asarray(d["start_s"], dtype=np.float64),
                np.asarray(d["window_len_s"], dtype=np.float64),
                np.asarray(d["counts"], dtype=np.int64).reshape(len(d["start_s"]), -1),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"bad workload series: {exc}") from exc


def workload_series(trace: Trace, grid: TypeGrid, window_s: float) -> WorkloadSeries:
    """Per-type arrival counts and rates in consecutive ``window_s``-second windows (one 2-D bincount)."""
    which, starts, lengths = window_index(trace, window_s)
    flat = which * grid.num_types + grid.classify(trace)
    counts = np.bincount(flat, minlength=len(starts) * grid.num_types).reshape(len(starts), grid.num_types)
    return WorkloadSeries(grid, float(window_s), starts, lengths, counts.astype(np.int64))
