"""Holt-Winters (additive damped trend) and ARIMA forecasters on statsmodels, with fallbacks that never raise.

Two modes. After ``fit(rates)`` statsmodels estimates each type's parameters on the last ``fit_windows``
windows of the past, and ``forecast`` runs the model with those parameters over the recent history in
numpy (no optimiser per call: well under a millisecond, and a short window gets parameters it could not
estimate itself). Without a fit, or for a type whose fit failed, ``forecast`` estimates on the history.

Fallback rules, per type: a flat history (all zeros included) repeats its value; a history shorter than
``min_windows`` (local mode), a statsmodels error or ``ConvergenceWarning``, a non-finite forecast or one
above ``10 x`` the history's peak uses EWMA instead (each counted in ``fallbacks``). Forecasts are clipped at 0.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from oserve.adapt.forecast.base import check_history, check_steps, ewma_level
from oserve.errors import ConfigError

__all__ = ["ArimaForecaster", "HoltWintersForecaster", "arma_forecast", "damped_holt"]

#: a forecast above this multiple of the history's peak is treated as a blown-up fit
_BLOWUP = 10.0


def _quietly(fn: Callable[[], Any]) -> Any:
    """``fn()``, or None when it raises or warns that a fit did not converge or overflowed."""
    from statsmodels.tools.sm_exceptions import ConvergenceWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            out = fn()
        except Exception:  # statsmodels raises ValueError, LinAlgError, IndexError... on degenerate series
            return None
    if any(issubclass(w.category, ConvergenceWarning | RuntimeWarning) for w in caught):
        return None
    return out


def damped_holt(
    y: np.ndarray, alpha: float, beta: float, phi: float, level: float, trend: float, steps: int
) -> np.ndarray:
    """Holt's additive damped-trend recursions over ``y`` from (``level``, ``trend``), then ``steps`` forecasts.

    statsmodels' parameterisation (``smoothing_level``, ``smoothing_trend``, ``damping_trend``).
    """
    for value in y:
        prev = level
        level = alpha * value + (1.0 - alpha) * (level + phi * trend)
        trend = beta * (level - prev) + (1.0 - beta) * phi * trend
    return level + np.cumsum(phi ** np.arange(1, steps + 1)) * trend


def arma_forecast(z: np.ndarray, ar: np.ndarray, ma: np.ndarray, steps: int) -> np.ndarray:
    """Forecasts of a zero-mean ARMA(p, q) after observing ``z``: the Kalman filter in Harvey's state-space
    form from the stationary state covariance (the AR part must be stationary, as statsmodels enforces)."""
    from scipy.linalg import solve_discrete_lyapunov

    m = max(len(ar), len(ma) + 1)
    trans = np.zeros((m, m))
    trans[: len(ar), 0] = ar
    trans[:-1, 1:] = np.eye(m - 1)
    select = np.zeros(m)
    select[0] = 1.0
    select[1 : len(ma) + 1] = ma
    noise = np.outer(select, select)
    state, cov = np.zeros(m), solve_discrete_lyapunov(trans, noise)
    for value in z:
        var = cov[0, 0]
        gain = trans @ cov[:, 0] / var if var > 1e-12 else np.zeros(m)
        state = trans @ state + gain * (value - state[0])
        cov = trans @ cov @ trans.T + noise - np.outer(gain, gain) * var
    out = np.empty(steps)
    for h in range(steps):
        out[h] = state[0]
        state = trans @ state
    return out


class _Statistical:
    """Shared plumbing: per-type fit, per-type apply or local fit, and the fallback rules."""

    name = ""

    def __init__(self, min_windows: int, fit_windows: int, fallback_alpha: float) -> None:
        for key, v in (("min_windows", min_windows), ("fit_windows", fit_windows)):
            if int(v) != v or v < 2:
                raise ConfigError(f"{self.name} {key} must be an integer >= 2, got {v}")
        if not 0.0 < fallback_alpha <= 1.0:
            raise ConfigError(f"{self.name} fallback_alpha must be in (0, 1], got {fallback_alpha}")
        self.min_windows, self.fit_windows = int(min_windows), int(fit_windows)
        self.fallback_alpha = float(fallback_alpha)
        self.fallbacks = 0
        self.params: list[Any] | None = None  # per type, None where the fit failed; None before any fit

    def _estimate(self, y: np.ndarray) -> Any:
        """Parameters estimated on one type's long series."""
        raise NotImplementedError

    def _apply(self, params: Any, y: np.ndarray, steps: int) -> np.ndarray | None:
        """Forecast with given parameters over one type's history (None: cannot)."""
        raise NotImplementedError

    def _local(self, y: np.ndarray, steps: int) -> np.ndarray | None:
        """Estimate on the history itself and forecast."""
        raise NotImplementedError

    def fit(self, rates_rps: np.ndarray) -> None:
        """Estimate each type's parameters on the last ``fit_windows`` windows (bounded cost on long runs)."""
        r = check_history(rates_rps, what="training rates")[-self.fit_windows :]
        self.params = [
            _quietly(lambda y=y: self._estimate(y)) if len(y) >= self.min_windows and np.ptp(y) > 0 else None
            for y in r.T
        ]

    def forecast(self, history_rps: np.ndarray, steps: int) -> np.ndarray:
        h, steps = check_history(history_rps), check_steps(steps)
        if self.params is not None and len(self.params) != h.shape[1]:
            raise ConfigError(f"{self.name} was fitted on {len(self.params)} types, history has {h.shape[1]}")
        out = np.empty((steps, h.shape[1]))
        for k, y in enumerate(h.T):
            out[:, k] = self._one(k, y, steps)
        return out

    def _one(self, k: int, y: np.ndarray, steps: int) -> np.ndarray:
        peak = float(y.max())
        if peak == float(y.min()):
            return np.full(steps, peak)
        params = None if self.params is None else self.params[k]
        if params is not None:
            f = _quietly(lambda: self._apply(params, y, steps))
        elif len(y) >= self.min_windows:
            f = _quietly(lambda: self._local(y, steps))
        else:
            f = None
        if f is None or not np.isfinite(f).all() or f.max() > _BLOWUP * peak:
            self.fallbacks += 1
            return np.full(steps, ewma_level(y[:, None], self.fallback_alpha)[0])
        return np.maximum(f, 0.0)


class HoltWintersForecaster(_Statistical):
    """Holt's linear method with an additive damped trend (statsmodels ``ExponentialSmoothing``), no season.

    Fitted (alpha, beta, phi) run over the history from level = the history's mean, trend = 0: with the small
    alpha noisy rates get, the mean is the better start than the first window.
    """

    name = "holt-winters"

    def __init__(self, min_windows: int = 10, fit_windows: int = 180, fallback_alpha: float = 0.3) -> None:
        super().__init__(min_windows, fit_windows, fallback_alpha)

    @staticmethod
    def _model(y: np.ndarray) -> Any:
        from statsmodels.tsa.holtwinters import ExponentialSmoothing

        return ExponentialSmoothing(
            y, trend="add", damped_trend=True, initialization_method="estimated"
        ).fit()

    def _estimate(self, y: np.ndarray) -> tuple[float, float, float]:
        p = self._model(y).params
        return float(p["smoothing_level"]), float(p["smoothing_trend"]), float(p["damping_trend"])

    def _apply(self, params: tuple[float, float, float], y: np.ndarray, steps: int) -> np.ndarray:
        alpha, beta, phi = params
        return damped_holt(y, alpha, beta, phi, float(y.mean()), 0.0, steps)

    def _local(self, y: np.ndarray, steps: int) -> np.ndarray:
        return np.asarray(self._model(y).forecast(steps), dtype=np.float64)


class ArimaForecaster(_Statistical):
    """ARIMA(p, d, q) (statsmodels ``ARIMA``; a constant mean when d = 0, none otherwise). Default (1, 1, 1):
    differencing follows the level shifts of a drifting workload; (1, 0, 1) reverts to the fitted mean.

    Fitted parameters run over the differenced history through ``arma_forecast``'s exact Kalman filter,
    which is what statsmodels' ``filter`` computes, without building a model per call.
    """

    name = "arima"

    def __init__(
        self,
        p: int = 1,
        d: int = 1,
        q: int = 1,
        min_windows: int = 10,
        fit_windows: int = 180,
        fallback_alpha: float = 0.3,
    ) -> None:
        for key, v in (("p", p), ("d", d), ("q", q)):
            if int(v) != v or not 0 <= v <= 3:
                raise ConfigError(f"arima {key} must be an integer in 0..3, got {v}")
        super().__init__(max(min_windows, p + d + q + 2), fit_windows, fallback_alpha)
        self.order = (int(p), int(d), int(q))

    def _model(self, y: np.ndarray) -> Any:
        from statsmodels.tsa.arima.model import ARIMA

        model = ARIMA(y, order=self.order, trend="c" if self.order[1] == 0 else "n")
        # innovations MLE: the same estimates as the state-space default, without its slow crawl to an MA
        # root near -1 (bursty rates; 1.5 s -> 0.13 s a fit on the Azure code hour)
        return model.fit(method="innovations_mle")

    def _estimate(self, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        res = self._model(y)
        mean = float(res.params[0]) if self.order[1] == 0 else 0.0
        return np.asarray(res.arparams, dtype=np.float64), np.asarray(res.maparams, dtype=np.float64), mean

    def _apply(
        self, params: tuple[np.ndarray, np.ndarray, float], y: np.ndarray, steps: int
    ) -> np.ndarray | None:
        ar, ma, mean = params
        levels = [y]  # the series and each difference, to integrate the forecast back
        for _ in range(self.order[1]):
            levels.append(np.diff(levels[-1]))
        if len(levels[-1]) == 0:
            return None
        f = arma_forecast(levels[-1] - mean, ar, ma, steps) + mean
        for level in reversed(levels[:-1]):  # undo each difference: cumulative sum from the last value
            f = level[-1] + np.cumsum(f)
        return f

    def _local(self, y: np.ndarray, steps: int) -> np.ndarray:
        return np.asarray(self._model(y).forecast(steps), dtype=np.float64)
