"""What "load 1.0" means for a scenario: the rate its strongest baseline sustains, measured in the simulator.

``planned`` (the planner's figure): a trace scaled so that its p90 minute loads the best homogeneous deployment to
its *planned* capacity (``plan(...).baseline_alpha``). That ties the benchmark's load to the model under test, and
the planner's capacity model is a per-replica, per-type queue: it does not see what a load-aware router gains by
pooling replicas, nor the bursts inside a minute. On the headline's rows the two disagree by up to 3x (the long
mixes' static deployment still meets the SLO for 93-98 % of requests at "2.4"; the code hour misses it at "0.6").

``simulated`` (:func:`static_knee`): load 1.0 is the highest rate factor at which the registry's ``static``
baseline — the best homogeneous deployment chosen with hindsight by simulating every shape
(``planner.simulated_best_homogeneous``), routed ``weighted``, scored under the scenario's SLO classes — keeps ``attainment`` (90 %) of the requests within
their SLO. Found by bracketing from the planned factor (doubling or halving) and bisecting in log space to within
``tolerance`` (3 %). Each probe resamples the same trace with the same seed as the scenario at that load would, so
the trace at load 1.0 is the one probed. Knees are memoised per trace, model, cluster, SLO and seed (a process
building a scenario at several loads finds each knee once) and, with ``cache_dir``, kept as one JSON file each.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from oserve.adapt.registry import SimContext, simulate_policy
from oserve.errors import ConfigError
from oserve.planner.slo_classes import SloClasses
from oserve.spec import Cluster, ModelSpec
from oserve.trace import Trace, scale_rate

__all__ = ["LOAD_REFERENCES", "Knee", "knees_found", "static_knee"]

LOAD_REFERENCES = ("planned", "simulated")
ATTAINMENT = 0.9  # the headline's max sustainable load crosses the same share
TOLERANCE = 0.03  # the knee's factor, within 3 %
_SPAN = 64.0  # the bracket goes at most this far from the planned factor either way
_MEMO: dict[str, Knee] = {}


@dataclass(frozen=True, slots=True)
class Knee:
    """The rate factor of source trace ``trace`` (its name; ``span_s`` long) for ``model`` on ``cluster`` (its
    compact spelling) at load 1.0 by each reference, the static deployment there and the probes that found it
    (factor, attainment), in the order made."""

    trace: str
    planned: float
    simulated: float
    deployment: str
    probes: tuple[tuple[float, float], ...]
    model: str = ""
    cluster: str = ""
    span_s: float = 0.0

    @property
    def ratio(self) -> float:
        """How much more (above 1) or less traffic the simulated knee takes than the planner says."""
        return self.simulated / self.planned if self.planned > 0 else math.inf


def knees_found() -> list[Knee]:
    """The knees this process found or read, oldest first (for a benchmark's JSON)."""
    return list(_MEMO.values())


def _key(trace: Trace, model: ModelSpec, cluster: Cluster, classes: SloClasses, seed: int) -> str:
    h = hashlib.sha256()
    for a in (trace.arrival_s, trace.prompt_tokens, trace.output_tokens):
        h.update(np.ascontiguousarray(a).tobytes())
    h.update(repr((trace.duration_s, model.name, cluster.compact(), classes, seed, ATTAINMENT)).encode())
    return h.hexdigest()[:24]


def _attainment(
    trace: Trace, model: ModelSpec, cluster: Cluster, classes: SloClasses, factor: float, seed: int
) -> tuple[float, str]:
    """The ``static`` policy's SLO attainment on ``trace`` resampled by ``factor`` (the registry's: the best
    shape at that rate, scored under ``classes``) and its deployment."""
    probe = scale_rate(trace, factor, seed=seed)
    ctx = SimContext(
        probe, model, cluster, None, None, classes.default.to_dict(), lambda _msg: None, classes=classes
    )
    run, result = simulate_policy("static", ctx)
    return float(result.summary["slo_attainment"]), run.deployment.describe()


def static_knee(
    trace: Trace,
    model: ModelSpec,
    cluster: Cluster,
    classes: SloClasses,
    planned: float,
    *,
    seed: int = 0,
    cache_dir: Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> Knee:
    """The simulated knee of ``trace`` (module docstring), bracketed from the ``planned`` factor."""
    if not math.isfinite(planned) or planned <= 0:
        raise ConfigError(f"the planned load factor must be a positive number, got {planned}")
    say = progress or (lambda _msg: None)
    key = _key(trace, model, cluster, classes, seed)
    if key in _MEMO:
        return _MEMO[key]
    path = cache_dir / f"{key}.json" if cache_dir is not None else None
    if path is not None and path.is_file():
        data = json.loads(path.read_text())
        knee = Knee(
            data["trace"],
            data["planned"],
            data["simulated"],
            data["deployment"],
            tuple(map(tuple, data["probes"])),
            model.name,  # the key holds them: a file written before they were stored reads as well
            cluster.compact(),
            trace.duration_s,
        )
        _MEMO[key] = knee
        return knee
    probes: list[tuple[float, float]] = []
    shapes: dict[float, str] = {}

    def ok(factor: float) -> bool:
        att, shape = _attainment(trace, model, cluster, classes, factor, seed)
        probes.append((factor, att))
        shapes[factor] = shape
        say(f"load reference of {trace.name or 'trace'}: x{factor:.3g} -> {att:.1%} on {shape}")
        return att >= ATTAINMENT

    lo, hi = planned, planned
    if ok(planned):
        while ok(hi * 2.0):
            hi *= 2.0
            if hi > planned * _SPAN:
                raise ConfigError(f"static meets the SLO at {_SPAN:g}x the planned load of {trace.name!r}")
        lo, hi = hi, hi * 2.0
    else:
        while not ok(lo / 2.0):
            lo /= 2.0
            if lo < planned / _SPAN:
                raise ConfigError(
                    f"static misses the SLO even at 1/{_SPAN:g} of the planned load of {trace.name!r}"
                )
        lo, hi = lo / 2.0, lo
    while hi / lo > 1.0 + TOLERANCE:
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if ok(mid) else (lo, mid)
    knee = Knee(
        trace.name, planned, lo, shapes[lo], tuple(probes), model.name, cluster.compact(), trace.duration_s
    )
    _MEMO[key] = knee
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(asdict(knee)))
        tmp.replace(path)  # atomic: two processes finding the same knee write the same file
    return knee
