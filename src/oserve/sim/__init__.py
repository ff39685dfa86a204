"""Discrete-event simulator: per-replica engines as vLLM schedules them, a cluster router and switch policies,
in virtual time with iteration times from the cost model.

    simulate(trace, deployment, model, cluster, router="weighted", policy=ScheduledPolicy([...])) -> SimResult
    SimResult.records (one row per request), .replicas, .summary, .write_records(path), .write_summary(path)
"""

from oserve.sim.cluster import simulate
from oserve.sim.engine import Engine, Requests
from oserve.sim.metrics import DEFAULT_SLO, SimResult, summarize, with_classes
from oserve.sim.policy import (
    ClusterView,
    Policy,
    ScheduledPolicy,
    StaticPolicy,
    StopMode,
    Switch,
    SwitchSchedule,
)
from oserve.sim.timing import StepTimer

__all__ = [
    "DEFAULT_SLO",
    "ClusterView",
    "Engine",
    "Policy",
    "Requests",
    "ScheduledPolicy",
    "SimResult",
    "StaticPolicy",
    "StepTimer",
    "StopMode",
    "Switch",
    "SwitchSchedule",
    "simulate",
    "summarize",
    "with_classes",
]
