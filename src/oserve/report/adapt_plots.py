"""Per-type arrival rates over time beside the adaptive controller's forecasts, and its switches."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from oserve.trace import Trace, TypeGrid, workload_series

__all__ = ["plot_rates_and_forecasts"]


def plot_rates_and_forecasts(
    trace: Trace,
    grid: TypeGrid,
    forecasts: Sequence[tuple[float, np.ndarray]],
    path: str | Path,
    *,
    switches_s: Sequence[float] = (),
    bin_s: float = 60.0,
) -> Path:
    """One panel per type: the true rate per ``bin_s`` (line) and each decision's forecast (dots at the decision
    time), with the switches as vertical lines."""
    series = workload_series(trace, grid, bin_s)
    names = grid.names
    rows = int(np.ceil(len(names) / 2))
    fig, axes = plt.subplots(rows, 2, figsize=(11, 2.2 * rows), sharex=True, squeeze=False)
    times = np.array([t for t, _ in forecasts])
    values = np.array([r for _, r in forecasts]) if forecasts else np.zeros((0, len(names)))
    for k, (ax, name) in enumerate(zip(axes.flat, names, strict=False)):
        ax.step(series.start_s / 60, series.rates_rps[:, k], where="post", color="0.3", lw=1, label="actual")
        if len(times):
            ax.plot(times / 60, values[:, k], "o", ms=3, color="tab:orange", label="forecast (planned for)")
        for s in switches_s:
            ax.axvline(s / 60, color="tab:red", lw=0.8, ls="--")
        ax.set_title(name, fontsize=9)
        ax.set_ylabel("req/s")
    for ax in axes.flat[len(names) :]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("minutes")
    axes.flat[0].legend(fontsize=7, loc="upper right")
    fig.suptitle("per-type arrival rate, the controller's forecasts and its switches (dashed)")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
