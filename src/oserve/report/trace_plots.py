"""One-page picture of a trace: arrival rate over time, type mix over time, prompt and output lengths."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from oserve.trace import Trace, TypeGrid, workload_series

__all__ = ["plot_trace"]


def _time_axis(duration_s: float) -> tuple[float, str]:
    """(divisor, label) so the x axis reads in s, min or h."""
    if duration_s > 3 * 3600:
        return 3600.0, "time (h)"
    if duration_s > 300:
        return 60.0, "time (min)"
    return 1.0, "time (s)"


def _length_hist(ax: Axes, values: np.ndarray, edges: tuple[int, ...], title: str, color: str) -> None:
    top = max(2.0, float(values.max()) if len(values) else 2.0)
    bins = np.geomspace(1.0, top * 1.05, 60)
    ax.hist(np.maximum(values, 1), bins=bins, color=color, alpha=0.8)
    ax.set_xscale("log")
    for e in edges:
        ax.axvline(e, color="black", linestyle="--", linewidth=1)
    if len(values):
        p50, p99 = np.quantile(values, [0.5, 0.99])
        ax.set_title(f"{title}: mean {values.mean():,.0f}, p50 {p50:,.0f}, p99 {p99:,.0f}", fontsize=10)
    ax.set_xlabel("tokens (log scale; dashed: type edges)")
    ax.set_ylabel("requests")


def plot_trace(trace: Trace, grid: TypeGrid, path: str | Path, *, window_s: float = 300.0) -> Path:
    """Write a 2x2 PNG: rate over time, stacked per-type rate, prompt and output length histograms."""
    path = Path(path)
    div, xlabel = _time_axis(trace.duration_s)
    fig = Figure(figsize=(13, 8.5), layout="constrained")
    (ax_rate, ax_mix), (ax_prompt, ax_output) = fig.subplots(2, 2)
    fig.suptitle(
        f"{trace.name}: {len(trace):,} requests, {trace.duration_s / div:,.1f} "
        f"{xlabel.split('(')[1].rstrip(')')}, {trace.rate_rps:.2f} req/s",
        fontsize=12,
    )

    fine_s = max(window_s / 10.0, trace.duration_s / 600.0, 1e-9)
    fine = workload_series(trace, TypeGrid(), fine_s)
    coarse = workload_series(trace, grid, window_s)
    ax_rate.plot(
        fine.start_s / div, fine.total_rate_rps, color="tab:gray", linewidth=0.7, label=f"{fine_s:g} s bins"
    )
    edges = np.append(coarse.start_s, coarse.start_s[-1] + coarse.window_len_s[-1]) / div
    ax_rate.stairs(
        coarse.total_rate_rps, edges, color="tab:blue", linewidth=2, label=f"{window_s:g} s windows"
    )
    ax_rate.set_xlabel(xlabel)
    ax_rate.set_ylabel("arrival rate (req/s)")
    ax_rate.set_title("arrival rate", fontsize=10)
    ax_rate.legend(fontsize=8, loc="upper right")
    ax_rate.set_ylim(bottom=0)

    rates = coarse.rates_rps
    colors = [f"C{i % 10}" for i in range(grid.num_types)]
    bottom = np.zeros(len(coarse.start_s))
    for k, rt in enumerate(grid.types):
        ax_mix.stairs(
            bottom + rates[:, k],
            edges,
            baseline=bottom,
            fill=True,
            color=colors[k],
            label=f"{rt.short}: {rt.name}",
        )
        bottom = bottom + rates[:, k]
    ax_mix.set_xlabel(xlabel)
    ax_mix.set_ylabel("arrival rate (req/s)")
    ax_mix.set_title(f"request-type mix per {window_s:g} s window (stacked)", fontsize=10)
    ax_mix.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax_mix.set_ylim(bottom=0)

    _length_hist(ax_prompt, trace.prompt_tokens, grid.prompt_edges, "prompt tokens", "tab:blue")
    _length_hist(ax_output, trace.output_tokens, grid.output_edges, "output tokens", "tab:orange")
    fig.savefig(path, dpi=110)
    return path
