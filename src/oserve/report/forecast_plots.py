"""Actual vs forecast per request type over a backtest (one forecaster)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from oserve.adapt import BacktestResult

__all__ = ["plot_backtest"]


def plot_backtest(result: BacktestResult, path: str | Path, *, bin_s: float) -> Path:
    """Write a PNG, one panel per type: the actual rate, the forecast one bin ahead and the forecast
    ``horizon`` ahead, each drawn at the window it predicts."""
    types = len(result.type_names)
    cols = 2 if types > 1 else 1
    rows = math.ceil(types / cols)
    fig = Figure(figsize=(7 * cols, 2.4 * rows + 0.6), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False, sharex=True)
    horizon = result.horizon_windows
    start = result.origins * bin_s / 60.0  # minutes; the window each origin forecasts first
    ahead = (result.origins + horizon - 1) * bin_s / 60.0
    # the actual rate at every origin's first window, then the last origin's whole horizon
    tail = (result.origins[-1] + np.arange(1, horizon)) * bin_s / 60.0
    actual_t = np.concatenate([start, tail])
    for k, name in enumerate(result.type_names):
        ax = axes[k // cols][k % cols]
        actual = np.concatenate([result.actuals[:, 0, k], result.actuals[-1, 1:, k]])
        ax.plot(actual_t, actual, color="black", linewidth=0.8, label="actual")
        ax.plot(start, result.forecasts[:, 0, k], color="tab:blue", linewidth=0.9, label=f"{bin_s:g} s ahead")
        if horizon > 1:
            ax.plot(
                ahead,
                result.forecasts[:, -1, k],
                color="tab:orange",
                linewidth=0.9,
                label=f"{horizon * bin_s:g} s ahead",
            )
        stats = result.per_type[k]
        ax.set_title(f"{name}: sMAPE {stats.smape_pct:.0f}%, MAE {stats.mae_rps:.2f} req/s", fontsize=10)
        ax.set_ylabel("req/s")
        if k // cols == rows - 1:
            ax.set_xlabel("time (min)")
    for k in range(types, rows * cols):
        axes[k // cols][k % cols].set_visible(False)
    axes[0][0].legend(fontsize=8, loc="upper right")
    fig.suptitle(
        f"{result.forecaster}: per-type rate, actual vs forecast ({bin_s:g} s bins, "
        f"{result.history_windows * bin_s:g} s history)"
    )
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    return out
