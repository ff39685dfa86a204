"""The adaptive policies for the simulator: forecast, re-plan, decide, switch — with real switch costs.

``AdaptivePolicy`` runs the controller's loop at every ``window_s`` of virtual time: a ``DemandSource`` says the
per-type rates to plan for over the next horizon, the planner plans for them (lengths from the requests seen so
far), ``decide`` weighs the gain against the switch plan's cost, and a switch goes to the simulator as the switch
planner's ``Switch`` (stopped replicas drain; started ones serve when their weights and engine are ready).

Sources: ``ForecastSource`` (a forecaster over the per-type history up to now: the ``oserve`` policy),
``OracleSource`` (the trace's true future: ``oserve-oracle``, an upper bound) and ``NoisySource`` (either, each
type's rate off by a random +-error: the sensitivity runs). Everything a source reads of the trace is before
``now`` except the oracle's.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Protocol

import numpy as np

from oserve.adapt.decide import Decision, DecisionConfig, counts_of, decide
from oserve.adapt.forecast import Forecaster
from oserve.adapt.waves import staged_switches
from oserve.errors import InfeasibleError
from oserve.perf import Calibration
from oserve.planner import SPILL, Plan, Slo, max_load_scale, plan, routing_weights
from oserve.planner.demand import demands_with_rates
from oserve.planner.verify import TIE, best_index
from oserve.sim import SimResult, simulate
from oserve.sim.policy import ClusterView, SequencePolicy, Switch
from oserve.spec import Cluster, Deployment, ModelSpec, RequestGrid
from oserve.trace import Trace, TypeGrid, scale_rate, window

__all__ = [
    "AdaptivePolicy",
    "DemandSource",
    "ForecastSource",
    "NoisySource",
    "OracleSource",
    "binned_rates",
    "initial_plan",
    "start_adaptive",
]


def binned_rates(trace: Trace, grid: TypeGrid, start_s: float, end_s: float, bin_s: float) -> np.ndarray:
    """Per-type arrival rates (req/s) in consecutive ``bin_s`` bins over ``[start_s, end_s)``: bins x types."""
    bins = max(1, math.ceil((end_s - start_s) / bin_s - 1e-9))
    lo, hi = np.searchsorted(trace.arrival_s, [start_s, end_s])
    which = ((trace.arrival_s[lo:hi] - start_s) // bin_s).astype(np.int64).clip(0, bins - 1)
    types = grid.classify_lengths(trace.prompt_tokens[lo:hi], trace.output_tokens[lo:hi])
    counts = np.bincount(which * grid.num_types + types, minlength=bins * grid.num_types)
    return counts.reshape(bins, grid.num_types) / bin_s


def _peak(rates: np.ndarray, quantile: float) -> np.ndarray:
    return np.quantile(rates, quantile, axis=0) if len(rates) > 1 else rates[0]


class DemandSource(Protocol):
    """Per-type rates (req/s) to plan for over ``[now, now + horizon)``."""

    def rates(self, now_s: float, trace: Trace, grid: TypeGrid, config: DecisionConfig) -> np.ndarray: ...


class ForecastSource:
    """A forecaster over the last ``history_s`` of per-type rates; the horizon's bins at ``peak_quantile``, and
    never below what the last ``window_s`` showed (``floor_recent``): a smoothing forecaster lags a step in the
    load by minutes, and planning below the load already arriving overloads the cluster."""

    def __init__(self, forecaster: Forecaster, *, floor_recent: bool = True) -> None:
        self.forecaster = forecaster
        self.floor_recent = floor_recent

    def rates(self, now_s: float, trace: Trace, grid: TypeGrid, config: DecisionConfig) -> np.ndarray:
        start = max(0.0, now_s - config.history_s)
        history = binned_rates(trace, grid, start, now_s, config.bin_s)
        steps = max(1, math.ceil(config.horizon_s / config.bin_s))
        rates = np.maximum(_peak(self.forecaster.forecast(history, steps), config.peak_quantile), 0.0)
        if self.floor_recent:
            recent = history[-max(1, round(config.window_s / config.bin_s)) :]
            rates = np.maximum(rates, _peak(recent, config.peak_quantile))
        return rates


class OracleSource:
    """The trace's true rates over the horizon (an upper bound no real controller reaches)."""

    def rates(self, now_s: float, trace: Trace, grid: TypeGrid, config: DecisionConfig) -> np.ndarray:
        future = binned_rates(trace, grid, now_s, now_s + config.horizon_s, config.bin_s)
        return _peak(future, config.peak_quantile)


class NoisySource:
    """Another source's rates, each type's off by a uniform random share in ``[-error, +error]``."""

    def __init__(self, source: DemandSource, error: float, seed: int = 0) -> None:
        self.source, self.error = source, float(error)
        self.rng = np.random.default_rng(seed)

    def rates(self, now_s: float, trace: Trace, grid: TypeGrid, config: DecisionConfig) -> np.ndarray:
        rates = self.source.rates(now_s, trace, grid, config)
        return rates * (1 + self.rng.uniform(-self.error, self.error, rates.shape))


ROUTER = "allowed-least-work"  # how the adaptive policies route, in their own checks and in the simulator
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
        rates = _peak(binned_rates(trace, grid, 0.0, config.horizon_s, config.bin_s), config.peak_quantile)
    else:
        span = max(float(prior.arrival_s[-1]) if len(prior) else 0.0, config.bin_s)
        rates = _peak(binned_rates(prior, grid, 0.0, span, config.bin_s), PRIOR_QUANTILE)
    return plan(
        model,
        cluster,
        demands_with_rates(prior, grid, rates),
        slo,
        grid=grid,
        calibration=calibration,
        latency_headroom=config.latency_headroom or None,
    )


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
    seeds: Sequence[tuple[Deployment, SimResult]] = (),
    progress: Callable[[str], None] | None = None,
) -> tuple[Deployment, AdaptivePolicy]:
    """What ``oserve simulate --policy oserve`` runs: the trace's 6 quantile types, the start plan and the policy
    to simulate from there (simulate with ``grid=policy.grid``, route with ``policy.router``). ``prior`` is
    the traffic the start is planned on (``initial_plan``): a past day of the same service; the benchmarks pass
    the trace itself (the information the hindsight static baselines get), None plans on the trace's first
    horizon only. ``seeds``: deployments already simulated on ``prior`` (e.g. the best homogeneous one); the
    plan is simulated there too and the start is the best of them (goodput, then p99 E2E), so a capacity model
    that flatters the plan does not start the run worse than a baseline."""
    config = config or DecisionConfig()
    grid = TypeGrid.for_types(trace, 6)
    start = initial_plan(
        trace, grid, model, cluster, slo, config, calibration=calibration, prior=prior
    ).deployment
    if seeds and prior is not None:
        result = simulate(
            prior,
            start,
            model,
            cluster,
            router=ROUTER,
            grid=grid,
            calibration=calibration,
            slo=slo.to_dict(),
        )
        scored = [(start, result), *seeds]
        best = best_index([(r.summary["goodput_rps"], r.summary["e2e_p99"]) for _, r in scored])
        if best > 0:  # a seed: routed by the policy's own types (its first re-route sets the LP's weights)
            start = replace(scored[best][0], weights={}, type_edges=RequestGrid.of(grid))
    policy = AdaptivePolicy(
        trace, grid, model, cluster, slo, source, config, calibration=calibration, progress=progress
    )
    return start, policy


class AdaptivePolicy:
    """The simulator ``Policy`` of ``oserve`` / ``oserve-oracle``; ``decisions`` keeps every decision made.
    Simulate it with ``router=policy.router`` (what its own switch checks assume)."""

    router = ROUTER

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
    ) -> None:
        self.trace, self.grid, self.model, self.cluster, self.slo = trace, grid, model, cluster, slo
        self.source = source
        self.config = config or DecisionConfig()
        self.calibration = calibration
        self.progress = progress or (lambda _msg: None)
        self.decisions: list[Decision] = []
        self.forecasts: list[tuple[float, np.ndarray]] = []  # (decision time, per-type rates planned for)
        self.last_switch_s = -math.inf
        self.reroutes = 0  # weights-only updates sent
        self.pending: list[Switch] = []  # the waves of a staged switch still to apply
        self.waves = 0  # switches sent to the simulator (a staged switch sends one per wave)
        self.end_s = float(trace.arrival_s[-1]) if len(trace) else 0.0

    @property
    def sees_future(self) -> bool:
        """The oracle reads the trace ahead of ``now``; every other source only behind it."""
        return isinstance(self.source, OracleSource)

    def next_decision(self, now: float) -> float | None:
        if now < 0:
            now = 0.0
        if self.pending:  # a staged switch: look again soon for the next wave
            return now + self.config.wave_poll_s
        t = (math.floor(now / self.config.window_s + 1e-9) + 1) * self.config.window_s
        return t if t < self.end_s else None

    def _samples(self, now: float) -> Trace:
        """The requests whose lengths the plan uses: those the source's rates come from (the last ``history_s``;
        the oracle's horizon), so a shift in the mix shifts the lengths too."""
        if self.sees_future:
            lo, hi = now, now + self.config.horizon_s
        else:
            lo, hi = now - self.config.history_s, now
        start, end = np.searchsorted(self.trace.arrival_s, [lo, hi])
        return self.trace.take(np.arange(start, end))

    def decide(self, now: float, view: ClusterView) -> Switch | None:
        if view.switching:
            return None
        if self.pending:
            self.waves += 1
            return self.pending.pop(0)
        rates = self.source.rates(now, self.trace, self.grid, self.config)
        self.forecasts.append((now, rates))
        demands = demands_with_rates(self._samples(now), self.grid, rates)
        if not demands:
            return None
        self.progress(f"t={now:.0f} s: planning for {sum(d.rate_rps for d in demands):.2f} req/s")
        try:
            planned = plan(
                self.model,
                self.cluster,
                demands,
                self.slo,
                grid=self.grid,
                calibration=self.calibration,
                latency_headroom=self.config.latency_headroom or None,
            )
        except InfeasibleError:
            return None  # nothing meets the SLO for this forecast: keep serving as is
        decision = decide(
            now,
            view.deployment,
            planned,
            self.model,
            self.cluster,
            self.config,
            last_switch_s=self.last_switch_s,
        )
        if decision.switch and decision.plan is not None and self.config.verify_s > 0:
            decision = self._verify(now, view.deployment, decision, float(rates.sum()))
        self.decisions.append(decision)
        if not decision.switch or decision.plan is None:
            return self._reroute(view.deployment, planned)
        self.last_switch_s = now
        if self.config.staged:
            self.pending = staged_switches(view.deployment, decision.plan, self.model, self.cluster)
            if self.pending:
                self.waves += 1
                return self.pending.pop(0)
        self.waves += 1
        return decision.plan.to_switch()

    def _verify(self, now: float, current: Deployment, decision: Decision, demand_rps: float) -> Decision:
        """Check a switch the capacity model wants in the simulator before making it: the last ``verify_s`` of
        requests at the forecast rate (the oracle: the next ones, as they come), through the running deployment
        as it is and through the switch itself (its waves, drains and engine starts, from the replay's start).
        It goes ahead when the target serves ``hysteresis`` more within the SLO, or as much with a p99 E2E
        ``latency_gain`` lower; else the decision becomes a hold that says what the simulator saw."""
        span = self.config.verify_s
        lo, hi = (now, now + span) if self.sees_future else (max(0.0, now - span), now)
        first, last = np.searchsorted(self.trace.arrival_s, [lo, hi])
        if hi <= lo or last <= first:
            return decision
        sample = window(self.trace, lo, hi)
        observed = len(sample) / (hi - lo)
        if not self.sees_future and demand_rps > 0 and abs(demand_rps / observed - 1) > 0.01:
            sample = scale_rate(sample, demand_rps / observed)

        if self.config.staged:
            waves = staged_switches(current, decision.plan, self.model, self.cluster)
        else:
            waves = [decision.plan.to_switch()]
        waves = [replace(w, deployment=replace(w.deployment, type_edges=RequestGrid.of(self.grid))) for w in waves]

        def run(policy: SequencePolicy) -> dict:
            return simulate(
                sample,
                replace(current, type_edges=RequestGrid.of(self.grid)),
                self.model,
                self.cluster,
                router=ROUTER,
                calibration=self.calibration,
                policy=policy,
                slo=self.slo.to_dict(),
            ).summary

        # staying, against switching at the replay's start (the waves, drains and engine starts included)
        now_sim, new_sim = run(SequencePolicy([])), run(SequencePolicy(waves, poll_s=self.config.wave_poll_s))
        g0, g1 = now_sim["goodput_rps"], new_sim["goodput_rps"]
        p0, p1 = now_sim["e2e_p99"], new_sim["e2e_p99"]
        better = g1 >= g0 * (1 + self.config.hysteresis) or (
            g1 >= g0 * (1 - TIE) and p1 <= p0 * (1 - self.config.latency_gain)
        )
        seen = (
            f"simulated {hi - lo:.0f} s at {len(sample) / (hi - lo):.1f} req/s: target {g1:.2f} req/s "
            f"p99 {p1:.1f} s, running {g0:.2f} req/s p99 {p0:.1f} s"
        )
        if better:
            return replace(decision, reason=f"{decision.reason}; {seen}")
        return replace(decision, switch=False, reason=f"model: {decision.reason}; but {seen}")

    def _reroute(self, current: Deployment, planned: Plan) -> Switch | None:
        """Keep the replicas, re-route: the flow LP's shares for the running replicas on the forecast demand (a
        shift in the mix moves load between replicas at no cost), or None when nothing would change."""
        counts = counts_of(current, planned)
        rates = np.array([d.rate_rps for d in planned.demands], dtype=np.float64)
        flow = max_load_scale(rates, planned.mu_rps, counts)
        if not np.isfinite(flow.alpha) or flow.alpha <= 0:
            return None
        weights = routing_weights(
            current.replicas, planned.configs, counts, flow, planned.demands, planned.mu_rps, SPILL
        )
        if weights == current.weights:
            return None
        self.reroutes += 1
        return Switch(replace(current, weights=weights))

    @property
    def switches(self) -> list[Decision]:
        return [d for d in self.decisions if d.switch]
