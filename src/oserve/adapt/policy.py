"""The adaptive policies for the simulator: a thin adapter over the controller core (``adapt.core``).

``AdaptivePolicy`` runs ``ControllerCore.step`` at every ``window_s`` of virtual time. It builds the core's
``Observation`` from the run — the per-type history and the requests seen so far (from the trace, before
``now``), the work in flight (``ClusterView.backlog``), and for the oracle the requests to come — and acts on the
``Decision``: a switch goes to the simulator wave by wave (stopped replicas drain; started ones serve when their
weights and engine are ready), a re-route as a weights-only ``Switch``. The live controller
(``runtime.controller``) is the other adapter over the same core.

Sources (``adapt.sources``): ``ForecastSource`` (the ``oserve`` policy), ``OracleSource`` (``oserve-oracle``, an
upper bound) and ``NoisySource`` (the sensitivity runs).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from oserve.adapt.core import ROUTER, ControllerCore, Observation
from oserve.adapt.decide import Decision, DecisionConfig
from oserve.adapt.replay import confirm
from oserve.adapt.sources import DemandSource, ForecastSource, NoisySource, OracleSource, binned_rates, peak
from oserve.adapt.waves import staged_switches
from oserve.errors import ConfigError
from oserve.perf import Calibration
from oserve.planner import Plan, Slo, plan
from oserve.planner.demand import demands_with_rates
from oserve.planner.verify import START_TIE, best_index, lowest_p99_index
from oserve.sim import SimResult, simulate
from oserve.sim.backlog import Backlog
from oserve.sim.policy import ClusterView, Switch
from oserve.spec import Cluster, Deployment, ModelSpec, RequestGrid
from oserve.spec.router import RouterSpec
from oserve.trace import Trace, TypeGrid

__all__ = [
    "ROUTER",
    "START_OBJECTIVES",
    "AdaptivePolicy",
    "DemandSource",
    "ForecastSource",
    "NoisySource",
    "OracleSource",
    "Seed",
    "StartCandidate",
    "binned_rates",
    "initial_plan",
    "seeded_start",
    "start_adaptive",
]

#: how ``start_adaptive`` ranks its candidates: goodput first (the default), or the lowest P99 within 2% of a seed's
START_OBJECTIVES = ("goodput", "p99")
PRIOR_QUANTILE = 0.9  # the prior traffic's 30 s bin the start is planned for (as the scenarios are sized)


def initial_plan(
    trace: Trace,
    grid: TypeGrid,
    model: ModelSpec,
    cluster: Cluster,
    slo: Slo,
    config: DecisionConfig,
    *,
    calibration: Calibration | None = None,
    prior: Trace | None = None,
) -> Plan:
    """The deployment to start from: the plan for the traffic the operator saw before (``prior``: its
    ``PRIOR_QUANTILE`` bin per type; default the first horizon of ``trace``)."""
    if prior is None:
        prior = trace.take(np.flatnonzero(trace.arrival_s < config.horizon_s))
        rates = peak(binned_rates(trace, grid, 0.0, config.horizon_s, config.bin_s), config.peak_quantile)
    else:
        span = max(float(prior.arrival_s[-1]) if len(prior) else 0.0, config.bin_s)
        rates = peak(binned_rates(prior, grid, 0.0, span, config.bin_s), PRIOR_QUANTILE)
    return plan(
        model,
        cluster,
        demands_with_rates(prior, grid, rates),
        slo,
        grid=grid,
        calibration=calibration,
        latency_headroom=config.latency_headroom or None,
    )


#: a start candidate already simulated on the prior: (label, deployment, the router it ran under, its result)
Seed = tuple[str, Deployment, str | RouterSpec, SimResult]


@dataclass(frozen=True, slots=True)
class StartCandidate:
    """One candidate the start check ranked (``start_adaptive``), as it scored on the prior: what the start
    could have been, so a benchmark can bound what any of OServe's candidates buys over a baseline."""

    label: str
    deployment: str
    router: str
    goodput_rps: float
    e2e_p99_s: float
    e2e_mean_s: float
    slo_attainment: float
    chosen: bool = False  # the one the start ranked first (under its objective)

    @classmethod
    def of(
        cls,
        label: str,
        deployment: Deployment,
        router: str | RouterSpec,
        result: SimResult,
        chosen: bool = False,
    ) -> StartCandidate:
        s = result.summary
        name = router.type if isinstance(router, RouterSpec) else str(router)
        return cls(
            label,
            deployment.describe(),
            name,
            float(s["goodput_rps"]),
            float(s["e2e_p99"]),
            float(s["e2e_mean"]),
            float(s["slo_attainment"]),
            chosen,
        )


def seeded_start(seed: Deployment, grid: TypeGrid) -> tuple[Deployment, TypeGrid]:
    """A seed as the start, routed as it was simulated: its own weights and type edges (the policy then types
    requests by those edges), or, without edges, the ``grid`` the simulator typed it by (its default grid)."""
    if seed.type_edges is not None:
        return seed, TypeGrid.from_edges(seed.type_edges)
    return replace(seed, type_edges=RequestGrid.of(grid)), grid


def start_adaptive(
    trace: Trace,
    model: ModelSpec,
    cluster: Cluster,
    slo: Slo,
    source: DemandSource,
    config: DecisionConfig | None = None,
    *,
    calibration: Calibration | None = None,
    prior: Trace | None = None,
    seeds: Sequence[Seed] = (),
    progress: Callable[[str], None] | None = None,
    router: str | RouterSpec = ROUTER,
    scoring: Callable[[SimResult], SimResult] | None = None,
    objective: str = "goodput",
) -> tuple[Deployment, AdaptivePolicy]:
    """What ``oserve simulate --policy oserve`` runs: the trace's 6 quantile types, the start plan and the policy
    to simulate from there (simulate with ``grid=policy.grid``, route with ``policy.router``). ``prior`` is
    the traffic the start is planned on (``initial_plan``): a past day of the same service; the benchmarks pass
    the trace itself (the information the hindsight static baselines get), None plans on the trace's first
    horizon only. ``seeds``: candidates already simulated on ``prior`` (``Seed``: e.g. the best homogeneous
    deployment, the best isolated one, OServe's P/D pools); the plan is simulated there too (under ``router``,
    re-scored by ``scoring`` as the seeds were) and the start is the best of them (``verify.best_index``:
    goodput within ``START_TIE`` (2%), then p99 E2E, and its tail guard: within 2% of the best goodput a p99 lower by more
    than 10% wins), so a capacity model that flatters the plan does not start the run worse
    than a candidate. A seed starts routed as it was scored: its weights, type edges (the policy's types then)
    and router (the policy's router, in its replays and in the run); while it runs, a seed is not re-routed (its
    weights are what was scored; a re-route is not replayed) — the controller may still switch away, confirmed by
    replay.
    ``router``: how the plan is routed (``round-robin`` for the ``vllm-reload`` baseline). ``objective``
    ``p99`` ranks the start instead by the lowest P99 E2E among the candidates within ``START_TIE`` (2%) of the
    first seed's goodput (``verify.lowest_p99_index``; the seed is static's deployment in the registry: a tail
    first start that never serves 2% fewer requests within the SLO than the best homogeneous one)."""
    if objective not in START_OBJECTIVES:
        raise ConfigError(f"start objective must be one of {', '.join(START_OBJECTIVES)}, got {objective!r}")
    config = config or DecisionConfig()
    grid = TypeGrid.for_types(trace, 6)
    start = initial_plan(
        trace, grid, model, cluster, slo, config, calibration=calibration, prior=prior
    ).deployment
    keep_routing, label, candidates = False, "plan", ()
    if seeds and prior is not None:
        result = simulate(
            prior,
            start,
            model,
            cluster,
            router=router,
            grid=grid,
            calibration=calibration,
            slo=slo.to_dict(),
        )
        scored = [("plan", start, router, (scoring or (lambda r: r))(result)), *seeds]
        scores = [(r.summary["goodput_rps"], r.summary["e2e_p99"], r.summary["e2e_mean"]) for *_, r in scored]
        # p99: the lowest P99 within 2% of the first seed's goodput (static's, in the registry)
        best = lowest_p99_index(scores, anchor=1) if objective == "p99" else best_index(scores, tie=START_TIE)
        candidates = tuple(StartCandidate.of(*s, chosen=i == best) for i, s in enumerate(scored))
        if best > 0:
            label, seed, router, _ = scored[best]
            if progress is not None:
                progress(f"starting from {label}: {seed.describe()} ({router})")
            start, grid = seeded_start(seed, grid)
            # a seed runs routed as it was scored: the flow LP's shares are not replayed before a re-route,
            # and on static's mixed-GPU deployment they routed worse than its weights (docs/adapt.md, mixed
            # day); a switch, confirmed by replay, ends the hold
            keep_routing = True
    policy = AdaptivePolicy(
        trace,
        grid,
        model,
        cluster,
        slo,
        source,
        config,
        calibration=calibration,
        progress=progress,
        router=router,
    )
    policy.core.keep_routing = keep_routing
    policy.start_label = label
    policy.start_candidates = candidates
    return start, policy


class AdaptivePolicy:
    """The simulator ``Policy`` of ``oserve`` / ``oserve-oracle`` over a ``ControllerCore`` (``core``);
    ``decisions`` keeps every decision made. Simulate it with ``router=policy.router`` (what its own replays
    assume: ``ROUTER`` unless given). ``plan_options``: the planner's options (``method``, ``tps``, ``pps``), as
    the live controller passes its own."""

    def __init__(
        self,
        trace: Trace,
        grid: TypeGrid,
        model: ModelSpec,
        cluster: Cluster,
        slo: Slo,
        source: DemandSource,
        config: DecisionConfig | None = None,
        *,
        calibration: Calibration | None = None,
        progress: Callable[[str], None] | None = None,
        router: str | RouterSpec = ROUTER,
        plan_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.trace, self.grid = trace, grid
        self.router = router
        self.core = ControllerCore(
            model,
            cluster,
            slo,
            source,
            config,
            calibration=calibration,
            router=router,
            plan_options=plan_options,
            progress=progress,
        )
        self.config = self.core.config
        self.source = source
        self.reroutes = 0  # weights-only updates sent
        self.pending: list[Switch] = []  # the waves of a staged switch still to apply
        self.waves = 0  # switches sent to the simulator (a staged switch sends one per wave)
        self.end_s = float(trace.arrival_s[-1]) if len(trace) else 0.0
        self._edges = RequestGrid.of(grid)
        self.start_label = "plan"  # the candidate the run starts from (``start_adaptive``: a seed's label)
        self.start_candidates: tuple[StartCandidate, ...] = ()  # every candidate the start check ranked

    @property
    def decisions(self) -> list[Decision]:
        return self.core.decisions

    @property
    def forecasts(self) -> list[tuple[float, np.ndarray]]:
        return self.core.forecasts

    @property
    def switches(self) -> list[Decision]:
        return self.core.switches

    @property
    def sees_future(self) -> bool:
        """The oracle reads the trace ahead of ``now``; every other source only behind it."""
        return self.source.sees_future

    def next_decision(self, now: float) -> float | None:
        if now < 0:
            now = 0.0
        if self.pending:  # a staged switch: look again soon for the next wave
            return now + self.config.wave_poll_s
        t = (math.floor(now / self.config.window_s + 1e-9) + 1) * self.config.window_s
        return t if t < self.end_s else None

    def observe(self, now: float, view: ClusterView) -> Observation:
        """The core's observation at ``now``: what the run has seen of the trace, and what its replicas hold."""
        c = self.config
        trace = self.trace
        history = binned_rates(trace, self.grid, max(0.0, now - c.history_s), now, c.bin_s)
        lo = now - max(c.history_s, c.verify_s)
        start, end = np.searchsorted(trace.arrival_s, [max(lo, 0.0), now])
        ahead = None
        if self.sees_future:
            last = np.searchsorted(trace.arrival_s, now + max(c.horizon_s, c.verify_s))
            ahead = trace.take(np.arange(end, last))
        backlog = view.backlog if view.backlog is not None else Backlog.empty(now)
        deployment = view.deployment
        if deployment.type_edges is None:
            deployment = replace(deployment, type_edges=self._edges)
        return Observation(
            now,
            deployment,
            self.grid,
            history,
            trace.take(np.arange(start, end)),
            backlog,
            view.switching,
            ahead,
        )

    def decide(self, now: float, view: ClusterView) -> Switch | None:
        if view.switching:
            return None
        if self.pending:
            self.waves += 1
            return self.pending.pop(0)
        decision = self.core.step(self.observe(now, view))
        if decision.switch and decision.waves:
            self.pending = list(decision.waves)
            self.waves += 1
            return self.pending.pop(0)
        if decision.reroute is not None:
            self.reroutes += 1
            return Switch(decision.reroute)
        return None

    def _verify(self, now: float, view: ClusterView, decision: Decision, demand_rps: float) -> Decision:
        """The core's verify step on ``decision`` (``ControllerCore._replay``), for tests and benchmarks."""
        assert decision.plan is not None
        core = self.core
        waves = tuple(staged_switches(view.deployment, decision.plan, core.model, core.cluster))
        waves = waves or (decision.plan.to_switch(),)
        return confirm(decision, core._replay(self.observe(now, view), waves, demand_rps))
