"""The demo's comparison at a glance: goodput and SLO attainment per class, one bar per policy."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

if TYPE_CHECKING:
    from oserve.sim import SimResult

__all__ = ["plot_policy_bars"]


def plot_policy_bars(results: dict[str, SimResult], folder: str | Path, *, highlight: str = "") -> Path:
    """Goodput (req/s within SLO) and SLO attainment overall and per class, per policy, each bar labelled with
    its value, into ``folder/policies.png``; ``highlight`` (a policy name) is drawn darker."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    names = list(results)
    classes = sorted({c for r in results.values() for c in r.summary.get("slo_attainment_by_class", {})})
    groups = ["overall", *classes]
    colours = ["#1f77b4" if n == highlight else "#9ab8d4" for n in names]
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.6), gridspec_kw={"width_ratios": [1, 1.6]})
    goodput = [float(results[n].summary["goodput_rps"]) for n in names]
    bars = left.bar(names, goodput, color=colours)
    left.bar_label(bars, fmt="%.1f", fontsize=8)
    left.set_ylabel("goodput (req/s within SLO)")
    left.set_title("Goodput", fontsize=10)
    left.tick_params(axis="x", rotation=20)
    width = 0.8 / len(names)
    x = np.arange(len(groups))
    cmap = plt.get_cmap("tab10")
    for i, n in enumerate(names):
        s = results[n].summary
        by = s.get("slo_attainment_by_class", {})
        values = [float(s["slo_attainment"]), *(float(by.get(c, np.nan)) for c in classes)]
        bars = right.bar(
            x + (i - (len(names) - 1) / 2) * width,
            [100 * v for v in values],
            width,
            label=n,
            color=cmap(i % 10),
            edgecolor="black" if n == highlight else None,
        )
        right.bar_label(bars, fmt="%.0f", fontsize=7)
    right.set_xticks(x, [f"{g} class" if g != "overall" else g for g in groups])
    right.set_ylabel("SLO attainment (%)")
    right.set_ylim(0, 110)
    right.set_title("SLO attainment", fontsize=10)
    right.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=8)
    for ax in (left, right):
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("Per policy: goodput and SLO attainment")
    fig.tight_layout()
    out = folder / "policies.png"
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
