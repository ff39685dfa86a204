"""When to switch: re-plan on the forecast and switch only when the gain over the horizon pays for the switch.

At every decision the planner plans for the forecast demand (``target``) and the flow LP scores the running
deployment on the same demand and capacities (``current_alpha``). Both become served load: a deployment at load
scale alpha serves ``min(1, alpha * utilisation) ** overload_exponent`` of the demand within the SLO, where
``utilisation`` (0.9) is the share of planned capacity one runs at before the tail grows and the exponent (2)
says that an overloaded deployment loses more than its capacity shortfall: its queue grows and delays the
requests it does serve (in the simulator, Llama-3-8B on 8 x H100 TP1, the shifting scenario scaled to 1.2x of
planned load, met the SLO for 60 % of requests: 0.75 by the linear share, 0.56 by the square). The gain is the
extra requests served over the horizon; the cost is the requests the switch leaves unserved, the GPU-seconds its replicas are out of service
(``SwitchPlan.capacity_lost_gpu_s``: draining, moving weights, restarting engines) at the running deployment's
per-GPU rate, times ``cost_factor``. Switch when

    gain > cost_margin * cost,  target_alpha >= current_alpha * (1 + hysteresis),
    and  now - last switch >= min_interval_s

``cost_margin`` (2) covers what the estimate leaves out: requests queued while replicas restart delay the ones
behind them too. And the target must be able to drain that backlog: its spare capacity over the horizon,
``(target_alpha - 1) * demand * horizon``, must cover the switch cost — switching between two
overloaded deployments leaves a queue that never empties (in the simulator such switches halved goodput).

The hysteresis keeps forecast noise from flapping between near-equal deployments; the minimum interval bounds
the switch rate whatever the forecast says. When both deployments serve the whole forecast (spare capacity), the
planner plans in latency mode and the switch pays in latency instead: it goes ahead when the target cuts the
mean unloaded E2E latency of the demand by ``latency_gain`` and costs at most ``latency_cost_share`` of the
horizon's requests; such a switch bets that the lull lasts, so the core (``lull_check``) makes it only once a whole
``history_s`` has been seen and the target serves that history's busiest bin.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from oserve.adapt.switch import COLD_RESTART_S, SWITCH_WEIGHTS, SwitchWeights, price_switch
from oserve.adapt.switch_plan import SwitchPlan
from oserve.errors import ConfigError
from oserve.planner import Plan, max_load_scale, replica_counts
from oserve.planner.latency import min_latency
from oserve.sim.policy import Switch
from oserve.spec import Cluster, Deployment, ModelSpec

if TYPE_CHECKING:  # pragma: no cover
    from oserve.adapt.replay import ReplayVerdict

__all__ = ["Decision", "DecisionConfig", "counts_of", "decide", "served_share"]


@dataclass(frozen=True, slots=True)
class DecisionConfig:
    """How the adaptive controller decides (times in seconds)."""

    window_s: float = 60.0  # decide this often
    bin_s: float = 30.0  # history granularity for the forecaster
    history_s: float = 900.0  # history the forecaster sees
    horizon_s: float = 300.0  # forecast and gain horizon
    min_interval_s: float = 180.0  # never switch more often
    hysteresis: float = 0.05  # the target's alpha must beat the running one by this share
    utilisation: float = 0.9  # planned-capacity share served within the SLO
    overload_exponent: float = (
        2.0  # served share below capacity: (alpha * utilisation) ** this (see served_share)
    )
    restart_s: float = COLD_RESTART_S  # engine start beyond weights (WAKE_RESTART_S with standby engines)
    weights_from: SwitchWeights = "links"  # links: the fastest source per byte; disk: every engine reloads
    cost_factor: float = 1.0  # scale the switch cost (sensitivity runs)
    cost_margin: float = (
        2.0  # the gain must beat the cost this many times (the backlog a switch leaves behind)
    )
    peak_quantile: float = 1.0  # provision for this quantile of the forecast bins (1: the busiest)
    latency_headroom: float = 1.5  # plan in latency mode when the cluster has this much room (0: never)
    latency_gain: float = 0.1  # with room to spare, switch for this cut in mean unloaded latency ...
    latency_cost_share: float = 0.02  # ... when the switch costs at most this share of the horizon's requests
    # ... and only after history_s of traffic, when the target serves that history's busiest bin (adapt.core)
    lull_check: bool = True
    verify_s: float = 300.0  # replay a switch in the simulator on this much traffic first (0: never)
    verify_margin: float = (
        0.01  # the replay must show the switch meeting the SLO for this share more requests
    )
    staged: bool = True  # switch in waves that keep part of the cluster serving (False: all replicas at once)
    wave_poll_s: float = 5.0  # during a staged switch, check this often whether the next wave may go

    def __post_init__(self) -> None:
        for name in ("window_s", "bin_s", "history_s", "horizon_s", "wave_poll_s"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in (
            "min_interval_s",
            "hysteresis",
            "restart_s",
            "cost_factor",
            "cost_margin",
            "verify_s",
            "verify_margin",
            "overload_exponent",
        ):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.weights_from not in SWITCH_WEIGHTS:
            raise ConfigError(
                f"weights_from must be one of {', '.join(SWITCH_WEIGHTS)}, got {self.weights_from!r}"
            )
        if not 0 < self.utilisation <= 1 or not 0 < self.peak_quantile <= 1:
            raise ConfigError("utilisation and peak_quantile must be in (0, 1]")


@dataclass(frozen=True, slots=True)
class Decision:
    """One decision point: what was compared and why it switched or not."""

    time_s: float
    switch: bool
    reason: str
    demand_rps: float
    current_alpha: float
    target_alpha: float
    gain_requests: float
    cost_requests: float
    target: Deployment | None = None
    plan: SwitchPlan | None = None
    replay: ReplayVerdict | None = None  # what the simulator replay saw (``adapt.replay``), when it ran
    waves: tuple[Switch, ...] = ()  # a switch as the simulator and the orchestrator apply it, wave by wave
    reroute: Deployment | None = (
        None  # no switch: the running replicas with new routing weights, if they moved
    )

    @property
    def kind(self) -> str:
        """``switch``, ``reroute`` or ``hold``."""
        return "switch" if self.switch else "reroute" if self.reroute is not None else "hold"

    def to_dict(self) -> dict[str, Any]:
        return {
            "time_s": self.time_s,
            "switch": self.switch,
            "reason": self.reason,
            "demand_rps": self.demand_rps,
            "current_alpha": self.current_alpha,
            "target_alpha": self.target_alpha,
            "gain_requests": self.gain_requests,
            "cost_requests": self.cost_requests,
            "target": self.target.describe() if self.target is not None else None,
            "switch_s": self.plan.duration_s if self.plan is not None else None,
            "replay": self.replay.to_dict() if self.replay is not None else None,
            "kind": self.kind,
        }


def counts_of(deployment: Deployment, planned: Plan) -> np.ndarray:
    """Replicas of ``deployment`` per config of ``planned`` (``planner.replica_counts``)."""
    return replica_counts(deployment.replicas, planned.configs)


def served_share(alpha: float, utilisation: float, overload_exponent: float = 1.0) -> float:
    """Share of the demand served within the SLO by a deployment at load scale ``alpha``: all of it up to
    ``alpha * utilisation = 1``; below, the capacity share ``alpha * utilisation`` to the power
    ``overload_exponent`` (an overloaded deployment also delays what it serves: its queue grows)."""
    return min(1.0, max(0.0, alpha) * utilisation) ** overload_exponent


def _latency_cut(planned: Plan, current: Deployment, rates: np.ndarray) -> float:
    """How much lower the target's mean unloaded latency is than the running deployment's on the same demand
    (0 unless the plan is in latency mode and both fit the demand with the same headroom)."""
    if planned.latency_s is None or planned.packing is None or not planned.method.endswith("+latency"):
        return 0.0
    mu = planned.mu_rps

    def mean(counts: np.ndarray) -> float:
        return min_latency(
            rates, mu, planned.latency_s, planned.packing, headroom=1.0, counts=counts
        ).mean_latency_s

    now, new = mean(counts_of(current, planned)), mean(planned.counts)
    return 0.0 if not (np.isfinite(now) and np.isfinite(new)) or now <= 0 else max(0.0, 1 - new / now)


def decide(
    now_s: float,
    current: Deployment,
    planned: Plan,
    model: ModelSpec,
    cluster: Cluster,
    config: DecisionConfig,
    *,
    last_switch_s: float = -math.inf,
) -> Decision:
    """Compare the running deployment with ``planned`` (the plan for the forecast demand) and decide."""
    rates = np.array([d.rate_rps for d in planned.demands], dtype=np.float64)
    demand = float(rates.sum())
    current_alpha = max_load_scale(rates, planned.mu_rps, counts_of(current, planned)).alpha
    target_alpha = planned.alpha
    gain = (
        config.horizon_s
        * demand
        * (
            served_share(target_alpha, config.utilisation, config.overload_exponent)
            - served_share(current_alpha, config.utilisation, config.overload_exponent)
        )
    )

    def made(switch: bool, reason: str, cost: float, target: Deployment, switch_plan: SwitchPlan | None):
        return Decision(
            now_s, switch, reason, demand, current_alpha, target_alpha, gain, cost, target, switch_plan
        )

    def hold(reason: str, cost: float = 0.0, switch_plan: SwitchPlan | None = None) -> Decision:
        return made(False, reason, cost, planned.deployment, switch_plan)

    if now_s - last_switch_s < config.min_interval_s:
        return hold(f"last switch {now_s - last_switch_s:.0f} s ago (< {config.min_interval_s:.0f} s)")
    faster = _latency_cut(planned, current, rates)
    if target_alpha < current_alpha * (1 + config.hysteresis) and faster < config.latency_gain:
        return hold(
            f"target alpha {target_alpha:.3f} within {config.hysteresis:.0%} of the running {current_alpha:.3f}"
        )
    if gain <= 0 and faster < config.latency_gain:
        return hold("the running deployment already serves the forecast within the SLO")
    switch_plan = price_switch(
        current, planned.deployment, model, cluster, weights=config.weights_from, restart_s=config.restart_s
    )
    gpus = sum(len(r.gpu_ids) for r in current.replicas)
    served_rps = demand * served_share(current_alpha, config.utilisation, config.overload_exponent)
    cost = config.cost_factor * switch_plan.capacity_lost_gpu_s * served_rps / max(gpus, 1)
    spare = (target_alpha - 1) * demand * config.horizon_s
    if gain > 0 and spare < cost:
        return hold(
            f"the target cannot drain the backlog the switch leaves: {max(spare, 0):.0f} requests of spare "
            f"capacity over the horizon < switch cost {cost:.0f}",
            cost,
            switch_plan,
        )
    if gain > config.cost_margin * cost:
        reason = f"gain {gain:.0f} requests > {config.cost_margin:g} x switch cost {cost:.0f}"
    elif gain <= 0 and cost <= config.latency_cost_share * config.horizon_s * demand:
        reason = f"mean latency -{faster:.0%} for a switch cost of {cost:.0f} requests"
    elif gain <= 0:
        return hold(
            f"mean latency -{faster:.0%} not worth a switch cost of {cost:.0f} requests "
            f"(> {config.latency_cost_share:.0%} of the horizon's)",
            cost,
            switch_plan,
        )
    else:
        return hold(
            f"gain {gain:.0f} requests <= {config.cost_margin:g} x switch cost {cost:.0f}", cost, switch_plan
        )
    return made(True, reason, cost, switch_plan.target, switch_plan)
