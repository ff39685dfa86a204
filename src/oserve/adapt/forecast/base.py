"""The ``Forecaster`` protocol, input checks shared by every forecaster, and the three closed-form ones.

A forecaster sees per-type arrival rates, one row per window (windows x types, req/s), and predicts the next
``steps`` windows (steps x types, req/s, never negative). ``fit`` learns from a long past (parameters,
weights); ``forecast`` conditions on the recent history it is given. Local models ignore ``fit``.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from oserve.errors import ConfigError

__all__ = [
    "EwmaForecaster",
    "Forecaster",
    "LastValueForecaster",
    "SeasonalNaiveForecaster",
    "check_history",
    "check_steps",
    "ewma_level",
]


class Forecaster(Protocol):
    """Predicts per-type rates (req/s) for the next windows from the recent ones."""

    #: the registry name users type (``--forecasters ewma``)
    name: str
    #: per-type series forecasts that fell back to a simpler rule since construction (0 for closed-form ones)
    fallbacks: int

    def fit(self, rates_rps: np.ndarray) -> None:
        """Learn from past rates (windows x types); a no-op for local models."""
        ...

    def forecast(self, history_rps: np.ndarray, steps: int) -> np.ndarray:
        """Rates for the next ``steps`` windows (steps x types, >= 0) after ``history_rps`` (windows x types)."""
        ...


def check_history(history_rps: np.ndarray, *, what: str = "history") -> np.ndarray:
    """``history_rps`` as a float64 windows x types array; at least one window, finite and non-negative."""
    h = np.asarray(history_rps, dtype=np.float64)
    if h.ndim != 2 or h.shape[1] == 0:
        raise ConfigError(f"{what} must be a windows x types array, got shape {h.shape}")
    if h.shape[0] == 0:
        raise ConfigError(f"{what} has no windows")
    if not np.isfinite(h).all() or (h < 0).any():
        raise ConfigError(f"{what} rates must be finite and >= 0")
    return h


def check_steps(steps: int) -> int:
    if int(steps) != steps or steps < 1:
        raise ConfigError(f"steps must be a positive integer, got {steps}")
    return int(steps)


def ewma_level(history_rps: np.ndarray, alpha: float) -> np.ndarray:
    """Exponentially weighted level per type (row vector): ``l = alpha * y + (1 - alpha) * l``, from the first row.

    Closed form: weight ``alpha * (1 - alpha)**age`` per window, the first row keeping the remainder.
    """
    n = history_rps.shape[0]
    age = np.arange(n - 1, -1, -1, dtype=np.float64)
    weights = alpha * (1.0 - alpha) ** age
    weights[0] = (1.0 - alpha) ** (n - 1)
    return weights @ history_rps


class LastValueForecaster:
    """Naive: every future window repeats the last one. The baseline the others must beat."""

    name = "last"

    def __init__(self) -> None:
        self.fallbacks = 0

    def fit(self, rates_rps: np.ndarray) -> None:
        return None

    def forecast(self, history_rps: np.ndarray, steps: int) -> np.ndarray:
        h = check_history(history_rps)
        return np.repeat(h[-1:], check_steps(steps), axis=0)


class EwmaForecaster:
    """Exponentially weighted moving average (flat forecast); ``alpha`` in (0, 1] weighs the newest window."""

    name = "ewma"

    def __init__(self, alpha: float = 0.3) -> None:
        if not 0.0 < alpha <= 1.0:
            raise ConfigError(f"ewma alpha must be in (0, 1], got {alpha}")
        self.alpha = float(alpha)
        self.fallbacks = 0

    def fit(self, rates_rps: np.ndarray) -> None:
        return None

    def forecast(self, history_rps: np.ndarray, steps: int) -> np.ndarray:
        h = check_history(history_rps)
        return np.repeat(ewma_level(h, self.alpha)[None, :], check_steps(steps), axis=0)


class SeasonalNaiveForecaster:
    """Seasonal naive: window ``t + k`` repeats window ``t + k - period_windows`` (the same phase one period ago).

    With less than one period of history it repeats the last window (counted as a fallback).
    """

    name = "seasonal"

    def __init__(self, period_windows: int = 60) -> None:
        if int(period_windows) != period_windows or period_windows < 1:
            raise ConfigError(f"seasonal period_windows must be a positive integer, got {period_windows}")
        self.period_windows = int(period_windows)
        self.fallbacks = 0

    def fit(self, rates_rps: np.ndarray) -> None:
        return None

    def forecast(self, history_rps: np.ndarray, steps: int) -> np.ndarray:
        h, steps = check_history(history_rps), check_steps(steps)
        n, p = h.shape[0], self.period_windows
        if n < p:
            self.fallbacks += h.shape[1]
            return np.repeat(h[-1:], steps, axis=0)
        return h[n - p + np.arange(steps) % p]
