"""Check the plan by simulation: replay the trace through candidate plans and keep the one that does best.

The capacity model is a steady-state estimate; bursts, the tail of TTFT and how prefills interleave decide the
last few percent, and there the simulator is the better judge. The candidates are the planner's deployments for
the trace's demand at several peak quantiles (the median minute, the p90 minute, the p99 minute), planned for
throughput and in latency mode (``plan(latency_headroom=1.5)``, where the cluster has that much room), each routed
three ways (least load — requests plus token backlog per unit of speed — among the types' replicas, the plan's
weights, and type-blind least outstanding requests: on code traffic the type-aware routers lose 1-3 % goodput),
plus whatever deployments the caller already simulated (``seeds``: e.g. the best homogeneous one, so the choice is
never worse than it), each also routed those three ways, and the planner's own best homogeneous
deployment for each quantile (its ``Plan.baseline``) when no seed has that shape. Ranking (``best_index``):
goodput at the SLO; among candidates within ``tie`` of the best goodput, the lowest p99 E2E latency; and a tail
guard: a candidate within ``TAIL_TIE`` (2%) of the best goodput with a p99 more than ``TAIL_GAIN`` (10%) lower wins.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from oserve.errors import InfeasibleError
from oserve.perf import Calibration
from oserve.planner.demand import demands_from_trace
from oserve.planner.plan import Plan, plan
from oserve.planner.slo import Slo
from oserve.sim import SimResult, simulate
from oserve.spec import Cluster, Deployment, ModelSpec
from oserve.trace import Trace, TypeGrid

__all__ = [
    "PEAK_QUANTILES",
    "START_TIE",
    "TAIL_GAIN",
    "TAIL_TIE",
    "TIE",
    "Tried",
    "Verified",
    "best_index",
    "lowest_p99_index",
    "simulated_best_plan",
]

PEAK_QUANTILES = (0.5, 0.9, 0.99)
PLAN_ROUTERS = ("allowed-least-load", "weighted", "least-requests")
TIE = 0.005  # goodputs this close are a tie, decided by p99 E2E
TAIL_TIE = 0.02  # within this of the best goodput, a candidate wins on a p99 E2E ...
TAIL_GAIN = 0.10  # ... lower than the winner's by more than this (``best_index``'s tail guard)
# oserve's start and the static baseline: a 2% goodput tie, chosen on held-out windows of the traces by a
# criterion fixed before they ran (docs/adapt.md, "The ranking rule, chosen on held-out windows")
START_TIE = 0.02
LATENCY_HEADROOMS = (None, 1.5)  # None: throughput plans; 1.5: latency mode where the cluster has room


@dataclass(frozen=True, slots=True)
class Tried:
    label: str
    router: str
    goodput_rps: float
    e2e_p99_s: float
    e2e_mean_s: float = float("nan")

    @classmethod
    def of(cls, label: str, router: str, result: SimResult) -> Tried:
        """The try as ``best_index`` ranks it, from its simulation's summary."""
        s = result.summary
        return cls(label, router, float(s["goodput_rps"]), float(s["e2e_p99"]), float(s["e2e_mean"]))


@dataclass(frozen=True, slots=True)
class Verified:
    """The chosen candidate (its label, deployment and router), its simulation, the plan it came from (None for a
    seed) and every try."""

    label: str
    deployment: Deployment
    router: str
    result: SimResult
    plan: Plan | None
    tried: tuple[Tried, ...]


def best_index(
    scores: Sequence[tuple[float, ...]],
    tie: float = TIE,
    tail_tie: float = TAIL_TIE,
    tail_gain: float = TAIL_GAIN,
) -> int:
    """Index of the best ``(goodput, p99 E2E[, mean E2E])``, the one ranking every simulation check here uses.
    Goodput first: among those within ``tie`` of the highest goodput, the lowest p99 (the first such on equal
    p99). Then the tail guard: while a candidate within ``tail_tie`` of the highest goodput has a p99 lower than
    the winner's by more than ``tail_gain`` (and, where means are given, a mean E2E no more than ``tail_gain``
    above the winner's: a better tail bought with a slower body is no win), the best of those (ranked as above)
    wins instead. So a candidate whose tail is better by more than ``tail_gain`` loses only to a goodput more
    than ``tail_tie`` above its own: on 8B ``swing`` a P/D pool won oserve's start on +0.5% goodput (just past
    ``tie``) with a p99 of 1.8 s against static's 1.6 s, and another (6P TP1 + 1D TP2) would have won on a p99
    19% lower with a mean E2E 63% higher (docs/adapt.md, "The start ranking's tail guard"). Each step lowers the
    winner's p99 by more than ``tail_gain``, so it ends; the winner's goodput stays within ``tail_tie`` of the
    best."""
    top = max(s[0] for s in scores)

    def ranked(within: float, below: float, mean_cap: float) -> int | None:
        pool = [
            (s[1], i)
            for i, s in enumerate(scores)
            if s[0] >= top - abs(top) * within and s[1] < below and (len(s) < 3 or s[2] <= mean_cap)
        ]
        if not pool:
            return None
        best = max(scores[i][0] for _, i in pool)  # goodput first among them, then p99 within ``tie``
        return min((p99, i) for p99, i in pool if scores[i][0] >= best - abs(best) * tie)[1]

    inf = float("inf")
    i = ranked(tie, inf, inf)
    assert i is not None  # the highest goodput is always within the tie
    while True:
        winner = scores[i]
        cap = winner[2] * (1 + tail_gain) if len(winner) >= 3 else inf
        j = ranked(tail_tie, winner[1] * (1 - tail_gain), cap)
        if j is None:
            return i
        i = j


def lowest_p99_index(scores: Sequence[tuple[float, ...]], anchor: int, tie: float = START_TIE) -> int:
    """Index of the lowest p99 E2E among the ``(goodput, p99 E2E, ...)`` whose goodput is at least ``1 - tie``
    of ``scores[anchor]``'s (the anchor itself always qualifies; the first on equal p99): the P99-first rule,
    a tail-latency objective that gives up at most ``tie`` of the anchor's goodput."""
    floor = scores[anchor][0] - abs(scores[anchor][0]) * tie
    pool = [(s[1], i) for i, s in enumerate(scores) if s[0] >= floor and s[1] == s[1]] or [(0.0, anchor)]
    return min(pool)[1]


def simulated_best_plan(
    trace: Trace,
    model: ModelSpec,
    cluster: Cluster,
    slo: Slo,
    *,
    calibration: Calibration | None = None,
    quantiles: Sequence[float] = PEAK_QUANTILES,
    routers: Sequence[str] = PLAN_ROUTERS,
    headrooms: Sequence[float | None] = LATENCY_HEADROOMS,
    seeds: Sequence[tuple[str, Deployment, str, SimResult]] = (),
    tie: float = TIE,
    progress: Callable[[str], None] | None = None,
    oracle_lengths: bool = False,
    grid: TypeGrid | None = None,
    scoring: Callable[[SimResult], SimResult] | None = None,
    **plan_options,
) -> Verified:
    """Plan for ``trace`` at each peak quantile, simulate every (deployment, router) candidate on the trace and
    return the best (see the module doc). ``seeds`` are ``(label, deployment, router, result)`` already simulated
    on the same trace with the same SLO; ``oracle_lengths`` as ``simulate``'s; ``grid`` types the trace for
    planning (default: its quantile grid); ``scoring`` re-scores each simulation (e.g. ``sim.with_classes`` for
    per-class SLOs) before candidates are compared; ``type_slos`` goes to ``plan``. Raises ``InfeasibleError``
    like ``plan``."""
    say = progress or (lambda _msg: None)
    targets = slo.to_dict()
    candidates: list[tuple[str, Deployment, str, SimResult, Plan | None]] = [
        (label, dep, router, result, None) for label, dep, router, result in seeds
    ]

    def simulated(label: str, deployment: Deployment, router: str) -> SimResult:
        say(f"verifying {label} ({router})")
        return (scoring or (lambda r: r))(
            simulate(
                trace,
                deployment,
                model,
                cluster,
                router=router,
                slo=targets,
                calibration=calibration,
                oracle_lengths=oracle_lengths,
            )
        )

    for label, dep, seed_router, _ in seeds:
        for router in routers:
            if router != seed_router:
                candidates.append((label, dep, router, simulated(label, dep, router), None))
    seen: set[tuple] = set()
    shapes = {dep.describe() for _, dep, _, _ in seeds}  # shapes already tried under every router
    failure: InfeasibleError | None = None
    for q in quantiles:
        demands, typed = demands_from_trace(trace, grid, peak_quantile=q)
        for headroom in headrooms:
            try:
                planned = plan(
                    model,
                    cluster,
                    demands,
                    slo,
                    grid=typed,
                    calibration=calibration,
                    latency_headroom=headroom,
                    **plan_options,
                )
            except InfeasibleError as exc:
                failure = exc
                continue
            key = (tuple(planned.counts.tolist()), planned.method)
            if key in seen:
                continue
            seen.add(key)
            label = f"plan@p{q * 100:g}" + ("+latency" if planned.method.endswith("+latency") else "")
            for router in routers:
                result = simulated(label, planned.deployment, router)
                candidates.append((label, planned.deployment, router, result, planned))
            if planned.baseline.describe() not in shapes:  # the planner's own best homogeneous shape
                shapes.add(planned.baseline.describe())
                label = f"homogeneous@p{q * 100:g}"
                for router in routers:
                    result = simulated(label, planned.baseline, router)
                    candidates.append((label, planned.baseline, router, result, None))
    if failure is not None and not candidates:
        raise failure
    if not candidates:
        raise InfeasibleError("no candidate deployment to verify")
    tried = [Tried.of(label, router, r) for label, _, router, r, _ in candidates]
    i = best_index([(t.goodput_rps, t.e2e_p99_s, t.e2e_mean_s) for t in tried], tie)
    label, deployment, router, result, chosen = candidates[i]
    return Verified(label, deployment, router, result, chosen, tuple(tried))
