"""Plots of simulation results: latency CDFs and throughput / load over time, per policy."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

if TYPE_CHECKING:
    from oserve.sim import SimResult

__all__ = ["plot_latency_cdfs", "plot_timeline"]


def plot_latency_cdfs(results: dict[str, SimResult], folder: str | Path) -> Path:
    """TTFT, TPOT and E2E latency CDFs, one line per policy, into ``folder/latency_cdf.png``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    styles = ("-", "--", "-.", ":")  # policies whose lines coincide stay apart by their dashes
    seen: list[
        tuple[str, np.ndarray]
    ] = []  # (name, sorted E2E): a policy identical to an earlier one says so
    for i, (name, result) in enumerate(results.items()):
        rec = result.records
        done = rec[~rec["dropped"]]
        ttft = (done["first_token_s"] - done["arrival_s"]).to_numpy()
        e2e = (done["finish_s"] - done["arrival_s"]).to_numpy()
        multi = done["output_tokens"] > 1
        tpot = (
            (done["finish_s"] - done["first_token_s"])[multi] / (done["output_tokens"][multi] - 1)
        ).to_numpy()
        key = np.sort(e2e)
        same = next((other for other, xs in seen if np.array_equal(xs, key, equal_nan=True)), None)
        seen.append((name, key))
        label = f"{name} (= {same})" if same else name
        for ax, values, scale in ((axes[0], ttft, 1.0), (axes[1], tpot, 1e3), (axes[2], e2e, 1.0)):
            xs = np.sort(values) * scale
            ax.plot(
                xs,
                np.arange(1, len(xs) + 1) / max(1, len(xs)),
                label=label,
                linestyle=styles[i % len(styles)],
                linewidth=max(1.0, 3.0 - 0.4 * i),  # each later line thinner, on top: coinciding ones show
            )
    for ax, title in zip(axes, ("TTFT (s)", "TPOT (ms)", "E2E latency (s)"), strict=True):
        ax.set_xscale("log")
        ax.set_xlabel(title)
        ax.set_ylabel("fraction of requests")
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(6, len(labels)), frameon=False)
    fig.suptitle("Latency CDFs by policy")
    fig.tight_layout(rect=(0, 0.08, 1, 1))  # the legend below the panels, clear of every line
    out = folder / "latency_cdf.png"
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_timeline(results: dict[str, SimResult], folder: str | Path, *, bin_s: float = 60.0) -> Path:
    """Completed requests/s and requests in the system over time, per policy, into ``folder/timeline.png``.

    In-system = arrived and not yet finished (queued or running), sampled at each bin's end; both come from the
    per-request records.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(12, 6.5), sharex=True)
    for name, result in results.items():
        rec = result.records
        done = rec[~rec["dropped"]]
        end = (
            float(max(done["finish_s"].max(), rec["arrival_s"].max()))
            if len(done)
            else float(rec["arrival_s"].max())
        )
        edges = np.arange(0.0, end + bin_s, bin_s)
        finished, _ = np.histogram(done["finish_s"], bins=edges)
        top.plot(edges[1:] / 60.0, finished / bin_s, label=name)
        arrived = np.searchsorted(np.sort(rec["arrival_s"].to_numpy()), edges[1:], side="right")
        left = np.searchsorted(np.sort(done["finish_s"].to_numpy()), edges[1:], side="right")
        bottom.plot(edges[1:] / 60.0, arrived - left, label=name)
    top.set_ylabel("completed req/s")
    bottom.set_ylabel("requests in system")
    bottom.set_xlabel("time (min)")
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
    top.legend()
    fig.suptitle(f"Throughput and load over time ({bin_s:.0f} s bins)")
    fig.tight_layout()
    out = folder / "timeline.png"
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
