"""Plots of simulation results: latency CDFs per policy."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

if TYPE_CHECKING:
    from oserve.sim import SimResult

__all__ = ["plot_latency_cdfs"]


def plot_latency_cdfs(results: dict[str, SimResult], folder: str | Path) -> Path:
    """TTFT, TPOT and E2E latency CDFs, one line per policy, into ``folder/latency_cdf.png``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for name, result in results.items():
        rec = result.records
        done = rec[~rec["dropped"]]
        ttft = (done["first_token_s"] - done["arrival_s"]).to_numpy()
        e2e = (done["finish_s"] - done["arrival_s"]).to_numpy()
        multi = done["output_tokens"] > 1
        tpot = (
            (done["finish_s"] - done["first_token_s"])[multi] / (done["output_tokens"][multi] - 1)
        ).to_numpy()
        for ax, values, scale in ((axes[0], ttft, 1.0), (axes[1], tpot, 1e3), (axes[2], e2e, 1.0)):
            xs = np.sort(values) * scale
            ax.plot(xs, np.arange(1, len(xs) + 1) / max(1, len(xs)), label=name)
    for ax, title in zip(axes, ("TTFT (s)", "TPOT (ms)", "E2E latency (s)"), strict=True):
        ax.set_xscale("log")
        ax.set_xlabel(title)
        ax.set_ylabel("fraction of requests")
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle("Latency CDFs by policy")
    fig.tight_layout()
    out = folder / "latency_cdf.png"
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
