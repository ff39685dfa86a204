"""mu measured by the simulator: the highest Poisson rate at which one replica still meets the SLO.

The check for ``CapacityModel``: the same replica config, fed requests of one type (lengths resampled from the
real ones, or fixed), at increasing rates; the capacity is the largest rate whose run keeps SLO attainment at
or above ``attainment`` (bisection on the rate). ``benchmarks/capacity_accuracy.py`` reports the error per type
and config.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from oserve.perf import Calibration
from oserve.planner.slo import Slo
from oserve.sim import simulate
from oserve.spec import Cluster, Deployment, ModelSpec, ReplicaConfig, parse_cluster
from oserve.trace import Trace

__all__ = ["replica_cluster", "simulated_capacity", "simulated_rate"]


def replica_cluster(config: ReplicaConfig) -> Cluster:
    """The smallest cluster holding one replica of ``config`` (8-GPU nodes once it needs more than 8)."""
    gpus = config.num_gpus
    per_node = gpus if gpus <= 8 else max(8, config.tp)
    return parse_cluster(f"{math.ceil(gpus / per_node)}x{per_node}x{config.gpu.name}")


def _poisson_trace(
    prompts: np.ndarray, outputs: np.ndarray, rate_rps: float, num_requests: int, seed: int
) -> Trace:
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(prompts), num_requests)
    arrivals = np.cumsum(rng.exponential(1.0 / rate_rps, num_requests))
    return Trace.from_arrays(arrivals - arrivals[0], prompts[pick], outputs[pick], name="capacity-probe")


def simulated_capacity(
    model: ModelSpec,
    config: ReplicaConfig,
    prompts: np.ndarray,
    outputs: np.ndarray,
    slo: Slo,
    **options: Any,
) -> float:
    """Highest rate (req/s, within a factor ``2**(-iterations)`` of the bracket) at which one replica of
    ``config``, alone on the smallest cluster that holds it, meets ``attainment``; ``options`` as
    ``simulated_rate`` (its router is round-robin: one replica)."""
    cluster = replica_cluster(config)
    deployment = Deployment.homogeneous(model.name, cluster, config, 1)
    return simulated_rate(
        model, deployment, cluster, prompts, outputs, slo, **{"router": "round-robin", **options}
    )


def simulated_rate(
    model: ModelSpec,
    deployment: Deployment,
    cluster: Cluster,
    prompts: np.ndarray,
    outputs: np.ndarray,
    slo: Slo,
    *,
    attainment: float = 0.9,
    guess_rps: float = 1.0,
    num_requests: int = 1500,
    iterations: int = 8,
    seed: int = 0,
    calibration: Calibration | None = None,
    router: str = "weighted",
) -> float:
    """Highest Poisson rate (req/s) of requests resampled from ``(prompts, outputs)`` at which ``deployment``
    keeps ``attainment`` of them within the SLO: a whole deployment's capacity on a length mix, the rate
    ``plan``'s alpha times the total demand predicts for that mix."""
    prompts = np.asarray(prompts, dtype=np.int64)
    outputs = np.asarray(outputs, dtype=np.int64)
    targets = slo.to_dict()

    def ok(rate: float) -> bool:
        trace = _poisson_trace(prompts, outputs, rate, num_requests, seed)
        result = simulate(
            trace, deployment, model, cluster, router=router, slo=targets, calibration=calibration
        )
        return result.summary["slo_attainment"] >= attainment

    lo, hi = 0.0, max(guess_rps, 1e-3)
    while ok(hi):  # grow the bracket until the rate fails
        lo, hi = hi, hi * 2
        if hi > 1e5:
            return math.inf
    if lo == 0.0:
        lo = hi / 2
        while lo > 1e-4 and not ok(lo):
            hi, lo = lo, lo / 2
        if lo <= 1e-4:
            return 0.0
    for _ in range(iterations):  # geometric bisection
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if ok(mid) else (lo, mid)
    return lo
