"""Rolling-origin backtest of a forecaster over a per-type rate series: MAPE, sMAPE and MAE, and wall time.

At each origin ``t`` (every ``stride_windows`` windows from ``max(history_windows, train_windows)`` while
``t + horizon_windows`` fits) the forecaster sees windows ``[t - history_windows, t)`` and predicts
``[t, t + horizon_windows)``. It is fitted on every window before the first origin, and again on every
window before ``t`` each ``refit_windows`` windows (never, when None): a learned model sees only the past.

Errors pool every (origin, step) point, per type and over all types; ``total`` scores the summed rate.
Zero actuals: MAPE leaves out points whose actual rate is 0 (their count is reported as
``zero_actuals``; MAPE is NaN, JSON null, when every actual is 0). sMAPE is ``2|f - a| / (a + f)`` per
point, in [0, 200] %, and counts a point where both are 0 as exact (0), so it is defined everywhere.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from oserve.adapt.forecast.base import Forecaster, check_history
from oserve.errors import ConfigError

__all__ = ["BacktestResult", "ErrorStats", "backtest", "error_stats"]


def _num(x: float) -> float | None:
    return None if math.isnan(x) else x


@dataclass(frozen=True, slots=True)
class ErrorStats:
    """Forecast errors over a set of points: MAPE and sMAPE in %, MAE in req/s."""

    points: int
    mape_pct: float  # over points with a non-zero actual; NaN when there are none
    smape_pct: float  # 0/0 points count as exact
    mae_rps: float
    zero_actuals: int  # points left out of MAPE

    def to_dict(self) -> dict[str, Any]:
        return {
            "points": self.points,
            "mape_pct": _num(self.mape_pct),
            "smape_pct": _num(self.smape_pct),
            "mae_rps": _num(self.mae_rps),
            "zero_actuals": self.zero_actuals,
        }


def error_stats(actual: np.ndarray, forecast: np.ndarray) -> ErrorStats:
    """Errors of ``forecast`` against ``actual`` (same shape, req/s, >= 0), pooled over every element."""
    a = np.asarray(actual, dtype=np.float64).ravel()
    f = np.asarray(forecast, dtype=np.float64).ravel()
    if a.shape != f.shape:
        raise ConfigError(f"actual and forecast differ in size: {a.size} vs {f.size}")
    if a.size == 0:
        return ErrorStats(0, math.nan, math.nan, math.nan, 0)
    err = np.abs(f - a)
    pos = a > 0
    mape = 100.0 * float(np.mean(err[pos] / a[pos])) if pos.any() else math.nan
    denom = a + f
    smape = 100.0 * float(np.mean(np.divide(2.0 * err, denom, out=np.zeros_like(err), where=denom > 0)))
    return ErrorStats(int(a.size), mape, smape, float(err.mean()), int((~pos).sum()))


@dataclass(frozen=True, slots=True, eq=False)
class BacktestResult:
    """One forecaster's rolling-origin backtest; arrays are origins x horizon x types (req/s)."""

    forecaster: str
    history_windows: int
    horizon_windows: int
    train_windows: int
    refit_windows: int | None
    type_names: tuple[str, ...]
    overall: ErrorStats  # every type's points pooled
    total: ErrorStats  # the rate summed over types
    per_type: tuple[ErrorStats, ...]
    wall_s: float  # fits and forecasts
    fit_s: float
    fallbacks: int  # per-type forecasts that fell back to a simpler rule
    origins: np.ndarray  # (origins,) index of each origin's first forecast window
    forecasts: np.ndarray
    actuals: np.ndarray

    @property
    def num_origins(self) -> int:
        return len(self.origins)

    @property
    def fallback_share(self) -> float:
        calls = self.num_origins * len(self.type_names)
        return self.fallbacks / calls if calls else 0.0

    @property
    def forecast_ms(self) -> float:
        """Mean wall time of one forecast call (all types), ms."""
        return 1e3 * (self.wall_s - self.fit_s) / self.num_origins if self.num_origins else math.nan

    def to_dict(self, *, series: bool = False) -> dict[str, Any]:
        """Figures as JSON-ready values; ``series`` adds the origins, forecasts and actuals."""
        d: dict[str, Any] = {
            "forecaster": self.forecaster,
            "history_windows": self.history_windows,
            "horizon_windows": self.horizon_windows,
            "train_windows": self.train_windows,
            "refit_windows": self.refit_windows,
            "origins": self.num_origins,
            "overall": self.overall.to_dict(),
            "total": self.total.to_dict(),
            "per_type": {n: s.to_dict() for n, s in zip(self.type_names, self.per_type, strict=True)},
            "wall_s": self.wall_s,
            "fit_s": self.fit_s,
            "forecast_ms": _num(self.forecast_ms),
            "fallbacks": self.fallbacks,
            "fallback_share": self.fallback_share,
        }
        if series:
            d["series"] = {
                "origins": self.origins.tolist(),
                "forecasts_rps": self.forecasts.tolist(),
                "actuals_rps": self.actuals.tolist(),
            }
        return d


def _positive(value: int, what: str, minimum: int = 1) -> int:
    if int(value) != value or value < minimum:
        raise ConfigError(f"{what} must be an integer >= {minimum}, got {value}")
    return int(value)


def backtest(
    series_rates: np.ndarray,
    forecaster: Forecaster,
    history_windows: int,
    horizon_windows: int,
    *,
    train_windows: int = 0,
    refit_windows: int | None = None,
    stride_windows: int = 1,
    type_names: Sequence[str] | None = None,
    label: str | None = None,
) -> BacktestResult:
    """Rolling-origin evaluation of ``forecaster`` on ``series_rates`` (windows x types, req/s)."""
    rates = check_history(series_rates, what="series")
    history = _positive(history_windows, "history_windows")
    horizon = _positive(horizon_windows, "horizon_windows")
    train = _positive(train_windows, "train_windows", 0)
    stride = _positive(stride_windows, "stride_windows")
    refit = None if refit_windows is None else _positive(refit_windows, "refit_windows")
    count, types = rates.shape
    names = tuple(type_names) if type_names is not None else tuple(f"type{k}" for k in range(types))
    if len(names) != types:
        raise ConfigError(f"{len(names)} type names for {types} types")
    first = max(history, train)
    if first + horizon > count:
        raise ConfigError(
            f"the series has {count} windows; {first} of history/training plus a {horizon}-window horizon "
            f"needs at least {first + horizon}"
        )
    origins = np.arange(first, count - horizon + 1, stride)
    forecasts = np.empty((len(origins), horizon, types))
    actuals = np.stack([rates[t : t + horizon] for t in origins])
    before = forecaster.fallbacks
    fit_s, last_fit = 0.0, -1
    start = time.perf_counter()
    for i, t in enumerate(origins):
        if last_fit < 0 or (refit is not None and t - last_fit >= refit):
            fit_start = time.perf_counter()
            forecaster.fit(rates[:t])
            fit_s += time.perf_counter() - fit_start
            last_fit = int(t)
        f = np.asarray(forecaster.forecast(rates[t - history : t], horizon))
        if f.shape != (horizon, types):
            raise ConfigError(
                f"forecaster {forecaster.name} returned shape {f.shape}, not {(horizon, types)}"
            )
        forecasts[i] = f
    wall = time.perf_counter() - start
    return BacktestResult(
        forecaster=label or forecaster.name,
        history_windows=history,
        horizon_windows=horizon,
        train_windows=train,
        refit_windows=refit,
        type_names=names,
        overall=error_stats(actuals, forecasts),
        total=error_stats(actuals.sum(axis=2), forecasts.sum(axis=2)),
        per_type=tuple(error_stats(actuals[:, :, k], forecasts[:, :, k]) for k in range(types)),
        wall_s=wall,
        fit_s=fit_s,
        fallbacks=forecaster.fallbacks - before,
        origins=origins,
        forecasts=forecasts,
        actuals=actuals,
    )
