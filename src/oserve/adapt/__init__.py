"""Adaptation over time: forecast the load, decide when to re-plan, and switch deployments cheaply.

The switch planner (``plan_switch``) turns a running deployment into a target one: it keeps identical replicas,
reuses weights already resident, moves the rest over the fastest links without oversubscribing them, and prices
the engine restarts; ``naive_reload_plan`` is the reload-from-disk baseline. docs/switch.md.
"""

from oserve.adapt.switch import CHUNK_BYTES, COLD_RESTART_S, WAKE_RESTART_S, naive_reload_plan, plan_switch
from oserve.adapt.switch_plan import StartedReplica, SwitchPlan
from oserve.adapt.transfers import Transfer

__all__ = [
    "CHUNK_BYTES",
    "COLD_RESTART_S",
    "WAKE_RESTART_S",
    "StartedReplica",
    "SwitchPlan",
    "Transfer",
    "naive_reload_plan",
    "plan_switch",
]
