"""The controller: every window, observe per-type arrivals at the gateway -> forecast -> plan -> decide -> apply;
and, between windows, restart replicas whose engine died.

Observe: the gateway's cumulative per-type counts, differenced per window into rates (req/s). Forecast: any
registered forecaster (``oserve.adapt.make_forecaster``) over the last ``history_windows``; the plan provisions for
the highest forecast window within the horizon. Plan: ``oserve.planner.plan`` on the forecast, with each type's
mean lengths (from the workload the deployment was planned for, else the middle of its bin). Decide: a small
pluggable function of the planned and current load scale alpha (the same LP prices both); the default switches when
the plan sustains ``min_gain`` more load and the last switch is ``min_interval_s`` old. Apply: the orchestrator's
``apply``, which never drops an accepted request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from oserve.adapt import Forecaster, make_forecaster
from oserve.errors import ConfigError, OServeError
from oserve.planner import Plan, Slo, TypeDemand, plan, replica_counts
from oserve.planner.flow import max_load_scale
from oserve.runtime.orchestrator import Orchestrator
from oserve.spec import Cluster, Deployment, ModelSpec
from oserve.trace import TypeGrid

__all__ = [
    "Controller",
    "ControllerConfig",
    "ControllerEvent",
    "Decide",
    "Decision",
    "DecisionInput",
    "deployment_alpha",
    "gain_rule",
    "type_lengths_from_grid",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DecisionInput:
    """What a decision rule sees: load scales of the running and the planned deployment for the forecast (1.0
    means exactly the forecast within the SLO), now and the last switch (monotonic seconds)."""

    now_s: float
    last_switch_s: float | None
    current_alpha: float
    planned_alpha: float
    forecast_rps: Mapping[str, float]


@dataclass(frozen=True, slots=True)
class Decision:
    switch: bool
    reason: str


Decide = Callable[[DecisionInput], Decision]


def gain_rule(min_gain: float = 0.10, min_interval_s: float = 60.0) -> Decide:
    """Switch when the plan sustains ``min_gain`` (fraction) more load than the running deployment, at most once
    per ``min_interval_s``. The gain threshold is the hysteresis: noise moves alpha by a few percent."""
    if min_gain < 0 or min_interval_s < 0:
        raise ConfigError("min_gain and min_interval_s must be >= 0")

    def decide(x: DecisionInput) -> Decision:
        if x.last_switch_s is not None and x.now_s - x.last_switch_s < min_interval_s:
            return Decision(
                False, f"last switch {x.now_s - x.last_switch_s:.0f} s ago (< {min_interval_s:g} s)"
            )
        if x.current_alpha <= 0:
            return Decision(x.planned_alpha > 0, "the running deployment cannot serve every type")
        gain = x.planned_alpha / x.current_alpha - 1.0
        if gain >= min_gain:
            return Decision(True, f"plan sustains {gain:+.0%} load (threshold {min_gain:.0%})")
        return Decision(False, f"gain {gain:+.1%} below {min_gain:.0%}")

    return decide


@dataclass(frozen=True, slots=True)
class ControllerConfig:
    """Timing and policy of the control loop."""

    window_s: float = 10.0  # observation window, seconds
    history_windows: int = 30  # windows the forecaster sees
    min_history_windows: int = 3  # windows observed before the first decision
    horizon_windows: int = 6  # windows ahead the plan provisions for (their peak)
    forecaster: str = "ewma"
    min_gain: float = 0.10
    min_interval_s: float = 60.0
    health_interval_s: float = 1.0
    plan_method: str = "auto"
    tps: tuple[int, ...] = (1, 2, 4, 8)
    pps: tuple[int, ...] = (1,)

    def __post_init__(self) -> None:
        if not self.window_s > 0 or not self.health_interval_s > 0:
            raise ConfigError("window_s and health_interval_s must be > 0")
        if not 1 <= self.min_history_windows <= self.history_windows or self.horizon_windows < 1:
            raise ConfigError("need 1 <= min_history_windows <= history_windows and horizon_windows >= 1")


@dataclass(frozen=True, slots=True)
class ControllerEvent:
    """One thing the controller did, for /admin/status and logs."""

    time_s: float
    kind: str  # warming, idle, hold, switch, restore, error
    detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"time_s": round(self.time_s, 3), "kind": self.kind, **self.detail}


def type_lengths_from_grid(grid: TypeGrid) -> dict[str, tuple[float, float]]:
    """A stand-in mean (prompt, output) per type when none is known: the geometric middle of its bin (half the
    upper edge for the lowest bin, 1.5x the lower edge for the open top one)."""

    def middle(lo: int, hi: int | None) -> float:
        if hi is None:
            return 1.5 * max(lo, 1)
        return max(1.0, hi / 2) if lo == 0 else float(np.sqrt(lo * hi))

    return {
        t.name: (
            middle(t.prompt_min_tokens, t.prompt_max_tokens),
            middle(t.output_min_tokens, t.output_max_tokens),
        )
        for t in grid.types
    }


def deployment_alpha(deployment: Deployment | None, result: Plan) -> float:
    """Load scale the running replicas sustain for the plan's demands (the planner's LP, its capacities)."""
    if deployment is None:
        return 0.0
    counts = replica_counts(deployment.replicas, result.configs)
    rates = np.array([d.rate_rps for d in result.demands])
    return float(max_load_scale(rates, result.mu_rps, counts).alpha)


class Controller:
    """Closes the loop from the gateway's observed traffic to the orchestrator."""

    def __init__(
        self,
        orchestrator: Orchestrator,
        observe: Callable[[], Mapping[str, int]],
        *,
        model: ModelSpec,
        cluster: Cluster,
        grid: TypeGrid,
        slo: Slo,
        type_lengths: Mapping[str, tuple[float, float]] | None = None,
        config: ControllerConfig | None = None,
        forecaster: Forecaster | None = None,
        decide: Decide | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.orchestrator = orchestrator
        self.observe = observe
        self.model, self.cluster, self.grid, self.slo = model, cluster, grid, slo
        self.config = config or ControllerConfig()
        self.types = grid.names
        lengths = type_lengths_from_grid(grid)
        lengths.update(type_lengths or {})
        self.type_lengths = lengths
        self.forecaster = forecaster or make_forecaster(self.config.forecaster)
        self.decide = decide or gain_rule(self.config.min_gain, self.config.min_interval_s)
        self.clock = clock
        self.history: deque[np.ndarray] = deque(maxlen=self.config.history_windows)
        self.events: deque[ControllerEvent] = deque(maxlen=200)
        self.last_switch_s: float | None = None
        self._last_counts: dict[str, int] | None = None
        self._last_observed_s: float | None = None

    def note_switch(self) -> None:
        """A switch happened outside the loop (``oserve deploy``): the minimum interval counts from now."""
        self.last_switch_s = self.clock()

    def _event(self, kind: str, **detail: Any) -> ControllerEvent:
        event = ControllerEvent(self.clock(), kind, detail)
        self.events.append(event)
        log.info("controller %s %s", kind, detail)
        return event

    def observe_window(self) -> np.ndarray | None:
        """Per-type rates (req/s) since the last observation, from the gateway's cumulative counts (None on the
        first call, which only starts the window)."""
        now = self.clock()
        counts = {t: int(v) for t, v in self.observe().items()}
        last, since = self._last_counts, self._last_observed_s
        self._last_counts, self._last_observed_s = counts, now
        if last is None or since is None:
            return None
        if now <= since:
            return np.zeros(len(self.types))
        elapsed = now - since
        return np.array([max(0, counts.get(t, 0) - last.get(t, 0)) / elapsed for t in self.types])

    async def step(self) -> ControllerEvent:
        """One window: observe, and with enough history forecast, plan, decide and maybe apply."""
        rates = self.observe_window()
        if rates is not None:
            self.history.append(rates)
        if len(self.history) < self.config.min_history_windows:
            return self._event("warming", windows=len(self.history))
        ahead = self.forecaster.forecast(np.array(self.history), self.config.horizon_windows).max(axis=0)
        forecast = {t: float(r) for t, r in zip(self.types, ahead, strict=True)}
        if not ahead.sum() > 0:
            return self._event("idle", forecast_rps=forecast)
        demands = [
            TypeDemand(t, float(r), *self.type_lengths[t]) for t, r in zip(self.types, ahead, strict=True)
        ]
        try:
            result = await asyncio.to_thread(
                plan,
                self.model,
                self.cluster,
                demands,
                self.slo,
                grid=self.grid,
                method=self.config.plan_method,
                tps=self.config.tps,
                pps=self.config.pps,
            )
        except OServeError as exc:
            return self._event("error", stage="plan", error=str(exc), forecast_rps=forecast)
        current = self.orchestrator.current()
        x = DecisionInput(
            self.clock(), self.last_switch_s, deployment_alpha(current, result), result.alpha, forecast
        )
        decision = self.decide(x)
        detail = {
            "forecast_rps": forecast,
            "current_alpha": round(x.current_alpha, 4),
            "planned_alpha": round(x.planned_alpha, 4),
            "planned": result.deployment.describe(),
            "reason": decision.reason,
        }
        if not decision.switch:
            return self._event("hold", **detail)
        try:
            report = await self.orchestrator.apply(result.deployment)
        except OServeError as exc:
            return self._event("error", stage="apply", error=str(exc), **detail)
        self.last_switch_s = self.clock()
        return self._event(
            "switch", converge_s=round(report.converge_s, 3), now=report.deployment.describe(), **detail
        )

    async def check_health(self) -> list[ControllerEvent]:
        """Restart every routed replica whose engine has died (capacity back without a re-plan)."""
        out = []
        for name in await self.orchestrator.dead():
            try:
                seconds = await self.orchestrator.restore(name)
            except OServeError as exc:
                out.append(self._event("error", stage="restore", replica=name, error=str(exc)))
                continue
            out.append(self._event("restore", replica=name, seconds=round(seconds, 3)))
        return out

    async def run(self, *, adapt: bool = True) -> None:
        """Until cancelled: a step every ``window_s`` (when ``adapt``), a health check every ``health_interval_s``."""
        self.observe_window()  # the first window starts now
        tasks = [asyncio.create_task(self._health_loop())]
        if adapt:
            tasks.append(asyncio.create_task(self._adapt_loop()))
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _adapt_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.window_s)
            try:
                await self.step()
            except Exception as exc:  # the loop outlives one bad window; the event says what failed
                self._event("error", stage="step", error=repr(exc))

    async def _health_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.health_interval_s)
            try:
                await self.check_health()
            except Exception as exc:
                self._event("error", stage="health", error=repr(exc))
