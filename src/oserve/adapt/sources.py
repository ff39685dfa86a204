"""Where the controller's demand comes from: per-type rates to plan for over the next horizon.

Every source reads an ``Observation`` (``adapt.core``) — what the controller saw up to now — never a clock or a
trace file: ``ForecastSource`` runs a forecaster over the observed per-type history (the ``oserve`` policy and
the live controller), ``OracleSource`` reads the traffic still to come that only a replay has
(``Observation.ahead``: ``oserve-oracle``, an upper bound) and ``NoisySource`` puts a random +-error on
another's (the sensitivity runs).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Protocol

import numpy as np

from oserve.adapt.decide import DecisionConfig
from oserve.adapt.forecast import Forecaster
from oserve.trace import Trace, TypeGrid

if TYPE_CHECKING:  # pragma: no cover
    from oserve.adapt.core import Observation

__all__ = ["DemandSource", "ForecastSource", "NoisySource", "OracleSource", "binned_rates", "peak"]


def binned_rates(trace: Trace, grid: TypeGrid, start_s: float, end_s: float, bin_s: float) -> np.ndarray:
    """Per-type arrival rates (req/s) in consecutive ``bin_s`` bins over ``[start_s, end_s)``: bins x types."""
    bins = max(1, math.ceil((end_s - start_s) / bin_s - 1e-9))
    lo, hi = np.searchsorted(trace.arrival_s, [start_s, end_s])
    which = ((trace.arrival_s[lo:hi] - start_s) // bin_s).astype(np.int64).clip(0, bins - 1)
    types = grid.classify_lengths(trace.prompt_tokens[lo:hi], trace.output_tokens[lo:hi])
    counts = np.bincount(which * grid.num_types + types, minlength=bins * grid.num_types)
    return counts.reshape(bins, grid.num_types) / bin_s


def peak(rates: np.ndarray, quantile: float) -> np.ndarray:
    """Each type's ``quantile`` over the bins (rows) of ``rates``."""
    return np.quantile(rates, quantile, axis=0) if len(rates) > 1 else rates[0]


class DemandSource(Protocol):
    """Per-type rates (req/s) to plan for over ``[now, now + horizon)``, from what ``obs`` holds."""

    sees_future: bool

    def rates(self, obs: Observation, config: DecisionConfig) -> np.ndarray: ...


class ForecastSource:
    """A forecaster over the observed per-type history (``Observation.history``, ``bin_s`` bins); the horizon's
    bins at ``peak_quantile``, and never below what the last ``window_s`` showed (``floor_recent``): a smoothing
    forecaster lags a step in the load by minutes, and planning below the load already arriving overloads the
    cluster."""

    sees_future = False

    def __init__(self, forecaster: Forecaster, *, floor_recent: bool = True) -> None:
        self.forecaster = forecaster
        self.floor_recent = floor_recent

    def rates(self, obs: Observation, config: DecisionConfig) -> np.ndarray:
        history = obs.history
        if len(history) == 0:
            return np.zeros(history.shape[1] if history.ndim == 2 else 0)
        steps = max(1, math.ceil(config.horizon_s / config.bin_s))
        rates = np.maximum(peak(self.forecaster.forecast(history, steps), config.peak_quantile), 0.0)
        if self.floor_recent:
            recent = history[-max(1, round(config.window_s / config.bin_s)) :]
            rates = np.maximum(rates, peak(recent, config.peak_quantile))
        return rates


class OracleSource:
    """The true rates over the horizon (``Observation.ahead``): an upper bound no real controller reaches."""

    sees_future = True

    def rates(self, obs: Observation, config: DecisionConfig) -> np.ndarray:
        ahead = obs.ahead if obs.ahead is not None else obs.recent.take(np.zeros(0, np.int64))
        future = binned_rates(ahead, obs.grid, obs.now_s, obs.now_s + config.horizon_s, config.bin_s)
        return peak(future, config.peak_quantile)


class NoisySource:
    """Another source's rates, each type's off by a uniform random share in ``[-error, +error]``."""

    def __init__(self, source: DemandSource, error: float, seed: int = 0) -> None:
        self.source, self.error = source, float(error)
        self.sees_future = source.sees_future
        self.rng = np.random.default_rng(seed)

    def rates(self, obs: Observation, config: DecisionConfig) -> np.ndarray:
        rates = self.source.rates(obs, config)
        return rates * (1 + self.rng.uniform(-self.error, self.error, rates.shape))
