"""The live controller: a thin adapter over the controller core (``oserve.adapt.core``), on the wall clock.

Every ``window_s`` it observes — the gateway's cumulative per-type counts, differenced into rates (req/s); the
recent requests with their lengths and the requests in flight per replica (the gateway's ``Ledger``) — and hands
``ControllerCore.step`` the same ``Observation`` the simulator's policy builds. The core forecasts, plans, decides
(switch cost, hysteresis, minimum interval), replays the switch in the simulator from the work in flight, and
returns one ``Decision``, which this adapter carries out through the orchestrator's ``apply`` (which never drops
an accepted request): a switch, or new routing weights for the running replicas. What is simulated is what runs.

Windows are on a fixed schedule (the ``k``-th decision at ``k * window_s`` after the origin, as the simulator's
policy decides at multiples of ``window_s``), whatever a decision took; a window a decision overran is skipped.
``clock`` may run faster than the wall (``time_scale``: emulated engines at a speed-up, ``controller.clock:
engine``), the ledger's with it: the loop then sleeps ``1 / time_scale`` of each window in wall time.

A manual switch (``oserve deploy``) pins the deployment (``pin``) until ``release`` (``oserve deploy
--release``). Between windows, replicas whose engine died are restarted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from oserve.adapt import make_forecaster
from oserve.adapt.core import ROUTER, ControllerCore, Observation
from oserve.adapt.decide import Decision, DecisionConfig
from oserve.adapt.sources import ForecastSource
from oserve.adapt.switch import COLD_RESTART_S
from oserve.errors import ConfigError, OServeError
from oserve.planner import Plan, Slo, replica_counts
from oserve.planner.flow import max_load_scale
from oserve.runtime.gateway.ledger import Ledger
from oserve.runtime.orchestrator import Orchestrator
from oserve.sim.backlog import Backlog
from oserve.spec import Cluster, Deployment, ModelSpec, RequestGrid
from oserve.spec.router import RouterSpec
from oserve.trace import Trace, TypeGrid

__all__ = [
    "Controller",
    "ControllerConfig",
    "ControllerEvent",
    "deployment_alpha",
    "type_lengths_from_grid",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ControllerConfig:
    """Timing of the live loop and the core's decision settings (``DecisionConfig``) in windows."""

    window_s: float = 10.0  # observation window and forecast bin, seconds
    history_windows: int = 30  # windows the forecaster sees
    min_history_windows: int = 3  # windows observed before the first decision
    horizon_windows: int = 6  # windows ahead the plan provisions for (their peak)
    forecaster: str = "ewma"
    min_gain: float = 0.10  # the core's hysteresis: the plan must sustain this much more load
    min_interval_s: float = 60.0
    health_interval_s: float = 1.0
    plan_method: str = "auto"
    tps: tuple[int, ...] = (1, 2, 4, 8)
    pps: tuple[int, ...] = (1,)
    restart_s: float = COLD_RESTART_S  # engine start beyond weights, as the switch planner prices it
    verify_s: float = 60.0  # replay a switch on this much recent traffic from the work in flight (0: never)
    verify_margin: float = (
        0.01  # the share of replayed requests the switch must win by (and may lose by, as came)
    )

    def __post_init__(self) -> None:
        if not self.window_s > 0 or not self.health_interval_s > 0:
            raise ConfigError("window_s and health_interval_s must be > 0")
        if not 1 <= self.min_history_windows <= self.history_windows or self.horizon_windows < 1:
            raise ConfigError("need 1 <= min_history_windows <= history_windows and horizon_windows >= 1")

    def decision_config(self) -> DecisionConfig:
        """The core's settings: bins of one window, history and horizon in windows."""
        w = self.window_s
        return DecisionConfig(
            window_s=w,
            bin_s=w,
            history_s=self.history_windows * w,
            horizon_s=self.horizon_windows * w,
            min_interval_s=self.min_interval_s,
            hysteresis=self.min_gain,
            restart_s=self.restart_s,
            verify_s=self.verify_s,
            verify_margin=self.verify_margin,
        )


@dataclass(frozen=True, slots=True)
class ControllerEvent:
    """One thing the controller did, for /admin/status and logs."""

    time_s: float
    kind: str  # warming, hold, reroute, switch, pinned, released, restore, error
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


def _finite(value: Any) -> Any:
    """NaN and infinities as None, all the way down: /admin/status is JSON (a hold before planning has no
    alphas; a replay branch that completed nothing has no percentiles)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


class Controller:
    """Closes the loop from the gateway's observed traffic to the orchestrator, through ``ControllerCore``."""

    def __init__(
        self,
        orchestrator: Orchestrator,
        observe: Callable[[], Mapping[str, int]],
        *,
        model: ModelSpec,
        cluster: Cluster,
        grid: TypeGrid,
        slo: Slo,
        ledger: Ledger | None = None,
        router: str | RouterSpec = ROUTER,
        config: ControllerConfig | None = None,
        clock: Callable[[], float] = time.monotonic,
        time_scale: float = 1.0,
    ) -> None:
        if not time_scale > 0:
            raise ConfigError(f"time_scale must be > 0, got {time_scale}")
        self.orchestrator = orchestrator
        self.time_scale = time_scale  # clock seconds per wall second
        self.observe = observe
        self.model, self.cluster, self.grid, self.slo = model, cluster, grid, slo
        self.config = config or ControllerConfig()
        self.types = grid.names
        self.ledger = ledger
        self.clock = clock
        self.origin = ledger.origin if ledger is not None else clock()
        c = self.config
        self.core = ControllerCore(
            model,
            cluster,
            slo,
            ForecastSource(make_forecaster(c.forecaster)),
            c.decision_config(),
            router=router,  # the replay routes as the gateway does: its RouterSpec, parameters and all
            plan_options={"method": c.plan_method, "tps": c.tps, "pps": c.pps},
        )
        self.history: deque[np.ndarray] = deque(maxlen=c.history_windows)
        self.events: deque[ControllerEvent] = deque(maxlen=200)
        self._last_counts: dict[str, int] | None = None
        self._last_observed_s: float | None = None

    def now(self) -> float:
        """Seconds since the controller's origin (the ledger's): the core's clock."""
        return max(0.0, self.clock() - self.origin)

    @property
    def last_switch_s(self) -> float | None:
        t = self.core.last_switch_s
        return None if t == -math.inf else t

    @property
    def pinned(self) -> str | None:
        return self.core.pinned

    def pin(self, reason: str) -> ControllerEvent:
        """A manual switch (``oserve deploy``): hold it until ``release``."""
        self.core.pin(reason, self.now())
        return self._event("pinned", reason=reason)

    def release(self) -> ControllerEvent:
        """Let the loop switch again (``oserve deploy --release``)."""
        was = self.core.pinned
        self.core.release()
        return self._event("released", was=was)

    def _event(self, kind: str, **detail: Any) -> ControllerEvent:
        event = ControllerEvent(self.now(), kind, detail)
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

    def observation(self, current: Deployment) -> Observation:
        """The core's observation now: the rate history, the ledger's recent requests and work in flight."""
        now = self.now()
        c = self.core.config
        if self.ledger is not None:
            recent = self.ledger.recent_trace(max(0.0, now - max(c.history_s, c.verify_s)), now)
            backlog = self.ledger.backlog(now)
        else:
            recent = Trace.from_arrays([], [], [], duration_s=now)
            backlog = Backlog.empty(now)
        if current.type_edges is None:
            current = replace(current, type_edges=RequestGrid.of(self.grid))
        switching = bool(getattr(self.orchestrator, "switching", False))
        history = np.array(self.history) if self.history else np.zeros((0, len(self.types)))
        return Observation(now, current, self.grid, history, recent, backlog, switching)

    def _detail(self, decision: Decision) -> dict[str, Any]:
        forecast = self.core.forecasts[-1][1] if self.core.forecasts else np.zeros(len(self.types))
        out = decision.to_dict()
        out.pop("target", None)
        out["decision"] = out.pop("kind")
        detail = {
            **out,
            "forecast_rps": {t: float(r) for t, r in zip(self.types, forecast, strict=True)},
            "planned": decision.target.describe() if decision.target is not None else None,
            "planned_alpha": round(decision.target_alpha, 4),
            "current_alpha": round(decision.current_alpha, 4),
        }
        return _finite(detail)

    async def step(self) -> ControllerEvent:
        """One window: observe, and with enough history let the core decide; carry out its decision."""
        since = self._last_observed_s
        rates = self.observe_window()
        if rates is not None:
            # one row per window_s, as the simulator bins its history: a span that overran (a switch applied in
            # the last step) is that many windows at its mean rate
            last = self._last_observed_s
            spans = (last - since) / self.config.window_s if since is not None and last is not None else 1.0
            self.history.extend([rates] * max(1, round(spans)))
        if len(self.history) < self.config.min_history_windows:
            return self._event("warming", windows=len(self.history))
        current = self.orchestrator.current()
        if current is None:
            return self._event("warming", windows=len(self.history), reason="no deployment yet")
        if current.disaggregated:  # the core's LP prices aggregated shapes only: it would misjudge the pool
            return self._event(
                "hold",
                reason="the running deployment has a prefill/decode pool; the controller plans aggregated ones",
            )
        try:
            decision = await asyncio.to_thread(self.core.step, self.observation(current))
        except OServeError as exc:
            return self._event("error", stage="decide", error=str(exc))
        detail = self._detail(decision)
        if self.core.pinned is not None:  # pinned while the core decided (``oserve deploy`` meanwhile): hold
            return self._event("hold", **{**detail, "reason": f"pinned: {self.core.pinned}"})
        act = decision.target if decision.switch else decision.reroute
        if act is None:
            return self._event("hold", **detail)
        try:
            report = await self.orchestrator.apply(act)
        except OServeError as exc:
            return self._event("error", stage="apply", error=str(exc), **detail)
        return self._event(
            decision.kind, converge_s=round(report.converge_s, 3), now=report.deployment.describe(), **detail
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
        window = self.config.window_s
        tick = math.floor(self.now() / window) + 1
        while True:
            await asyncio.sleep(max(0.0, tick * window - self.now()) / self.time_scale)
            try:
                await self.step()
            except Exception as exc:  # the loop outlives one bad window; the event says what failed
                self._event("error", stage="step", error=repr(exc))
            tick = max(tick + 1, math.floor(self.now() / window) + 1)  # a window overrun is skipped

    async def _health_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.health_interval_s)
            try:
                await self.check_health()
            except Exception as exc:
                self._event("error", stage="health", error=repr(exc))
