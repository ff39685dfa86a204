"""Change while running: policies decide deployment switches at decision points of the simulation.

A ``Policy`` names its next decision time after ``now`` and, at that time, may return a ``Switch``: the new
``Deployment`` and a ``SwitchSchedule`` saying which old replicas stop and how (``drain``: stop admitting, the
queued requests are re-routed, the running ones finish there, and any left at ``drain_s`` are re-routed;
``requeue``: the running ones are stopped at the end of their current step and re-routed, recomputing their
prompt and generated tokens elsewhere), and when each new replica comes into service (``start_delay_s`` after
the GPUs it needs are released). An old replica identical in the new deployment (same name, config and GPUs)
keeps serving untouched unless the schedule names it in ``stop``. The planner and the adaptive controller add
policies here without touching the engine.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np

from oserve.errors import ConfigError
from oserve.routing import LoadView
from oserve.sim.backlog import Backlog
from oserve.spec.deployment import Deployment

__all__ = [
    "ClusterView",
    "Policy",
    "ScheduledPolicy",
    "SequencePolicy",
    "StaticPolicy",
    "StopMode",
    "Switch",
    "SwitchSchedule",
]

StopMode = Literal["drain", "requeue"]


@dataclass(frozen=True, slots=True)
class SwitchSchedule:
    """How a switch unfolds. Times in seconds after the decision.

    ``mode`` applies to every stopped replica unless ``modes`` names it; ``start_delay_s`` is the load time of a
    new replica once its GPUs are free (a number for all, or per replica name; missing names use
    ``default_start_delay_s``); ``stop`` forces old replicas to stop even when the new deployment keeps them.
    """

    drain_s: float = math.inf
    mode: StopMode = "drain"
    modes: Mapping[str, StopMode] = field(default_factory=dict)
    start_delay_s: float | Mapping[str, float] = 0.0
    default_start_delay_s: float = 0.0
    stop: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        for name, m in {"*": self.mode, **self.modes}.items():
            if m not in ("drain", "requeue"):
                raise ConfigError(f"switch mode for {name!r} must be 'drain' or 'requeue', got {m!r}")
        if self.drain_s < 0:
            raise ConfigError(f"drain_s must be >= 0, got {self.drain_s}")

    def mode_of(self, name: str) -> StopMode:
        return self.modes.get(name, self.mode)

    def delay_of(self, name: str) -> float:
        if isinstance(self.start_delay_s, Mapping):
            return float(self.start_delay_s.get(name, self.default_start_delay_s))
        return float(self.start_delay_s)


@dataclass(frozen=True, slots=True)
class Switch:
    deployment: Deployment
    schedule: SwitchSchedule = field(default_factory=SwitchSchedule)


@dataclass(frozen=True, slots=True)
class ClusterView:
    """What a policy sees at a decision point (read-only by convention; arrays are live copies)."""

    now_s: float
    deployment: Deployment
    load: LoadView
    arrivals_by_type: np.ndarray  # requests arrived so far, per type of the run's grid
    type_names: tuple[str, ...]
    completed: int
    switching: bool  # a previous switch still has replicas draining or loading
    backlog: Backlog | None = (
        None  # the requests queued and running now, per replica (what a replay starts from)
    )


class Policy(Protocol):
    """Decides deployment switches while the simulation runs."""

    def next_decision(self, now: float) -> float | None:
        """The next decision time strictly after ``now`` (None: no more decisions)."""
        ...

    def decide(self, now: float, view: ClusterView) -> Switch | None: ...


class StaticPolicy:
    """Never switches."""

    def next_decision(self, now: float) -> float | None:
        return None

    def decide(self, now: float, view: ClusterView) -> Switch | None:
        return None


class ScheduledPolicy:
    """Switches to given deployments at given times: ``[(time_s, Deployment, SwitchSchedule | None), ...]``."""

    def __init__(self, plan: Sequence[tuple[float, Deployment, SwitchSchedule | None]]) -> None:
        self.plan = sorted(plan, key=lambda p: p[0])
        self._times = [float(p[0]) for p in self.plan]

    def next_decision(self, now: float) -> float | None:
        i = bisect.bisect_right(self._times, now)
        return self._times[i] if i < len(self._times) else None

    def decide(self, now: float, view: ClusterView) -> Switch | None:
        i = bisect.bisect_left(self._times, now)
        if i < len(self._times) and self._times[i] == now:
            _, deployment, schedule = self.plan[i]
            return Switch(deployment, schedule or SwitchSchedule())
        return None

    def decision_times(self) -> list[float]:
        return list(self._times)


class SequencePolicy:
    """Applies ``switches`` one after the other from ``start_s``: each once the previous one has finished (no
    replica draining or loading), looking every ``poll_s`` — a staged switch's waves."""

    def __init__(self, switches: Sequence[Switch], start_s: float = 0.0, poll_s: float = 5.0) -> None:
        self.todo = list(switches)
        self.start_s, self.poll_s = float(start_s), float(poll_s)

    def next_decision(self, now: float) -> float | None:
        if not self.todo:
            return None
        return self.start_s if now < self.start_s else now + self.poll_s

    def decide(self, now: float, view: ClusterView) -> Switch | None:
        if view.switching or not self.todo or now < self.start_s:
            return None
        return self.todo.pop(0)
