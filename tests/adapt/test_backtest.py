"""The rolling-origin backtest: its arithmetic on a hand-computed case, its fit schedule, its errors."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from oserve.adapt import ErrorStats, backtest, error_stats, make_forecaster
from oserve.errors import ConfigError


def test_hand_computed_case() -> None:
    # type 0: 1, 2, 4, 0, 2; type 1 always 0. 'last', 1 window of history, 2 ahead -> origins 1, 2, 3:
    #   t=1 forecasts (1, 1) for (2, 4); t=2 (2, 2) for (4, 0); t=3 (4, 4) for (0, 2)
    series = np.array([[1.0, 0.0], [2.0, 0.0], [4.0, 0.0], [0.0, 0.0], [2.0, 0.0]])
    res = backtest(series, make_forecaster("last"), 1, 2, type_names=["a", "b"])
    np.testing.assert_array_equal(res.origins, [1, 2, 3])
    np.testing.assert_array_equal(res.forecasts[:, :, 0], [[1, 1], [2, 2], [4, 4]])
    np.testing.assert_array_equal(res.actuals[:, :, 0], [[2, 4], [4, 0], [0, 2]])
    a = res.per_type[0]
    # |f - a| = 1, 3, 2, 2, 4, 2; MAPE over the 4 non-zero actuals: 1/2, 3/4, 2/4, 2/2
    assert a == ErrorStats(
        6, pytest.approx(100 * 2.75 / 4), pytest.approx(100 * 7.2 / 6), pytest.approx(14 / 6), 2
    )
    # sMAPE terms 2|f-a|/(a+f): 2/3, 6/5, 4/6, 4/2, 8/4, 4/6 -> sum 7.2
    b = res.per_type[1]  # 0 forecast for 0 actual: exact for sMAPE, absent from MAPE
    assert b.smape_pct == 0.0 and math.isnan(b.mape_pct) and b.zero_actuals == 6 and b.mae_rps == 0.0
    assert res.overall == ErrorStats(
        12, pytest.approx(68.75), pytest.approx(100 * 7.2 / 12), pytest.approx(14 / 12), 8
    )
    assert res.total == a  # type 1 adds nothing to the total rate
    d = json.loads(json.dumps(res.to_dict(series=True), allow_nan=False))
    assert d["per_type"]["b"]["mape_pct"] is None and d["origins"] == 3
    assert d["series"]["forecasts_rps"][0] == [[1.0, 0.0], [1.0, 0.0]]


def test_error_stats_edges() -> None:
    empty = error_stats(np.zeros(0), np.zeros(0))
    assert empty.points == 0 and math.isnan(empty.smape_pct)
    assert error_stats(np.array([0.0]), np.array([3.0])).smape_pct == 200.0
    with pytest.raises(ConfigError, match="differ in size"):
        error_stats(np.zeros(3), np.zeros(2))


class Recorder:
    """A forecaster that records what it is shown and predicts the history's last row."""

    name = "recorder"

    def __init__(self) -> None:
        self.fallbacks = 0
        self.fits: list[int] = []
        self.histories: list[int] = []

    def fit(self, rates_rps: np.ndarray) -> None:
        self.fits.append(len(rates_rps))

    def forecast(self, history_rps: np.ndarray, steps: int) -> np.ndarray:
        self.histories.append(len(history_rps))
        self.fallbacks += 1
        return np.repeat(history_rps[-1:], steps, axis=0)


def test_fit_schedule_history_length_and_stride() -> None:
    series = np.arange(40.0)[:, None]
    rec = Recorder()
    res = backtest(series, rec, 4, 3, train_windows=10, refit_windows=8, stride_windows=2)
    np.testing.assert_array_equal(res.origins, np.arange(10, 38, 2))
    assert rec.fits == [10, 18, 26, 34]  # fitted on everything before the origin, every 8 windows
    assert set(rec.histories) == {4}
    assert res.fallbacks == len(res.origins) and res.fallback_share == 1.0
    once = Recorder()
    backtest(series, once, 4, 3)
    assert once.fits == [4]


def test_bad_arguments() -> None:
    series = np.ones((10, 2))
    with pytest.raises(
        ConfigError, match="has 10 windows; 8 of history/training plus a 3-window horizon needs"
    ):
        backtest(series, make_forecaster("last"), 8, 3)
    with pytest.raises(ConfigError, match="history_windows must be an integer >= 1"):
        backtest(series, make_forecaster("last"), 0, 3)
    with pytest.raises(ConfigError, match="3 type names for 2 types"):
        backtest(series, make_forecaster("last"), 2, 3, type_names=["a", "b", "c"])

    class Wrong(Recorder):
        def forecast(self, history_rps, steps):
            return np.zeros((steps + 1, 2))

    with pytest.raises(ConfigError, match="returned shape"):
        backtest(series, Wrong(), 2, 3)
