"""The one columnar trace value (``Trace``) and what a loader reports about the file (``LoadReport``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd

from oserve.errors import TraceError

__all__ = ["PLAIN_COLUMNS", "LoadReport", "Trace"]

#: Header of the plain format written by :meth:`Trace.to_csv` / :meth:`Trace.to_parquet`.
PLAIN_COLUMNS = ("arrival_s", "input_tokens", "output_tokens")


@dataclass(frozen=True, slots=True)
class LoadReport:
    """What loading a file did: its format, rows read and kept, rows dropped (by reason), re-sorting."""

    path: str = ""
    format: str = ""
    rows_read: int = 0
    rows_kept: int = 0
    dropped: tuple[tuple[str, int], ...] = ()  # (reason, count)
    resorted: bool = False  # the file was not sorted by arrival; rows were sorted (stable)
    origin: str = ""  # what arrival 0 is: a wall-clock time, or "as in file"
    notes: tuple[str, ...] = ()

    @property
    def num_dropped(self) -> int:
        return sum(n for _, n in self.dropped)

    @property
    def warnings(self) -> tuple[str, ...]:
        """Human-readable lines about anything a user should know (drops, re-sorting, notes)."""
        lines = [f"dropped {n:,} of {self.rows_read:,} rows: {why}" for why, n in self.dropped if n]
        if self.resorted:
            lines.append(f"file was not sorted by arrival time; sorted {self.rows_kept:,} rows")
        return (*lines, *self.notes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "format": self.format,
            "rows_read": self.rows_read,
            "rows_kept": self.rows_kept,
            "dropped": dict(self.dropped),
            "resorted": self.resorted,
            "origin": self.origin,
            "notes": list(self.notes),
        }


def _frozen_array(values: Any, dtype: type | str) -> np.ndarray:
    return _freeze(np.asarray(values, dtype=dtype))


@dataclass(frozen=True, slots=True, eq=False)
class Trace:
    """Requests as contiguous read-only numpy columns, sorted by arrival.

    ``arrival_s`` is seconds since the trace's origin (>= 0, non-decreasing); ``duration_s`` is the
    observed span ``[0, duration_s]`` that rates are measured over (>= the last arrival). ``extras`` holds
    any other per-request columns (e.g. Mooncake ``hash_ids`` as an object array of int64 arrays,
    BurstGPT ``Model``). Build one with :meth:`from_arrays` or a loader; transforms return new traces.
    """

    arrival_s: np.ndarray  # float64
    prompt_tokens: np.ndarray  # int64
    output_tokens: np.ndarray  # int64
    duration_s: float
    name: str = ""
    source: str = ""
    extras: Mapping[str, np.ndarray] = field(default_factory=lambda: MappingProxyType({}))
    report: LoadReport = field(default_factory=LoadReport)

    def __post_init__(self) -> None:
        n = len(self.arrival_s)
        if len(self.prompt_tokens) != n or len(self.output_tokens) != n:
            raise TraceError("arrival_s, prompt_tokens and output_tokens must have the same length")
        for key, col in self.extras.items():
            if len(col) != n:
                raise TraceError(f"extra column {key!r} has {len(col)} rows, expected {n}")
        if not isinstance(self.extras, MappingProxyType):
            object.__setattr__(self, "extras", MappingProxyType(dict(self.extras)))

    @classmethod
    def from_arrays(
        cls,
        arrival_s: Any,
        prompt_tokens: Any,
        output_tokens: Any,
        *,
        duration_s: float | None = None,
        name: str = "",
        source: str = "",
        extras: Mapping[str, Any] | None = None,
        report: LoadReport | None = None,
        sort: bool = True,
    ) -> Trace:
        """Build a trace from array-likes; sorts by arrival (stable) unless ``sort=False``.

        ``duration_s`` defaults to the last arrival. Raises ``TraceError`` on negative or non-finite
        arrivals or negative token counts.
        """
        arr = np.asarray(arrival_s, dtype=np.float64)
        prompt = np.asarray(prompt_tokens, dtype=np.int64)
        output = np.asarray(output_tokens, dtype=np.int64)
        cols = {k: _as_column(v) for k, v in (extras or {}).items()}
        if len(arr) and (not np.all(np.isfinite(arr)) or arr.min() < 0):
            raise TraceError("arrival times must be finite and >= 0", path=source or None)
        if len(prompt) and min(prompt.min(), output.min()) < 0:
            raise TraceError("token counts must be >= 0", path=source or None)
        if sort and len(arr) > 1 and np.any(np.diff(arr) < 0):
            order = np.argsort(arr, kind="stable")
            arr, prompt, output = arr[order], prompt[order], output[order]
            cols = {k: v[order] for k, v in cols.items()}
        elif not sort and len(arr) > 1 and np.any(np.diff(arr) < 0):
            raise TraceError("arrival times are not sorted", path=source or None)
        last = float(arr[-1]) if len(arr) else 0.0
        dur = last if duration_s is None else float(duration_s)
        if dur < last:
            raise TraceError(f"duration_s {dur} is shorter than the last arrival {last}")
        return cls(
            _frozen_array(arr, np.float64),
            _frozen_array(prompt, np.int64),
            _frozen_array(output, np.int64),
            dur,
            name,
            source,
            MappingProxyType({k: _freeze(v) for k, v in cols.items()}),
            report or LoadReport(),
        )

    # --- size and rate -------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.arrival_s)

    @property
    def rate_rps(self) -> float:
        """Mean arrival rate over ``duration_s`` (requests/s); 0 for an empty or zero-length trace."""
        return len(self) / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def total_tokens(self) -> np.ndarray:
        return self.prompt_tokens + self.output_tokens

    # --- building new traces ----------------------------------------------------------------------
    def take(
        self,
        index: np.ndarray,
        *,
        arrival_s: np.ndarray | None = None,
        duration_s: float | None = None,
        name: str | None = None,
    ) -> Trace:
        """Rows at ``index`` (int indices or a bool mask), optionally with new arrivals; re-sorted if needed."""
        arr = self.arrival_s[index] if arrival_s is None else arrival_s
        return Trace.from_arrays(
            arr,
            self.prompt_tokens[index],
            self.output_tokens[index],
            duration_s=self.duration_s if duration_s is None else duration_s,
            name=self.name if name is None else name,
            source=self.source,
            extras={k: v[index] for k, v in self.extras.items()},
            report=self.report,
        )

    def with_name(self, name: str) -> Trace:
        return replace(self, name=name)

    # --- writers (plain format) -----------------------------------------------------------------
    def to_frame(self) -> pd.DataFrame:
        """The plain-format table: ``arrival_s,input_tokens,output_tokens`` then the extra columns."""
        data: dict[str, Any] = dict(
            zip(PLAIN_COLUMNS, (self.arrival_s, self.prompt_tokens, self.output_tokens), strict=True)
        )
        data.update(self.extras)
        return pd.DataFrame(data)

    def to_csv(self, path: str | Path) -> Path:
        """Write the plain CSV (gzip when the name ends in ``.gz``); list columns as space-separated ints."""
        frame = self.to_frame()
        for key, col in self.extras.items():
            if col.dtype == object and len(col) and isinstance(col[0], np.ndarray | list | tuple):
                frame[key] = [" ".join(map(str, v)) for v in col]
        path = Path(path)
        frame.to_csv(path, index=False)
        return path

    def to_parquet(self, path: str | Path) -> Path:
        """Write the plain format as Parquet (list columns stay lists)."""
        path = Path(path)
        self.to_frame().to_parquet(path, index=False)
        return path

    def __repr__(self) -> str:
        return (
            f"Trace(name={self.name!r}, requests={len(self)}, duration_s={self.duration_s:.1f}, "
            f"rate_rps={self.rate_rps:.3f}, extras={list(self.extras)})"
        )


def _as_column(values: Any) -> np.ndarray:
    if isinstance(values, np.ndarray):
        return values
    if isinstance(values, pd.Series | pd.Index):
        return values.to_numpy(
            dtype=object if values.dtype.kind in "OSUT" or isinstance(values.dtype, pd.StringDtype) else None
        )
    out = np.empty(len(values), dtype=object)
    out[:] = list(values)
    return out


def _freeze(arr: np.ndarray) -> np.ndarray:
    """A C-contiguous read-only array owning its data (a copy unless ``arr`` already is one)."""
    if arr.ndim != 1:
        raise TraceError(f"expected a 1-D column, got shape {arr.shape}")
    if arr.flags.writeable or not arr.flags.c_contiguous or not arr.flags.owndata:
        arr = np.array(arr, order="C", copy=True)
        arr.flags.writeable = False
    return arr
