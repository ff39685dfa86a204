"""Deployment switches inside the event loop: the mechanics behind ``policy.Switch``.

A switch keeps the replicas the new deployment keeps unchanged; the others stop (``drain``: their queues are
re-routed at once, running requests finish there, and any left at the drain deadline are evicted; ``requeue``:
running requests are evicted at the end of their current step) and release their GPUs once empty. A new replica
waits for the GPUs it shares with stopped ones, then loads for its start delay before the router may use it.
``Switching`` holds these steps for the simulator's loop (``cluster._Sim``), which owns the replicas, engines and
events they act on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from oserve.spec.deployment import Replica

if TYPE_CHECKING:  # pragma: no cover
    from oserve.sim.policy import Switch

__all__ = [
    "ARRIVAL",
    "DEADLINE",
    "DECIDE",
    "MIGRATE",
    "READY",
    "REBALANCE",
    "STEP",
    "ReplicaState",
    "Switching",
]

# event kinds of the loop; from DECIDE on they are control events (the engines' runs stop at them);
# REBALANCE and MIGRATE drive request migration (``sim.migration``)
ARRIVAL, STEP, DECIDE, READY, DEADLINE, REBALANCE, MIGRATE = 0, 1, 2, 3, 4, 5, 6


@dataclass(slots=True)
class ReplicaState:
    """A replica over its life in the run: the engines it owns and when its GPUs were held and serving."""

    name: str
    spec: Replica
    engines: list[int]
    alloc_s: float
    ready_s: float = math.inf
    stop_s: float = math.nan  # when a switch stopped it (drain or requeue began)
    release_s: float = math.nan
    stopping: str = ""  # "", "drain" or "requeue"
    evict: bool = False  # stop running requests at the next step boundary
    waits_for: set[int] = field(default_factory=set)  # old replicas whose GPUs it needs
    delay_s: float = 0.0


class Switching:
    """The switch steps of the simulator's loop (a base of ``cluster._Sim``, whose state they use)."""

    # -- switches -------------------------------------------------------------------------------------------
    def apply_switch(self, sw: Switch) -> None:
        """Start ``sw`` now: keep the replicas it keeps, stop the others, create the new ones (waiting for GPUs)."""
        new, sched, now = sw.deployment, sw.schedule, self.now
        old = {self.replicas[r].spec.name: r for r in self.active}
        kept: dict[str, int] = {}
        for spec in new.replicas:
            r = old.get(spec.name)
            if r is not None and self.replicas[r].spec == spec and spec.name not in sched.stop:
                kept[spec.name] = r
        stopped = [r for r in self.active if r not in kept.values()]
        if not stopped and len(kept) == len(new.replicas):
            # the same replicas with new routing weights: re-route from now on, nothing stops or starts
            self.deployment = new
            self._set_router()
            self.reroutes += 1
            return
        record = {
            "time_s": now,
            "kept": sorted(kept),
            "stopped": [self.replicas[r].name for r in stopped],
            "started": [],
            "rerouted": 0,
        }
        self.deployment = new
        self.active = []
        for spec in new.replicas:
            if spec.name in kept:
                self.active.append(kept[spec.name])
                continue
            r = self._new_replica(spec, now, ready=False)
            st = self.replicas[r]
            st.delay_s = sched.delay_of(spec.name)
            gpus = set(spec.gpu_ids)
            st.waits_for = {o for o in stopped if gpus & set(self.replicas[o].spec.gpu_ids)}
            self.active.append(r)
            record["started"].append(st.name)
        for r in stopped:
            self.replicas[r].stopping = sched.mode_of(self.replicas[r].spec.name)
            self.replicas[r].stop_s = now
        self._set_router()
        moved: list[int] = []
        for r in stopped:
            st = self.replicas[r]
            for e in st.engines:
                moved += self.engines[e].take_waiting()
            if st.stopping == "requeue":
                st.evict = True
            elif sched.drain_s != math.inf:
                self.push(now + sched.drain_s, DEADLINE, r)
        record["rerouted"] = len(moved)
        self.switches.append(record)
        for r in stopped:
            self.settle(r)
        for r in self.active:
            self.maybe_start(r)
        self.reroute(moved)

    def settle(self, r: int) -> None:
        """A stopping replica: evict at a step boundary if asked; release its GPUs once empty."""
        st = self.replicas[r]
        if not st.stopping or not math.isnan(st.release_s):
            return
        if any(self.in_flight[e] for e in st.engines):
            return
        if st.evict:
            moved = []
            for e in st.engines:
                moved += self.engines[e].take_all()
            self.switches[-1]["rerouted"] += len(moved)
            self.reroute(moved)
        if all(self.engines[e].idle for e in st.engines):
            st.release_s = self.now
            for other in self.active:
                self.replicas[other].waits_for.discard(r)
                self.maybe_start(other)

    def maybe_start(self, r: int) -> None:
        """A new replica whose GPUs are all free starts loading; in service ``delay_s`` later."""
        st = self.replicas[r]
        if st.ready_s == math.inf and not st.waits_for and not st.stopping:
            st.ready_s = self.now + st.delay_s
            st.alloc_s = self.now
            self.push(st.ready_s, READY, r)
