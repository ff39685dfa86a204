"""Workload forecasters: per-type arrival rates for the next windows, and their rolling-origin backtest.

make_forecaster("holt-winters") / parse_forecaster("ewma:alpha=0.5")  -> Forecaster (FORECASTERS by name)
forecaster.fit(rates)  then  forecaster.forecast(history, steps)       -> steps x types, req/s, >= 0
backtest(rates, forecaster, history_windows, horizon_windows)         -> BacktestResult (MAPE, sMAPE, wall)
"""

from oserve.adapt.forecast.backtest import BacktestResult, ErrorStats, backtest, error_stats
from oserve.adapt.forecast.base import (
    EwmaForecaster,
    Forecaster,
    LastValueForecaster,
    SeasonalNaiveForecaster,
)
from oserve.adapt.forecast.lstm import LstmForecaster
from oserve.adapt.forecast.registry import FORECASTERS, make_forecaster, parse_forecaster
from oserve.adapt.forecast.statistical import ArimaForecaster, HoltWintersForecaster

__all__ = [
    "FORECASTERS",
    "ArimaForecaster",
    "BacktestResult",
    "ErrorStats",
    "EwmaForecaster",
    "Forecaster",
    "HoltWintersForecaster",
    "LastValueForecaster",
    "LstmForecaster",
    "SeasonalNaiveForecaster",
    "backtest",
    "error_stats",
    "make_forecaster",
    "parse_forecaster",
]
