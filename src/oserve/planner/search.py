"""The best homogeneous deployment chosen by simulating every candidate on the trace (with hindsight)."""

from __future__ import annotations

from collections.abc import Callable

from oserve.perf import Calibration
from oserve.planner.baselines import best_homogeneous
from oserve.planner.verify import START_TIE, best_index
from oserve.sim import SimResult, simulate
from oserve.spec import Cluster, Deployment, ModelSpec
from oserve.trace import Trace

__all__ = ["simulated_best_homogeneous"]


def simulated_best_homogeneous(
    trace: Trace,
    model: ModelSpec,
    cluster: Cluster,
    *,
    router: str = "weighted",
    slo: dict[str, float] | None = None,
    calibration: Calibration | None = None,
    progress: Callable[[str], None] | None = None,
    oracle_lengths: bool = False,
    scoring: Callable[[SimResult], SimResult] | None = None,
) -> tuple[Deployment, SimResult, int]:
    """Simulate every fitting homogeneous shape; the winner is ranked as every OServe candidate is
    (``verify.best_index`` with ``START_TIE``: goodput first, then p99 E2E within the 2% tie, then the tail guard), so the baseline is
    chosen by the rule oserve's own start is. ``oracle_lengths`` as ``simulate``'s; ``scoring`` re-scores each
    simulation before shapes are ranked, e.g. ``sim.with_classes`` for per-class SLOs, so the baseline is the
    best under the run's own targets.

    Returns the winner, its simulation (so callers need not run it again) and how many shapes were tried.
    """
    results: dict[int, SimResult] = {}

    def evaluate(deployment: Deployment) -> float:
        result = simulate(
            trace,
            deployment,
            model,
            cluster,
            router=router,
            slo=slo,
            calibration=calibration,
            oracle_lengths=oracle_lengths,
        )
        if scoring is not None:
            result = scoring(result)
        results[id(deployment)] = result
        return result.summary[
            "goodput_rps"
        ]  # best_homogeneous's own pick is not used: best_index ranks below

    _, scored = best_homogeneous(model, cluster, evaluate, calibration=calibration, progress=progress)
    summaries = [results[id(c.deployment)].summary for c in scored]
    i = best_index([(s["goodput_rps"], s["e2e_p99"], s["e2e_mean"]) for s in summaries], tie=START_TIE)
    return scored[i].deployment, results[id(scored[i].deployment)], len(scored)
