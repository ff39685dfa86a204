"""Column conversion and validation shared by the fast and slow load paths (vectorised, row-precise)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from oserve.trace.core import LoadReport, Trace
from oserve.trace.formats import TraceFormat

__all__ = ["MAX_ARRIVAL_S", "MAX_TOKENS", "BadRow", "RawColumns", "build_trace"]

# Bounds on what a trace may say, so a typo cannot make every later step huge (a 2-line file with an arrival
# at 1e9 s made `trace stats` build 3.3 million windows: 60 s and 2.5 GB). The longest public trace (BurstGPT)
# spans 121 days; no model has a context of 2**26 tokens.
MAX_ARRIVAL_S = 366 * 86400.0
MAX_TOKENS = 2**26


_Check = tuple[np.ndarray, str, str, Any]  # (bad-row mask, column, kind, raw values)


class BadRow(Exception):
    """Row ``index`` (0-based data row) is invalid; the loader turns it into a ``TraceError`` with a line."""

    def __init__(self, index: int, message: str) -> None:
        super().__init__(message)
        self.index = index
        self.message = message


@dataclass(slots=True)
class RawColumns:
    """Columns as read (strings or typed), before conversion; ``lines`` maps rows to file line numbers."""

    time: Any
    prompt: Any
    output: Any
    extras: dict[str, Any] = field(default_factory=dict)
    lines: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.time)


def _first_bad(checks: list[_Check]) -> None:
    """Raise ``BadRow`` for the earliest row flagged by any check."""
    best: tuple[int, str] | None = None
    for mask, column, kind, raw in checks:
        hits = np.flatnonzero(mask)
        if len(hits) and (best is None or hits[0] < best[0]):
            i = int(hits[0])
            value = raw.iloc[i] if isinstance(raw, pd.Series) else raw[i]
            missing = (np.ndim(value) == 0 and bool(pd.isna(value))) or (
                isinstance(value, str) and not value.strip()
            )
            shown = repr(value.item() if isinstance(value, np.generic) else value)
            best = (i, f"{column}: missing value" if missing else f"{column}: {shown} is not {_WHAT[kind]}")
    if best is not None:
        raise BadRow(*best)


_WHAT = {
    "count": f"a non-negative integer of at most {MAX_TOKENS:,} tokens",
    "time": f"a finite, non-negative number of seconds, at most {MAX_ARRIVAL_S:.4g} (366 days)",
    "datetime": "an ISO 8601 date-time",
    "span": f"within {MAX_ARRIVAL_S / 86400:g} days of the earliest request",
}


def _counts(raw: Any, column: str, checks: list[_Check]) -> np.ndarray:
    series = raw if isinstance(raw, pd.Series) else pd.Series(raw)
    values = (
        pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        if series.dtype.kind not in "iu"
        else series.to_numpy()
    )
    if values.dtype.kind == "f":
        with np.errstate(invalid="ignore"):
            bad = ~np.isfinite(values) | (values < 0) | (values != np.floor(values)) | (values > MAX_TOKENS)
    else:
        bad = (values < 0) | (values > MAX_TOKENS)
    checks.append((bad, column, "count", series))
    return np.where(bad, 0, values).astype(np.int64)


def _times(raw: Any, fmt: TraceFormat, checks: list[_Check]) -> tuple[np.ndarray, str]:
    """Arrival seconds and a description of the origin. Wall clock is measured from the earliest request."""
    series = raw if isinstance(raw, pd.Series) else pd.Series(raw)
    column = fmt.time_column
    if fmt.time_kind == "datetime":
        stamps = pd.to_datetime(series.astype("string"), format="ISO8601", utc=True, errors="coerce")
        # ISO 8601 reads "-1" as the year -1: no trace predates 1900, so such stamps are bad values too
        stamps = stamps.where(stamps.dt.year >= 1900)
        bad = stamps.isna().to_numpy()
        checks.append((bad, column, "datetime", series))
        if bad.all():
            return np.zeros(len(series)), ""
        origin = stamps.min()
        seconds = ((stamps - origin).dt.total_seconds()).to_numpy(dtype=np.float64, na_value=0.0)
        far = seconds > MAX_ARRIVAL_S
        checks.append((far, column, "span", series))
        seconds = np.where(far, 0.0, seconds)
        return seconds, f"{origin:%Y-%m-%d %H:%M:%S.%f} UTC (earliest request)"
    values = pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    seconds = values / 1000.0 if fmt.time_kind == "ms" else values
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(seconds) | (seconds < 0) | (seconds > MAX_ARRIVAL_S)
    checks.append((bad, column, "time", series))
    return np.where(bad, 0.0, seconds), "as in file (relative time)"


def _extra(raw: Any) -> np.ndarray:
    """An extra column: numeric when every value parses as a number, else an object array of values.
    Arrays are taken as already converted (the fast paths type them in pyarrow)."""
    if isinstance(raw, np.ndarray):
        return raw
    series = raw if isinstance(raw, pd.Series) else pd.Series(raw, dtype=object)
    if series.dtype.kind in "iufb":
        return series.to_numpy()
    as_text = series.astype("string")
    numeric = pd.to_numeric(as_text, errors="coerce")
    if len(series) and not numeric.isna().any():
        return numeric.to_numpy()
    return series.to_numpy(dtype=object)


def _id_lists(raw: Any) -> np.ndarray:
    """A list-of-ints column as an object array of int64 arrays (missing -> empty)."""
    out = np.empty(len(raw), dtype=object)
    empty = np.zeros(0, dtype=np.int64)
    for i, value in enumerate(raw):  # list columns only; a Python loop over lists is unavoidable here
        if value is None or (isinstance(value, float) and np.isnan(value)):
            out[i] = empty
        elif isinstance(value, str):
            out[i] = np.array(value.split(), dtype=np.int64) if value.strip() else empty
        else:
            out[i] = np.asarray(value, dtype=np.int64)
    return out


def build_trace(raw: RawColumns, fmt: TraceFormat, path: str, *, name: str) -> Trace:
    """Convert and validate all columns at once; raise ``BadRow`` for the earliest invalid row."""
    checks: list[_Check] = []
    arrival, origin = _times(raw.time, fmt, checks)
    prompt = _counts(raw.prompt, fmt.prompt_column, checks)
    output = _counts(raw.output, fmt.output_column, checks)
    _first_bad(checks)
    extras: dict[str, np.ndarray] = {}
    for key, col in raw.extras.items():
        try:
            extras[key] = _id_lists(col) if key in fmt.list_columns else _extra(col)
        except (ValueError, TypeError, OverflowError) as exc:
            raise BadRow(_first_bad_list(col), f"{key}: not a list of integers ({exc})") from exc
    rows_read = len(arrival)
    dropped: tuple[tuple[str, int], ...] = ()
    if fmt.drop_zero_output:
        keep = output > 0
        n_drop = int(rows_read - keep.sum())
        dropped = (("zero response tokens (failed requests)", n_drop),)
        if n_drop:
            arrival, prompt, output = arrival[keep], prompt[keep], output[keep]
            extras = {k: v[keep] for k, v in extras.items()}
    resorted = bool(len(arrival) > 1 and np.any(np.diff(arrival) < 0))
    report = LoadReport(
        path=path,
        format=fmt.name,
        rows_read=rows_read,
        rows_kept=len(arrival),
        dropped=dropped,
        resorted=resorted,
        origin=origin,
    )
    return Trace.from_arrays(arrival, prompt, output, name=name, source=path, extras=extras, report=report)


def _first_bad_list(col: Any) -> int:
    for i, value in enumerate(col):
        try:
            if isinstance(value, str):
                np.array(value.split(), dtype=np.int64)
            elif value is not None and not (isinstance(value, float) and np.isnan(value)):
                np.asarray(value, dtype=np.int64)
        except (ValueError, TypeError, OverflowError):
            return i
    return 0
