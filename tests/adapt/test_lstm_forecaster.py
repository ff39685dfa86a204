"""The LSTM forecaster: fast, seeded and deterministic training; a clear error without torch."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from oserve.adapt import LstmForecaster, backtest, make_forecaster
from oserve.errors import ConfigError


def _hour(seed: int = 0) -> np.ndarray:
    """360 ten-second windows x 6 types: Poisson counts around slow sinusoids (an hour of 10 s rates)."""
    rng = np.random.default_rng(seed)
    t = np.arange(360)[:, None]
    mean = 1.0 + 0.5 * np.sin(2 * np.pi * t / 120 + np.arange(6))
    return rng.poisson(10 * mean) / 10.0


@pytest.mark.torch
def test_trains_deterministically_and_forecasts_sensibly() -> None:
    rates = _hour()
    a, b = LstmForecaster(seed=3, epochs=60), LstmForecaster(seed=3, epochs=60)
    a.fit(rates[:300])
    b.fit(rates[:300])
    assert a.trained and a.train_s > 0 and np.isfinite(a.train_loss)
    fa, fb = a.forecast(rates[294:300], 12), b.forecast(rates[294:300], 12)
    np.testing.assert_array_equal(fa, fb)
    assert fa.shape == (12, 6) and (fa >= 0).all() and a.fallbacks == 0
    other = LstmForecaster(seed=4, epochs=60)
    other.fit(rates[:300])
    assert not np.array_equal(other.forecast(rates[294:300], 12), fa)
    # as good as the last value on noisy data, in the same ballpark as EWMA
    res = backtest(rates, LstmForecaster(epochs=60), 6, 6, train_windows=300)
    last = backtest(rates, make_forecaster("last"), 6, 6, train_windows=300)
    assert res.overall.mae_rps < last.overall.mae_rps


@pytest.mark.torch
def test_constant_and_short_histories() -> None:
    f = LstmForecaster(epochs=60)
    f.fit(np.tile([2.0, 0.0, 5.0], (100, 1)))
    np.testing.assert_allclose(
        f.forecast(np.tile([2.0, 0.0, 5.0], (6, 1)), 4), np.tile([2.0, 0.0, 5.0], (4, 1)), rtol=0.1, atol=0.1
    )
    fresh = LstmForecaster()  # unfitted, too little history to train on: EWMA, counted
    out = fresh.forecast(np.array([[1.0, 2.0], [3.0, 2.0]]), 3)
    np.testing.assert_allclose(out, np.tile([1.6, 2.0], (3, 1)))
    assert not fresh.trained and fresh.fallbacks == 2
    with pytest.raises(ConfigError, match="fitted on 3 types, history has 2"):
        f.forecast(np.ones((6, 2)), 1)


def test_without_torch_oserve_imports_and_lstm_names_the_extra(monkeypatch) -> None:
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import oserve.adapt, oserve.cli.main\n"
        "from oserve.adapt import make_forecaster\n"
        "from oserve.errors import ConfigError\n"
        "import numpy as np\n"
        "try:\n"
        "    make_forecaster('lstm').forecast(np.ones((200, 2)), 3)\n"
        "except ConfigError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "install the profile extra: pip install 'oserve[profile]'" in out
    with pytest.raises(ConfigError, match="lookback_windows must be a positive integer"):
        LstmForecaster(lookback_windows=0)
