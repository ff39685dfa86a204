"""Forecasters by the name users type, and the ``name:key=value:...`` spelling the CLI takes."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from oserve.adapt.forecast.base import (
    EwmaForecaster,
    Forecaster,
    LastValueForecaster,
    SeasonalNaiveForecaster,
)
from oserve.adapt.forecast.lstm import LstmForecaster
from oserve.adapt.forecast.statistical import ArimaForecaster, HoltWintersForecaster
from oserve.errors import ConfigError

__all__ = ["FORECASTERS", "make_forecaster", "parse_forecaster"]

FORECASTERS: dict[str, Callable[..., Forecaster]] = {
    "last": LastValueForecaster,
    "ewma": EwmaForecaster,
    "seasonal": SeasonalNaiveForecaster,
    "holt-winters": HoltWintersForecaster,
    "arima": ArimaForecaster,
    "lstm": LstmForecaster,
}


def make_forecaster(name: str, **params: Any) -> Forecaster:
    """A forecaster by its registered name, with its keyword parameters (``make_forecaster("ewma", alpha=0.5)``)."""
    try:
        factory = FORECASTERS[name]
    except KeyError:
        raise ConfigError(f"unknown forecaster {name!r}; choose one of {', '.join(FORECASTERS)}") from None
    accepted = list(inspect.signature(factory).parameters)
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        takes = ", ".join(accepted) or "no parameters"
        raise ConfigError(f"forecaster {name!r} has no parameter {', '.join(unknown)}; it takes {takes}")
    return factory(**params)


def _number(text: str, where: str) -> int | float:
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"{where}: {text!r} is not a number") from None


def parse_forecaster(spec: str) -> Forecaster:
    """``ewma``, ``ewma:alpha=0.5``, ``arima:p=2:q=0`` -> the forecaster (numbers only as values)."""
    name, *pairs = (part.strip() for part in spec.strip().split(":"))
    params: dict[str, int | float] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ConfigError(f"forecaster {spec!r}: expected name:key=value, got {pair!r}")
        params[key.strip()] = _number(value.strip(), f"forecaster {spec!r}")
    return make_forecaster(name, **params)
