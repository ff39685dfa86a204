"""Deployment timeline: which replica held which GPUs when, in what shape, and when it was out of service.

One row per replica the run had, rows ordered by GPU ids so a replica and the ones that replaced it on the same
GPUs sit together; bars coloured by replica shape (``TP4``, ``TP2PP2``), loading (GPUs held, not yet serving)
and draining (stopped by a switch, GPUs not yet released) hatched, switch instants as dashed lines. The
intervals come from ``SimResult.replicas`` (``alloc_s``, ``ready_s``, ``stop_s``, ``release_s``) through
:func:`deployment_segments`, which the plot draws as they are.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

if TYPE_CHECKING:
    from oserve.sim import SimResult

__all__ = ["Segment", "deployment_segments", "plot_deployment_timeline", "replica_rows"]

State = Literal["loading", "serving", "draining"]
_DRAIN_FACE = "#c8c8c8"
_MIN_WINDOW = 0.004  # out-of-service windows are drawn at least this fraction of the time axis wide


@dataclass(frozen=True, slots=True)
class Segment:
    """One interval of a replica's life, in simulated seconds: ``loading`` (GPUs held, weights loading),
    ``serving`` (routable) or ``draining`` (stopped by a switch, GPUs not yet released)."""

    replica: str
    config: str  # short shape label, e.g. "TP4", "TP2PP2" ("A100-80GB TP4" when GPU types are mixed)
    gpu_ids: tuple[int, ...]
    state: State
    start_s: float
    end_s: float


def _short_labels(labels: list[str]) -> dict[str, str]:
    """``H100-SXM-80GB:tp2pp2`` -> ``TP2PP2``; the GPU name is kept when the run mixes GPU types."""
    gpus = {label.partition(":")[0] for label in labels}
    out = {}
    for label in labels:
        gpu, _, shape = label.partition(":")
        out[label] = shape.upper() if len(gpus) == 1 else f"{gpu} {shape.upper()}"
    return out


def replica_rows(result: SimResult) -> list[str]:
    """Replica names in plotting order: by lowest GPU id, then by when they took their GPUs, then name."""
    rep = result.replicas
    keys = [
        (min(ids), alloc, name)
        for name, ids, alloc in zip(rep["replica"], rep["gpu_ids"], rep["alloc_s"], strict=True)
    ]
    return [k[2] for k in sorted(keys)]


def deployment_segments(result: SimResult, labels: dict[str, str] | None = None) -> list[Segment]:
    """Every replica's loading / serving / draining intervals, in :func:`replica_rows` order then time.

    A replica still running at the end serves until ``summary["span_s"]``; one that never got its GPUs
    (``ready_s`` infinite) has no segments; empty intervals (a requeue stop released at once) are left out.
    ``labels`` maps config labels to the shape names used (default: short names over this run's configs).
    """
    span = float(result.summary["span_s"])
    labels = labels or _short_labels(sorted(set(result.replicas["config"])))
    by_name = {row["replica"]: row for row in result.replicas.to_dict(orient="records")}
    out: list[Segment] = []
    for name in replica_rows(result):
        row = by_name[name]
        ready, stop, release = float(row["ready_s"]), float(row["stop_s"]), float(row["release_s"])
        if ready == math.inf:
            continue
        held_until = span if math.isnan(release) else release
        stop_at = held_until if math.isnan(stop) else stop
        spans: list[tuple[State, float, float]] = [
            ("loading", float(row["alloc_s"]), min(ready, stop_at)),
            ("serving", ready, stop_at),
        ]
        if not math.isnan(stop):
            spans.append(("draining", stop_at, held_until))
        for state, start, end in spans:
            if end > start:
                out.append(Segment(name, labels[row["config"]], tuple(row["gpu_ids"]), state, start, end))
    return out


def _gpu_text(ids: tuple[int, ...]) -> str:
    ids = tuple(sorted(ids))
    if len(ids) > 1 and ids == tuple(range(ids[0], ids[-1] + 1)):
        return f"GPU {ids[0]}-{ids[-1]}"
    return "GPU " + ",".join(map(str, ids))


def _draw(
    ax, result: SimResult, labels: dict[str, str], colours: dict[str, str], scale: float, min_width: float
) -> None:
    rows = replica_rows(result)
    y_of = {name: len(rows) - 1 - i for i, name in enumerate(rows)}  # first row on top
    gpus = dict(zip(result.replicas["replica"], result.replicas["gpu_ids"], strict=True))
    segments = deployment_segments(result, labels)
    # serving first, so the (widened) out-of-service windows are drawn on top of it
    for seg in sorted(segments, key=lambda s: s.state != "serving"):
        colour = colours[seg.config]
        style = {
            "serving": {"color": colour, "edgecolor": colour},
            "loading": {"color": colour, "alpha": 0.35, "hatch": "//", "edgecolor": colour},
            "draining": {"color": _DRAIN_FACE, "hatch": "xx", "edgecolor": colour},
        }[seg.state]
        width = (seg.end_s - seg.start_s) / scale
        if seg.state != "serving":
            width = max(width, min_width)
        ax.barh(y_of[seg.replica], width, left=seg.start_s / scale, height=0.7, linewidth=0.8, **style)
    # a thin rule wherever the next row starts on GPUs disjoint from everything above it in its group
    seen: set[int] = set()
    for name in rows:
        ids = set(gpus[name])
        if seen and not ids & seen:
            ax.axhline(y_of[name] + 0.5, color="0.6", linewidth=0.6)
            seen = set()
        seen |= ids
    for k, sw in enumerate(result.switches, start=1):
        x = float(sw["time_s"]) / scale
        ax.axvline(x, color="black", linestyle="--", linewidth=1.0)
        ax.annotate(
            f"switch {k}",
            (x, 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(3, -10),
            textcoords="offset points",
            fontsize=8,
        )
    ax.set_yticks([y_of[n] for n in rows], [f"{n}  {_gpu_text(tuple(gpus[n]))}" for n in rows], fontsize=8)
    ax.set_ylim(-0.6, len(rows) - 0.4)
    ax.grid(axis="x", alpha=0.3)


def plot_deployment_timeline(results: dict[str, SimResult], folder: str | Path) -> Path:
    """Each policy's replicas over simulated time into ``folder/deployment_timeline.png`` (one panel per policy).

    Loading and draining windows shorter than 0.4% of the time axis are drawn that wide so they stay visible;
    :func:`deployment_segments` has the exact times.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    all_labels = sorted({c for r in results.values() for c in r.replicas["config"]})
    short = _short_labels(all_labels)
    shapes = list(dict.fromkeys(short[c] for c in all_labels))
    cmap = plt.get_cmap("tab10")
    colours = {shape: cmap(i % 10) for i, shape in enumerate(shapes)}
    span = max(float(r.summary["span_s"]) for r in results.values())
    scale, unit = (60.0, "min") if span >= 600 else (1.0, "s")
    heights = [max(2, len(r.replicas)) for r in results.values()]
    fig, axes = plt.subplots(
        len(results),
        1,
        figsize=(12, 1.2 + 0.38 * sum(heights) + 0.5 * len(results)),
        sharex=True,
        gridspec_kw={"height_ratios": heights},
        squeeze=False,
    )
    for ax, (name, result) in zip(axes[:, 0], results.items(), strict=True):
        _draw(ax, result, short, colours, scale, _MIN_WINDOW * span / scale)
        ax.set_title(f"{name}: {result.summary.get('deployment', '')}".rstrip(": "), fontsize=10, loc="left")
    axes[-1, 0].set_xlim(0.0, span / scale)
    axes[-1, 0].set_xlabel(f"simulated time ({unit})")
    handles = [Patch(color=colours[s], label=s) for s in shapes] + [
        Patch(facecolor="white", edgecolor="0.3", hatch="//", label="loading"),
        Patch(facecolor=_DRAIN_FACE, edgecolor="0.3", hatch="xx", label="draining"),
        Line2D([], [], color="black", linestyle="--", label="switch"),
    ]
    fig.legend(handles=handles, loc="lower center", ncol=min(8, len(handles)), fontsize=8, frameon=False)
    fig.suptitle("Deployment over time: replicas by GPU, coloured by shape")
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    out = folder / "deployment_timeline.png"
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
