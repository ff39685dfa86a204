"""Forecasters on series whose right answer is known, their fallbacks, and the registry."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from oserve.adapt import (
    FORECASTERS,
    ArimaForecaster,
    EwmaForecaster,
    HoltWintersForecaster,
    SeasonalNaiveForecaster,
    make_forecaster,
    parse_forecaster,
)
from oserve.adapt.forecast.statistical import arma_forecast, damped_holt
from oserve.errors import ConfigError
from oserve.trace import TypeGrid, load_trace, workload_series

NO_TORCH = [n for n in FORECASTERS if n != "lstm"]


def _trend(n: int, types: int = 2) -> np.ndarray:
    t = np.arange(n, dtype=np.float64)[:, None]
    return 1.0 + 0.2 * t * np.arange(1, types + 1)


@pytest.mark.parametrize("name", NO_TORCH)
@pytest.mark.parametrize("fitted", [False, True])
def test_constant_history_is_forecast_exactly(name: str, fitted: bool) -> None:
    history = np.tile([2.5, 0.0, 7.0], (30, 1))
    f = make_forecaster(name)
    if fitted:
        f.fit(history)
    out = f.forecast(history, 5)
    assert out.shape == (5, 3)
    np.testing.assert_allclose(out, np.tile([2.5, 0.0, 7.0], (5, 1)), rtol=1e-12, atol=1e-12)
    assert f.fallbacks == 0 or name == "seasonal"  # seasonal: 30 windows < its 60-window period


def test_last_and_ewma() -> None:
    h = np.array([[1.0, 4.0], [3.0, 0.0], [2.0, 2.0]])
    np.testing.assert_array_equal(make_forecaster("last").forecast(h, 2), [[2.0, 2.0], [2.0, 2.0]])
    level = h[0].copy()
    for row in h[1:]:
        level = 0.5 * row + 0.5 * level
    np.testing.assert_allclose(EwmaForecaster(alpha=0.5).forecast(h, 3), np.tile(level, (3, 1)))
    np.testing.assert_array_equal(EwmaForecaster(alpha=1.0).forecast(h, 1), h[-1:])


def test_seasonal_repeats_the_period_exactly_and_falls_back_when_short() -> None:
    pattern = np.array([[0.0, 5.0], [1.0, 4.0], [3.0, 3.0], [6.0, 2.0], [2.0, 1.0]])
    history = np.tile(pattern, (3, 1))  # three periods of 5 windows
    f = SeasonalNaiveForecaster(period_windows=5)
    np.testing.assert_array_equal(f.forecast(history, 12), np.tile(pattern, (3, 1))[:12])
    assert f.fallbacks == 0
    np.testing.assert_array_equal(f.forecast(history[:4], 3), np.tile(history[3], (3, 1)))
    assert f.fallbacks == 2  # one per type


@pytest.mark.parametrize("fitted", [False, True])
def test_holt_winters_beats_last_value_on_a_trend(fitted: bool) -> None:
    rng = np.random.default_rng(0)
    series = _trend(80) + rng.normal(0.0, 0.05, (80, 2))
    history, future = series[:60], series[60:]
    hw = HoltWintersForecaster()
    if fitted:
        hw.fit(history[:40])
    hw_err = np.abs(hw.forecast(history[-30:], 20) - future).mean()
    last_err = np.abs(make_forecaster("last").forecast(history, 20) - future).mean()
    assert hw_err < 0.5 * last_err
    assert hw.fallbacks == 0


def test_arima_follows_a_level_shift_the_mean_model_misses() -> None:
    rng = np.random.default_rng(1)
    series = np.concatenate([np.full(60, 1.0), np.full(40, 4.0)])[:, None] + rng.normal(0, 0.1, (100, 1))
    differenced, mean_reverting = ArimaForecaster(), ArimaForecaster(d=0)
    for f in (differenced, mean_reverting):
        f.fit(series[:60])
    future = differenced.forecast(series[90:], 5)
    assert np.abs(future - 4.0).max() < 0.5
    assert np.abs(mean_reverting.forecast(series[90:], 5)[-1] - 4.0).max() > np.abs(future[-1] - 4.0).max()


@pytest.mark.parametrize("name", ["holt-winters", "arima"])
def test_short_and_zero_histories_fall_back(name: str) -> None:
    f = make_forecaster(name)
    short = np.array([[1.0, 0.0], [3.0, 0.0], [2.0, 0.0]])
    out = f.forecast(short, 4)
    expected = EwmaForecaster(alpha=0.3).forecast(short, 4)
    np.testing.assert_allclose(out[:, 0], expected[:, 0])
    np.testing.assert_array_equal(out[:, 1], 0.0)  # all-zero: flat, not a fallback
    assert f.fallbacks == 1
    f.fit(np.zeros((50, 2)))  # nothing to estimate on: unfitted types, still no error
    np.testing.assert_array_equal(f.forecast(np.zeros((6, 2)), 3), 0.0)


@pytest.mark.parametrize("name", ["holt-winters", "arima"])
@pytest.mark.parametrize("failure", ["raise", "warn", "blow-up"])
def test_statsmodels_failures_fall_back_to_ewma(name: str, failure: str, monkeypatch) -> None:
    from statsmodels.tools.sm_exceptions import ConvergenceWarning

    def broken(self, y, steps):
        if failure == "raise":
            raise np.linalg.LinAlgError("singular")
        if failure == "warn":
            warnings.warn("did not converge", ConvergenceWarning, stacklevel=1)
        return np.full(steps, 1e6)

    f = make_forecaster(name)
    monkeypatch.setattr(type(f), "_local", broken)
    history = np.linspace(1.0, 2.0, 20)[:, None]
    out = f.forecast(history, 3)
    np.testing.assert_allclose(out, EwmaForecaster(alpha=0.3).forecast(history, 3))
    assert f.fallbacks == 1


def test_damped_holt_is_statsmodels_recursion() -> None:
    from statsmodels.tsa.holtwinters import ExponentialSmoothing

    rng = np.random.default_rng(2)
    y = 5.0 + 0.1 * np.arange(60) + rng.normal(0.0, 0.5, 60)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = ExponentialSmoothing(y, trend="add", damped_trend=True, initialization_method="estimated").fit()
    p = res.params
    mine = damped_holt(
        y,
        p["smoothing_level"],
        p["smoothing_trend"],
        p["damping_trend"],
        p["initial_level"],
        p["initial_trend"],
        7,
    )
    np.testing.assert_allclose(mine, res.forecast(7), rtol=1e-9)


@pytest.mark.parametrize("order", [(1, 0, 1), (2, 0, 0), (1, 1, 1), (0, 1, 2)])
def test_arima_apply_is_statsmodels_filter(order: tuple[int, int, int]) -> None:
    from statsmodels.tsa.arima.model import ARIMA

    rng = np.random.default_rng(3)
    y = 3.0 + np.cumsum(rng.normal(0.0, 0.1, 120)) + rng.normal(0.0, 0.3, 120)
    trend = "c" if order[1] == 0 else "n"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        f = ArimaForecaster(*order)
        res = f._model(y)  # the fit the forecaster makes
        params = f._estimate(y)
        for window in (y[100:106], y[40:100]):
            expected = ARIMA(window, order=order, trend=trend).filter(res.params).forecast(6)
            np.testing.assert_allclose(f._apply(params, window, 6), expected, rtol=1e-6, atol=1e-9)
    z = np.array([0.5, -0.2, 0.1])
    np.testing.assert_allclose(arma_forecast(z, np.array([0.5]), np.zeros(0), 3), [0.05, 0.025, 0.0125])


def test_statistical_forecasters_never_raise_on_real_rates(shared_traces: Path) -> None:
    for name in ("code", "conv"):
        trace = load_trace(shared_traces / f"azure_{name}_2023.csv")
        rates = workload_series(trace, TypeGrid.for_types(trace, 6), 10.0).rates_rps
        for f in (HoltWintersForecaster(), ArimaForecaster()):
            f.fit(rates[:120])
            for t in range(126, 340, 70):
                for history in (rates[t - 6 : t], rates[t - 30 : t]):
                    out = f.forecast(history, 30)
                    assert out.shape == (30, 6) and np.isfinite(out).all() and (out >= 0).all()
            unfitted = type(f)()
            out = unfitted.forecast(rates[200:230, :2], 30)  # local estimation on the history itself
            assert out.shape == (30, 2) and np.isfinite(out).all() and (out >= 0).all()


def test_registry_and_spec_parsing() -> None:
    assert set(FORECASTERS) == {"last", "ewma", "seasonal", "holt-winters", "arima", "lstm"}
    f = parse_forecaster("ewma:alpha=0.5")
    assert isinstance(f, EwmaForecaster) and f.alpha == 0.5
    a = parse_forecaster(" arima : p=2 : q=0 ")
    assert isinstance(a, ArimaForecaster) and a.order == (2, 1, 0)
    with pytest.raises(ConfigError, match="unknown forecaster 'prophet'; choose one of last, ewma, seasonal"):
        make_forecaster("prophet")
    with pytest.raises(ConfigError, match="has no parameter beta; it takes alpha"):
        parse_forecaster("ewma:beta=0.1")
    with pytest.raises(ConfigError, match="not a number"):
        parse_forecaster("ewma:alpha=high")
    with pytest.raises(ConfigError, match="expected name:key=value"):
        parse_forecaster("ewma:alpha")
    with pytest.raises(ConfigError, match=r"alpha must be in \(0, 1\]"):
        make_forecaster("ewma", alpha=0.0)
    with pytest.raises(ConfigError, match="period_windows must be a positive integer"):
        make_forecaster("seasonal", period_windows=2.5)


@pytest.mark.parametrize(
    ("history", "match"),
    [
        (np.ones(5), "windows x types"),
        (np.ones((0, 2)), "no windows"),
        (np.array([[1.0, -1.0]]), "finite and >= 0"),
        (np.array([[1.0, np.nan]]), "finite and >= 0"),
    ],
)
def test_bad_history_is_a_clear_error(history: np.ndarray, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        make_forecaster("last").forecast(history, 1)
    with pytest.raises(ConfigError, match="steps must be a positive integer"):
        make_forecaster("last").forecast(np.ones((2, 2)), 0)
