"""Properties every forecaster keeps on any non-negative history: shape, finiteness, non-negativity."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from oserve.adapt import make_forecaster

rates = st.integers(1, 24).flatmap(
    lambda n: st.integers(1, 3).flatmap(
        lambda k: arrays(
            np.float64,
            (n, k),
            elements=st.one_of(st.just(0.0), st.floats(0.0, 50.0, allow_nan=False, allow_infinity=False)),
        )
    )
)


@pytest.mark.parametrize(
    ("name", "examples"),
    [("last", 100), ("ewma", 100), ("seasonal", 100), ("holt-winters", 10), ("arima", 8)],
)
def test_forecast_shape_finite_nonnegative(name: str, examples: int) -> None:
    @settings(max_examples=examples, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(history=rates, steps=st.integers(1, 12), seasonal_period=st.integers(1, 8))
    def check(history: np.ndarray, steps: int, seasonal_period: int) -> None:
        params = {"period_windows": seasonal_period} if name == "seasonal" else {}
        f = make_forecaster(name, **params)
        out = f.forecast(history, steps)
        assert out.shape == (steps, history.shape[1])
        assert np.isfinite(out).all() and (out >= 0).all()
        assert out.max() <= 10 * history.max() + 1e-9  # the blow-up guard (and trivially for the others)

    check()


@settings(max_examples=6, deadline=None)
@given(history=rates)
def test_fitted_statistical_forecasts_keep_the_properties(history: np.ndarray) -> None:
    for name in ("holt-winters", "arima"):
        f = make_forecaster(name)
        f.fit(np.concatenate([history, history[::-1], history]))
        out = f.forecast(history, 5)
        assert out.shape == (5, history.shape[1]) and np.isfinite(out).all() and (out >= 0).all()
