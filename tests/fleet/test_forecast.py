"""Hourly fleet forecasts: the daily adjustment aligns phases, and the backtest beats the day-ago forecast."""

from __future__ import annotations

import numpy as np

from oserve.adapt.forecast import make_forecaster
from oserve.fleet import SeasonallyAdjusted, backtest_fleet, builtin_fleet, builtin_workload


def test_adjustment_reproduces_a_pure_daily_pattern() -> None:
    hours = np.arange(24 * 5 + 7)  # history ends mid-day: phases must line up with the clock
    series = (10 + 5 * np.sin(2 * np.pi * hours / 24))[:, None] * np.array([[1.0, 3.0]])
    f = SeasonallyAdjusted(make_forecaster("last"))
    ahead = f.forecast(series, 30)
    future = np.arange(len(hours), len(hours) + 30)
    expect = (10 + 5 * np.sin(2 * np.pi * future / 24))[:, None] * np.array([[1.0, 3.0]])
    assert np.allclose(ahead, expect, rtol=1e-9)


def test_backtest_on_the_builtin_scenario_beats_the_day_ago_forecast() -> None:
    w = builtin_workload(builtin_fleet(), days=3, history_days=7)
    hourly = w.hourly_rps()[0, :, 0]  # us-east IW, the four models (keeps the test fast)
    names = list(w.models)
    adjusted = backtest_fleet(hourly, names, "holt-winters", horizon_h=24, stride_h=12)
    day_ago = backtest_fleet(hourly, names, "seasonal", horizon_h=24, stride_h=12)
    assert adjusted.num_origins == day_ago.num_origins >= 4
    assert adjusted.overall.smape_pct < day_ago.overall.smape_pct
    assert adjusted.overall.smape_pct < 15.0
    assert adjusted.forecasts.min() >= 0
