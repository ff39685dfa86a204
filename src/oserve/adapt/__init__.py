"""Temporal adaptation: forecast the per-type workload, plan deployment switches, decide when to switch."""

from oserve.adapt.forecast import (
    FORECASTERS,
    ArimaForecaster,
    BacktestResult,
    ErrorStats,
    EwmaForecaster,
    Forecaster,
    HoltWintersForecaster,
    LastValueForecaster,
    LstmForecaster,
    SeasonalNaiveForecaster,
    backtest,
    error_stats,
    make_forecaster,
    parse_forecaster,
)

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
