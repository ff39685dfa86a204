"""Scenarios for the adaptive policies, built only from the real Azure LLM inference traces (2023).

- ``conv``: the conversation hour (``azure_conv_2023``), its own arrivals and lengths.
- ``code``: the code-completion hour (``azure_code_2023``): long prompts, short outputs, bursty minutes.
- ``shifting``: alternating ``phase_s`` slices of the code hour and the conversation hour (``alternate``), each
  at the same time offset as in its source: the mix flips between prompt-heavy and output-heavy phases.
- ``ramp``: the conversation hour thinned by a linear ramp: at time t a request is kept with probability
  ``0.25 + 0.75 * t / span``, so the rate climbs from a quarter to the full (scaled) rate.

Each source is scaled (``scale_rate``: resample, no synthetic lengths) so that its p90 minute loads the best
homogeneous deployment of the cluster to ``load`` of its planned capacity; a shifting day's two sources are
scaled apart, so both phases load the cluster alike and only the mix changes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from oserve.errors import ConfigError
from oserve.planner import Slo, demands_from_trace, plan
from oserve.spec import Cluster, ModelSpec
from oserve.trace import Trace, alternate, load_trace, scale_rate, window

__all__ = ["SCENARIOS", "build_scenario", "scale_to_load"]

SCENARIOS = ("conv", "code", "shifting", "ramp")


def scale_to_load(
    trace: Trace, model: ModelSpec, cluster: Cluster, slo: Slo, load: float, *, seed: int = 0
) -> Trace:
    """``trace`` resampled so its p90 minute runs the best homogeneous deployment at ``load`` of capacity."""
    demands, grid = demands_from_trace(trace, peak_quantile=0.9)
    reference = plan(model, cluster, demands, slo, grid=grid).baseline_alpha
    return scale_rate(trace, load * reference, seed=seed)


def _ramp(trace: Trace, seed: int) -> Trace:
    keep = 0.25 + 0.75 * trace.arrival_s / max(trace.duration_s, 1e-9)
    rng = np.random.default_rng(seed)
    return trace.take(np.flatnonzero(rng.random(len(trace)) < keep), name=f"{trace.name}-ramp")


def build_scenario(
    name: str,
    traces: Path,
    model: ModelSpec,
    cluster: Cluster,
    slo: Slo,
    *,
    load: float = 0.75,
    minutes: float | None = None,
    phase_s: float = 600.0,
    seed: int = 0,
) -> Trace:
    """The scenario ``name`` on ``model``/``cluster`` at ``load``; ``minutes`` keeps the first part only."""
    if name not in SCENARIOS:
        raise ConfigError(f"unknown scenario {name!r}; choose from {', '.join(SCENARIOS)}")
    paths = {"code": traces / "azure_code_2023.csv", "conv": traces / "azure_conv_2023.csv"}
    for p in paths.values():
        if not p.is_file():
            raise ConfigError(f"trace {p} not found (the scenarios need the Azure 2023 traces)")
    span = None if minutes is None else minutes * 60.0

    def source(key: str) -> Trace:
        t = load_trace(paths[key])
        return t if span is None else window(t, 0.0, span)

    if name in ("conv", "code"):
        return scale_to_load(source(name), model, cluster, slo, load, seed=seed)
    if name == "ramp":
        return _ramp(scale_to_load(source("conv"), model, cluster, slo, load, seed=seed), seed)
    code = scale_to_load(source("code"), model, cluster, slo, load, seed=seed)
    conv = scale_to_load(source("conv"), model, cluster, slo, load, seed=seed)
    return alternate([code, conv], phase_s=phase_s, name="shifting")
