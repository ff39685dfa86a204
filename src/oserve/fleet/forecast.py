"""Hourly forecasts per region x model x tier through the adaptive layer's ``Forecaster`` interface.

A day-ahead forecast of a diurnal series needs its daily shape, which the statistical forecasters (ARIMA,
damped Holt) do not model: ``SeasonallyAdjusted`` divides the series by its daily profile (the mean of each hour of
day over the last ``profile_days``, relative to the daily mean: classical multiplicative decomposition), lets the
inner forecaster predict the adjusted level, and multiplies the profile back. It is itself a ``Forecaster``, so
``backtest`` scores it like any other.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from oserve.adapt.forecast import BacktestResult, Forecaster, backtest, make_forecaster
from oserve.adapt.forecast.base import check_history, check_steps
from oserve.errors import ConfigError

__all__ = ["FLEET_FORECASTERS", "SeasonallyAdjusted", "backtest_fleet", "fleet_forecaster", "forecast_series"]

FLEET_FORECASTERS = ("arima", "holt-winters", "seasonal", "last")


class SeasonallyAdjusted:
    """``inner`` on the series divided by its daily (``period`` windows) profile; the profile multiplied back."""

    def __init__(self, inner: Forecaster, period: int = 24, profile_days: int = 7) -> None:
        if period < 2 or profile_days < 1:
            raise ConfigError(f"period must be >= 2 and profile_days >= 1, got {period}, {profile_days}")
        self.inner, self.period, self.profile_days = inner, int(period), int(profile_days)
        self.name = f"{inner.name}+daily"
        self._fallbacks = 0

    @property
    def fallbacks(self) -> int:
        return self.inner.fallbacks + self._fallbacks

    def _profile(self, h: np.ndarray, end_phase: int) -> np.ndarray:
        """Per phase (period x types) multiplier, mean 1, from the history ending at phase ``end_phase``."""
        p = self.period
        n = min(h.shape[0] // p, self.profile_days) * p
        if n == 0:
            self._fallbacks += h.shape[1]
            return np.ones((p, h.shape[1]))
        recent = h[-n:].reshape(n // p, p, -1).mean(axis=0)  # phases aligned to the end of the history
        level = recent.mean(axis=0, keepdims=True)
        prof = np.divide(recent, level, out=np.ones_like(recent), where=level > 0)
        prof = np.maximum(prof, 0.05)
        return np.roll(prof, end_phase, axis=0)  # row i = phase i of the absolute clock

    def fit(self, rates_rps: np.ndarray) -> None:
        r = check_history(rates_rps, what="training rates")
        prof = self._profile(r, r.shape[0] % self.period)
        self.inner.fit(r / prof[np.arange(r.shape[0]) % self.period])

    def forecast(self, history_rps: np.ndarray, steps: int) -> np.ndarray:
        h, steps = check_history(history_rps), check_steps(steps)
        n = h.shape[0]
        prof = self._profile(h, n % self.period)  # phase of window i counted from the history's start
        adjusted = h / prof[np.arange(n) % self.period]
        f = np.asarray(self.inner.forecast(adjusted, steps))
        return np.maximum(f * prof[(n + np.arange(steps)) % self.period], 0.0)


def fleet_forecaster(name: str = "arima", **params: Any) -> Forecaster:
    """A registered forecaster (``arima``, ``holt-winters``, ...) behind the daily adjustment; ``seasonal`` is the
    seasonal-naive day-ago forecast as it is."""
    if name == "seasonal":
        return make_forecaster("seasonal", period_windows=24)
    return SeasonallyAdjusted(make_forecaster(name, **params))


def forecast_series(
    hourly: np.ndarray, origin_h: int, steps: int, forecaster: Forecaster, *, history_h: int = 7 * 24
) -> np.ndarray:
    """Forecast every series (rows of ``hourly``: series x hours, req/s) for hours ``origin_h .. +steps``."""
    start = max(0, origin_h - history_h)
    history = hourly[:, start:origin_h].T
    if history.shape[0] == 0:
        raise ConfigError("no history before the forecast origin")
    return forecaster.forecast(history, steps).T


def backtest_fleet(
    hourly: np.ndarray,
    names: list[str],
    forecaster: str = "arima",
    *,
    history_h: int = 7 * 24,
    horizon_h: int = 24,
    stride_h: int = 6,
) -> BacktestResult:
    """Rolling-origin backtest (the adaptive layer's ``backtest``) on series x hours req/s, fitted on the
    first ``history_h`` hours."""
    f = fleet_forecaster(forecaster)
    return backtest(
        hourly.T,
        f,
        history_h,
        horizon_h,
        train_windows=history_h,
        stride_windows=stride_h,
        type_names=names,
        label=f.name,
    )
