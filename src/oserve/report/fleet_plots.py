"""Fleet plots: instances per region and model over time against the IW load, one PNG per policy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

__all__ = ["plot_fleet"]


def plot_fleet(result, regions: list[str], models: list[str], path: str | Path) -> Path:
    """One panel per (region, model): GPUs in use (instances x their GPUs, by config, stacked) and the IW
    load offered (req/s, right axis), hour by hour."""
    tab = result.table
    hours = np.arange(result.counts.shape[2]) + result.start_hour
    days = (hours - hours[0]) / 24.0
    # a fixed layout: constrained layout over twin axes costs ~10 s a figure at 3 x 4 panels
    fig = Figure(figsize=(3.8 * len(models), 2.3 * len(regions) + 0.9))
    fig.subplots_adjust(left=0.05, right=0.95, top=0.9, bottom=0.08, wspace=0.45, hspace=0.35)
    axes = fig.subplots(len(regions), len(models), squeeze=False, sharex=True)
    for r, region in enumerate(regions):
        for m, model in enumerate(models):
            ax = axes[r][m]
            js = tab.of_model(m)
            stacks = [result.counts[r, j] * tab.configs[j].gpus for j in js]
            labels = [tab.configs[j].label for j in js]
            used = [(s, lab) for s, lab in zip(stacks, labels, strict=True) if s.any()]
            if used:
                ax.stackplot(
                    days, *[s for s, _ in used], labels=[lab for _, lab in used], step="post", alpha=0.7
                )
            ax.set_ylabel("GPUs" if m == 0 else "")
            ax.set_title(f"{region} / {model}", fontsize=9)
            twin = ax.twinx()
            twin.plot(days, result.iw_load_rps[r, m], color="black", linewidth=0.8, label="IW load")
            twin.set_ylabel("IW req/s" if m == len(models) - 1 else "", fontsize=8)
            twin.tick_params(labelsize=7)
            ax.tick_params(labelsize=7)
            if used:
                ax.legend(fontsize=6, loc="upper left")
            if r == len(regions) - 1:
                ax.set_xlabel("days")
    s = result.summary()
    fig.suptitle(
        f"{result.policy}: {s['gpu_hours']:,.0f} GPU-h, ${s['cost_usd']:,.0f}, IW SLO {s['iw_slo_attainment']:.2%}, "
        f"NIW on time {s['niw_deadline_met']:.2%}, {s['scaling_actions']:,} scaling actions",
        fontsize=10,
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path
