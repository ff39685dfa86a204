"""What the planner plans for: per request type, its arrival rate and mean lengths.

From a trace (``demands_from_trace``: the trace's quantile ``TypeGrid``, rates over its span) or written out by
hand (``parse_rates``: ``PROMPT:OUTPUT=RPS,...`` with mean lengths in tokens, e.g. ``512:128=4,4096:256=1.5``;
the grid then cuts halfway (geometrically) between the lengths given, so live traffic types the same way).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from oserve.errors import ConfigError
from oserve.trace import Trace, TypeGrid, Workload, measure_workload, workload_series

__all__ = [
    "TypeDemand",
    "demands_from_trace",
    "demands_from_workload",
    "demands_on_grid",
    "demands_with_rates",
    "parse_rates",
]


SAMPLE_SIZE = 16


@dataclass(frozen=True, slots=True)
class TypeDemand:
    """A type's rate and mean lengths; ``prompt_sample`` / ``output_sample`` are requests drawn from it (the
    capacity model uses their spread; empty means every request has the mean lengths)."""

    name: str
    rate_rps: float
    prompt_tokens: float  # mean
    output_tokens: float  # mean
    prompt_sample: tuple[int, ...] = ()
    output_sample: tuple[int, ...] = ()

    @property
    def lengths(self) -> tuple[np.ndarray, np.ndarray]:
        """(prompts, outputs) for the capacity model: the sample, else the means."""
        if self.prompt_sample:
            return np.array(self.prompt_sample), np.array(self.output_sample)
        return np.array([self.prompt_tokens]), np.array([self.output_tokens])

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "rate_rps": self.rate_rps,
            "prompt_tokens": self.prompt_tokens,
            "output_tokens": self.output_tokens,
        }


def demands_from_workload(workload: Workload) -> list[TypeDemand]:
    """Rates and mean lengths only (a ``Workload`` keeps no per-request lengths)."""
    return [TypeDemand(t.name, t.rate_rps, t.prompt.mean, t.output.mean) for t in workload.types]


def demands_from_trace(
    trace: Trace,
    grid: TypeGrid | None = None,
    *,
    num_types: int = 6,
    sample_size: int = SAMPLE_SIZE,
    peak_quantile: float | None = None,
    peak_window_s: float = 60.0,
) -> tuple[list[TypeDemand], TypeGrid]:
    """Per-type demand over the whole trace, typed by ``grid`` (default: the trace's own quantile grid), each with
    up to ``sample_size`` of its requests taken at evenly spaced prompt-length quantiles (their outputs ride along,
    so the joint lengths are real).

    Rates are the trace's means, or with ``peak_quantile`` (e.g. 0.9) that quantile of the total rate over
    ``peak_window_s`` windows, split by the type mix: bursty traffic (the Azure code hour's minutes run at up to
    4x its mean) is provisioned for its busy minutes, not its average.
    """
    if len(trace) == 0:
        raise ConfigError(f"trace {trace.name!r} has no requests to plan for")
    if peak_quantile is not None and not 0 < peak_quantile <= 1:
        raise ConfigError(f"peak quantile must be in (0, 1], got {peak_quantile}")
    grid = grid or TypeGrid.for_types(trace, num_types)
    types = grid.classify(trace)
    scale = 1.0
    if peak_quantile is not None:
        series = workload_series(trace, grid, peak_window_s)
        totals = series.total_rate_rps
        scale = float(np.quantile(totals, peak_quantile)) / trace.rate_rps if trace.rate_rps > 0 else 1.0
    return [replace(d, rate_rps=d.rate_rps * scale) for d in _sampled(trace, grid, types, sample_size)], grid


def _sampled(trace: Trace, grid: TypeGrid, types: np.ndarray, sample_size: int) -> list[TypeDemand]:
    """Each type's demand over ``trace`` with up to ``sample_size`` of its requests at prompt quantiles."""
    out = []
    for d in demands_from_workload(measure_workload(trace, grid)):
        members = np.flatnonzero(types == grid.names.index(d.name))
        if members.size:
            by_prompt = members[np.argsort(trace.prompt_tokens[members], kind="stable")]
            spots = (
                (np.arange(min(sample_size, members.size)) + 0.5)
                * members.size
                / min(sample_size, members.size)
            )
            pick = np.sort(by_prompt[spots.astype(np.int64)])
            d = replace(
                d,
                prompt_sample=tuple(int(v) for v in trace.prompt_tokens[pick]),
                output_sample=tuple(int(v) for v in trace.output_tokens[pick]),
            )
        out.append(d)
    return out


def demands_with_rates(
    trace: Trace, grid: TypeGrid, rates_rps: np.ndarray, *, sample_size: int = SAMPLE_SIZE
) -> list[TypeDemand]:
    """Demand at given per-type rates (e.g. a forecast), lengths from ``trace``'s requests of each type (means and
    a sample at prompt quantiles). Types with no rate, or none of whose requests ``trace`` holds, are left out."""
    rates_rps = np.asarray(rates_rps, dtype=np.float64)
    if rates_rps.shape != (grid.num_types,):
        raise ConfigError(
            f"expected {grid.num_types} rates (one per type of the grid), got {rates_rps.shape}"
        )
    types = grid.classify(trace)
    present = np.bincount(types, minlength=grid.num_types) > 0
    return [
        replace(d, rate_rps=float(rates_rps[k]))
        for k, d in enumerate(_sampled(trace, grid, types, sample_size))
        if present[k] and rates_rps[k] > 0
    ]


def _midpoints(values: list[int]) -> tuple[int, ...]:
    distinct = sorted(set(values))
    return tuple(round(math.sqrt(a * b)) for a, b in itertools.pairwise(distinct))


def parse_rates(text: str) -> tuple[list[TypeDemand], TypeGrid]:
    """``PROMPT:OUTPUT=RPS,...`` -> demands named by the grid built around them."""
    points: list[tuple[int, int, float]] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        try:
            shape, rate = part.split("=")
            prompt, output = shape.split(":")
            p, o, r = int(prompt), int(output), float(rate)
        except ValueError:
            raise ConfigError(
                f"bad rate {part!r}: expected PROMPT_TOKENS:OUTPUT_TOKENS=REQUESTS_PER_S, e.g. 512:128=4.0"
            ) from None
        if p < 1 or o < 1 or not (math.isfinite(r) and r >= 0):
            raise ConfigError(f"bad rate {part!r}: lengths must be >= 1 token and the rate a number >= 0")
        points.append((p, o, r))
    if not points:
        raise ConfigError("no rates given: expected PROMPT_TOKENS:OUTPUT_TOKENS=REQUESTS_PER_S,...")
    grid = TypeGrid(_midpoints([p for p, _, _ in points]), _midpoints([o for _, o, _ in points]))
    types = grid.types
    demands: dict[int, list[tuple[int, int, float]]] = {}
    for p, o, r in points:
        index = int(grid.classify_lengths(p, o))
        demands.setdefault(index, []).append((p, o, r))
    out = []
    for t in types:
        group = demands.get(t.index)
        if group is None:
            continue
        if len(group) > 1:
            raise ConfigError(f"rates {group} fall in the same type {t.name}: give each length pair once")
        p, o, r = group[0]
        out.append(TypeDemand(t.name, r, float(p), float(o)))
    return out, grid


def demands_on_grid(demands: list[TypeDemand], grid: TypeGrid) -> list[TypeDemand]:
    """Hand-written demands (mean lengths, no samples) re-typed by another grid (e.g. the user's edges): those
    whose means fall in one type merge, rates summed and lengths rate-weighted."""
    groups: dict[int, list[TypeDemand]] = {}
    for d in demands:
        groups.setdefault(
            int(grid.classify_lengths(round(d.prompt_tokens), round(d.output_tokens))), []
        ).append(d)
    names = grid.names
    out = []
    for k in sorted(groups):
        group = groups[k]
        rate = sum(d.rate_rps for d in group)
        weights = [d.rate_rps if rate > 0 else 1.0 for d in group]
        total = sum(weights)
        prompt = sum(w * d.prompt_tokens for w, d in zip(weights, group, strict=True)) / total
        output = sum(w * d.output_tokens for w, d in zip(weights, group, strict=True)) / total
        out.append(TypeDemand(names[k], rate, prompt, output))
    return out
