"""The controller core: observe -> forecast -> plan -> decide -> verify -> switch, knowing no clock.

One ``ControllerCore`` makes every adaptive decision OServe takes, in the simulator and live alike. Each call to
``step`` gets an ``Observation`` — the time on the caller's clock, the running deployment, the per-type arrival
history, the recent requests with their lengths, and the work in flight (``Backlog``) — and returns one
``Decision``:

1. forecast: the ``DemandSource`` turns the history into per-type rates for the horizon;
2. plan: the planner plans for them (lengths from the recent requests of each type);
3. decide: ``adapt.decide`` weighs the gain over the horizon against the switch plan's cost, with hysteresis
   and a minimum interval; a switch made only for latency (room to spare) also waits for a whole history and
   must serve its busiest bin (``_lull_check``);
4. verify: ``adapt.replay`` replays staying and switching in the simulator from the backlog, over the traffic to
   come (the forecast held, and the recent window as it came); a switch it does not confirm as a gain, or that
   loses on the traffic as it came, is not made;
5. switch: the decision carries the switch plan and its waves (``Decision.waves``); otherwise, when the mix has
   moved, new routing weights for the running replicas (``Decision.reroute``).

The simulator's policy (``adapt.policy.AdaptivePolicy``: virtual time, the trace) and the live controller
(``runtime.controller.Controller``: wall time, the gateway) are thin adapters that build the observation and act
on the decision. A pinned core (``pin``: a manual ``oserve deploy``) holds until ``release``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from oserve.adapt.decide import Decision, DecisionConfig, counts_of, decide
from oserve.adapt.replay import ReplayInput, confirm, held_back, replay_switch
from oserve.adapt.sources import DemandSource, binned_rates, peak
from oserve.adapt.waves import staged_switches
from oserve.errors import InfeasibleError
from oserve.perf import Calibration
from oserve.planner import SPILL, Plan, Slo, max_load_scale, plan, routing_weights
from oserve.planner.demand import demands_with_rates
from oserve.sim.backlog import Backlog
from oserve.spec import Cluster, Deployment, ModelSpec, RequestGrid
from oserve.spec.router import RouterSpec
from oserve.trace import Trace, TypeGrid, scale_rate, window

__all__ = ["ROUTER", "ControllerCore", "Observation"]

ROUTER = "allowed-least-work"  # how the adaptive controller routes, in its own replays and where it runs


@dataclass(frozen=True, slots=True, eq=False)
class Observation:
    """What the controller saw at ``now_s`` (seconds on the caller's clock, >= 0).

    ``history``: per-type arrival rates (req/s), bins x types, ``config.bin_s`` bins ending at ``now_s``;
    ``recent``: the requests that arrived before ``now_s`` (arrival times on the same clock, lengths as known:
    the true ones in a replay, output estimated live until a request completes); ``backlog``: the requests queued
    and running now, per replica; ``ahead``: the requests still to come (a replay's hindsight: the oracle only).
    """

    now_s: float
    deployment: Deployment
    grid: TypeGrid
    history: np.ndarray
    recent: Trace
    backlog: Backlog
    switching: bool = False
    ahead: Trace | None = None


def _between(trace: Trace, lo: float, hi: float) -> Trace:
    start, end = np.searchsorted(trace.arrival_s, [lo, hi])
    return trace.take(np.arange(start, end))


class ControllerCore:
    """The one decision loop; ``decisions`` keeps every decision, ``forecasts`` every forecast planned for.
    ``router``: how the cluster routes, for the replays (a registered name, or a ``RouterSpec`` with its
    parameters: the live gateway's)."""

    def __init__(
        self,
        model: ModelSpec,
        cluster: Cluster,
        slo: Slo,
        source: DemandSource,
        config: DecisionConfig | None = None,
        *,
        calibration: Calibration | None = None,
        router: str | RouterSpec = ROUTER,
        plan_options: Mapping[str, Any] | None = None,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        self.model, self.cluster, self.slo, self.source = model, cluster, slo, source
        self.config = config or DecisionConfig()
        self.calibration, self.router = calibration, router
        self.plan_options = dict(plan_options or {})
        self.progress = progress or (lambda _msg: None)
        self.decisions: list[Decision] = []
        self.forecasts: list[tuple[float, np.ndarray]] = []  # (decision time, per-type rates planned for)
        self.last_switch_s = -math.inf
        self.pinned: str | None = None  # why the deployment is held (a manual deploy), until ``release``
        # the running deployment routes by rules the plans do not model (a seeded start: isolation, P/D pools):
        # no re-route until a switch (confirmed by replay) replaces it
        self.keep_routing = False

    # -- outside the loop ------------------------------------------------------------------------------------
    def note_switch(self, now_s: float) -> None:
        """A switch happened outside the loop: the minimum interval counts from ``now_s``."""
        self.last_switch_s = now_s

    def pin(self, reason: str, now_s: float | None = None) -> None:
        """Hold the running deployment whatever the forecast says, until ``release``."""
        self.pinned = reason
        if now_s is not None:
            self.note_switch(now_s)

    def release(self) -> bool:
        """Let the loop switch again; False when nothing was pinned."""
        was, self.pinned = self.pinned is not None, None
        return was

    @property
    def switches(self) -> list[Decision]:
        return [d for d in self.decisions if d.switch]

    # -- the loop --------------------------------------------------------------------------------------------
    def step(self, obs: Observation) -> Decision:
        """One decision at ``obs.now_s``: hold, re-route or switch (see the module docstring)."""
        decision = self._step(obs)
        self.decisions.append(decision)
        if decision.switch:
            self.last_switch_s = obs.now_s
            self.keep_routing = False  # the plan's deployment from here on: its routing is the plan's
        return decision

    def _hold(self, obs: Observation, reason: str, demand_rps: float = 0.0) -> Decision:
        return Decision(obs.now_s, False, reason, demand_rps, math.nan, math.nan, 0.0, 0.0)

    def _step(self, obs: Observation) -> Decision:
        c = self.config
        if self.pinned is not None:
            return self._hold(obs, f"pinned: {self.pinned}")
        if obs.switching:
            return self._hold(obs, "a switch is still under way")
        rates = self.source.rates(obs, c)
        self.forecasts.append((obs.now_s, rates))
        demands = demands_with_rates(self._samples(obs), obs.grid, rates)
        if not demands:
            return self._hold(obs, "no traffic to plan for")
        demand = sum(d.rate_rps for d in demands)
        self.progress(f"t={obs.now_s:.0f} s: planning for {demand:.2f} req/s")
        try:
            planned = plan(
                self.model,
                self.cluster,
                demands,
                self.slo,
                grid=obs.grid,
                calibration=self.calibration,
                latency_headroom=c.latency_headroom or None,
                **self.plan_options,
            )
        except InfeasibleError as exc:  # nothing meets the SLO for this forecast: keep serving as is
            return self._hold(obs, f"no plan for the forecast: {exc}", demand)
        decision = decide(
            obs.now_s, obs.deployment, planned, self.model, self.cluster, c, last_switch_s=self.last_switch_s
        )
        if decision.switch and decision.gain_requests <= 0 and c.lull_check:
            decision = self._lull_check(obs, planned, decision)
        if decision.switch and decision.plan is not None:
            if c.staged:
                waves = tuple(staged_switches(obs.deployment, decision.plan, self.model, self.cluster))
            else:
                waves = ()
            waves = waves or (decision.plan.to_switch(),)
            decision = replace(decision, waves=waves)
            if c.verify_s > 0:
                decision = confirm(decision, self._replay(obs, waves, float(rates.sum())))
        if not decision.switch:
            decision = replace(decision, waves=(), reroute=self._reroute(obs.deployment, planned))
        return decision

    def _lull_check(self, obs: Observation, planned: Plan, decision: Decision) -> Decision:
        """A latency switch (both deployments serve the forecast; the target only serves it faster) bets that
        the lull lasts: hold it unless a whole ``history_s`` has been observed and the target, by the capacity
        model, serves the busiest bin of that history (each type at its peak). Without this, on the ``swing``
        scenario with standby engines the controller switched to one TP8 replica in the first night and met the
        day with a fraction of the capacity (docs/adapt.md, "Switching headroom")."""
        c = self.config
        if obs.now_s < c.history_s or len(obs.history) * c.bin_s < c.history_s - 1e-9:
            return replace(
                decision,
                switch=False,
                reason=f"{decision.reason}; but a latency switch waits for {c.history_s:.0f} s of history "
                f"(seen {obs.now_s:.0f} s)",
            )
        busiest = np.max(obs.history, axis=0)
        counts = counts_of(decision.target, planned) if decision.target is not None else planned.counts
        alpha = max_load_scale(busiest, planned.mu_rps, counts).alpha
        if not alpha >= 1.0:
            return replace(
                decision,
                switch=False,
                reason=f"{decision.reason}; but the target would serve the last {c.history_s:.0f} s's busiest "
                f"bin at load scale {alpha:.2f} (< 1)",
            )
        return decision

    def _samples(self, obs: Observation) -> Trace:
        """The requests whose lengths the plan uses: those the rates come from (the last ``history_s``; the
        oracle's horizon), so a shift in the mix shifts the lengths too."""
        if self.source.sees_future and obs.ahead is not None:
            return _between(obs.ahead, obs.now_s, obs.now_s + self.config.horizon_s)
        return _between(obs.recent, obs.now_s - self.config.history_s, obs.now_s)

    def _replay(self, obs: Observation, waves: tuple, demand_rps: float):
        """Replay the switch against staying from the backlog: over the next ``verify_s`` of traffic (the oracle:
        the requests to come; else the last ``verify_s`` of requests, scaled to the forecast).

        ``demand_rps`` is what the plan provisions for: each type's forecast ``bin_s`` bin at ``peak_quantile``
        (``ForecastSource``), summed. The past window's mean is scaled to it: the forecast held for the whole
        replay, what the switch must pay at. That can be a sustained overload the traffic never reaches (a burst's
        bin as the mean of minutes), where wide replicas win what they lose at the real rate, so the switch must
        also not lose on the window as it came, scaled peak to peak: its own bins at ``peak_quantile`` matched to
        the forecast's, bursts and lulls kept (``replay.held_back``). Without that second replay, on 70B swing the
        busiest 30 s bin (10.8 req/s) replayed as the mean of 300 s put both branches at ~40 % met and confirmed
        4 x TP4 -> 1 x TP8 + 2 x TP4, which met the SLO for 74 % of the next 240 s against 94 % staying
        (docs/adapt.md, "Switching headroom")."""
        c = self.config
        span, now = c.verify_s, obs.now_s
        if self.source.sees_future and obs.ahead is not None:
            lo, hi, source = now, now + span, obs.ahead
        else:
            lo, hi, source = max(0.0, now - span), now, obs.recent
        past = window(source, lo, hi) if hi > lo and len(source) else source.take(np.zeros(0, np.int64))
        factors = [1.0]  # the past window's rate scale for each replay: the oracle's future as it is
        if not self.source.sees_future and len(past) and demand_rps > 0:
            to_mean = demand_rps / (len(past) / (hi - lo))  # the forecast held: its mean to the forecast
            bins = binned_rates(past, obs.grid, 0.0, hi - lo, c.bin_s)
            peaked = float(peak(bins, c.peak_quantile).sum())
            factors = [to_mean]
            if peaked > 0 and abs(demand_rps / peaked - to_mean) > 0.01 * to_mean:
                factors.append(demand_rps / peaked)  # as it came: its peak bins to the forecast's
        verdicts = []
        for factor in factors:
            future = scale_rate(past, factor) if abs(factor - 1) > 0.01 else past
            x = ReplayInput(now, obs.deployment, waves, obs.backlog, future, RequestGrid.of(obs.grid))
            verdicts.append(
                replay_switch(
                    x,
                    self.model,
                    self.cluster,
                    self.slo,
                    self.config,
                    router=self.router,
                    calibration=self.calibration,
                )
            )
            if not verdicts[-1].confirmed:
                break  # a switch the forecast's replay refuses needs no second look
        if len(verdicts) == 1:
            return verdicts[0]
        return held_back(verdicts[0], verdicts[1], factors[1], c.verify_margin)

    def _reroute(self, current: Deployment, planned: Plan) -> Deployment | None:
        """Keep the replicas, re-route: the flow LP's shares for the running replicas on the forecast demand (a
        shift in the mix moves load between replicas at no cost), or None when nothing would change or while
        ``keep_routing`` holds the running deployment's own rules."""
        if self.keep_routing:
            return None
        counts = counts_of(current, planned)
        rates = np.array([d.rate_rps for d in planned.demands], dtype=np.float64)
        flow = max_load_scale(rates, planned.mu_rps, counts)
        if not np.isfinite(flow.alpha) or flow.alpha <= 0:
            return None
        weights = routing_weights(
            current.replicas, planned.configs, counts, flow, planned.demands, planned.mu_rps, SPILL
        )
        return None if weights == current.weights else replace(current, weights=weights)
