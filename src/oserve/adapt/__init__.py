"""Adaptation over time: forecast the per-type load, decide when to re-plan, and switch deployments cheaply.

Forecasters (``FORECASTERS``, ``backtest``; docs/forecast.md) predict per-type rates over a horizon. The switch
planner (``plan_switch``) turns a running deployment into a target one: it keeps identical replicas, reuses weights
already resident, moves the rest over the fastest links without oversubscribing them, and prices the engine
restarts; ``naive_reload_plan`` is the reload-from-disk baseline; ``price_switch`` picks one by where the weights come
from (``DecisionConfig.weights_from``). docs/switch.md.
"""

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
from oserve.adapt.switch import (
    CHUNK_BYTES,
    COLD_RESTART_S,
    WAKE_RESTART_S,
    naive_reload_plan,
    plan_switch,
    price_switch,
)
from oserve.adapt.switch_plan import StartedReplica, SwitchPlan
from oserve.adapt.transfers import Transfer

__all__ = [
    "CHUNK_BYTES",
    "COLD_RESTART_S",
    "FORECASTERS",
    "WAKE_RESTART_S",
    "ArimaForecaster",
    "BacktestResult",
    "ErrorStats",
    "EwmaForecaster",
    "Forecaster",
    "HoltWintersForecaster",
    "LastValueForecaster",
    "LstmForecaster",
    "SeasonalNaiveForecaster",
    "StartedReplica",
    "SwitchPlan",
    "Transfer",
    "backtest",
    "error_stats",
    "make_forecaster",
    "naive_reload_plan",
    "parse_forecaster",
    "plan_switch",
    "price_switch",
]
