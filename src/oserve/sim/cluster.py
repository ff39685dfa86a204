"""``simulate``: a trace through a deployment's replicas, a router and a switch policy, in virtual time.

One ``heapq`` of ``(time, seq, kind, index)`` events, ``seq`` from a per-run counter so ties resolve the same way
every run: arrivals (one pending at a time), engine step completions, policy decisions and switch milestones
(drain deadlines, replicas coming into service). Engines advance runs of decode steps up to the next arrival or
control event, so the router's ``LoadView`` is never more than one step ahead of virtual time.

A pipeline-parallel replica (pp > 1) is modelled as vLLM v0's virtual engines: ``pp`` independent schedulers,
each with ``1/pp`` of the KV blocks, each stepping with the whole-pipeline latency ``iteration_time``, so ``pp``
batches are in flight at once. Stage contention between unequal micro-batches is ignored.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from oserve.perf.calibration import Calibration
from oserve.perf.costmodel import CostModel
from oserve.routing import LoadView, make_router
from oserve.sim.engine import Engine, Requests
from oserve.sim.metrics import SimResult, build_result
from oserve.sim.policy import ClusterView, Policy, StaticPolicy, Switch
from oserve.sim.timing import StepTimer
from oserve.spec.cluster import Cluster
from oserve.spec.deployment import Deployment, Replica
from oserve.spec.model import ModelSpec
from oserve.spec.replica import ReplicaConfig
from oserve.trace.classify import TypeGrid
from oserve.trace.core import Trace

__all__ = ["simulate"]

ARRIVAL, STEP, DECIDE, READY, DEADLINE = 0, 1, 2, 3, 4


@dataclass(slots=True)
class _ReplicaState:
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


class _Sim:
    def __init__(
        self,
        trace: Trace,
        deployment: Deployment,
        model: ModelSpec,
        grid: TypeGrid,
        router: str,
        calibration: Calibration | None,
        policy: Policy,
        seed: int,
        chunked_prefill: bool,
        progress: Callable[[float], None] | None,
    ) -> None:
        self.trace, self.model, self.calibration = trace, model, calibration
        self.grid, self.router_name, self.seed = grid, router, seed
        self.policy, self.progress, self.chunked = policy, progress, chunked_prefill
        self.types = grid.classify(trace).tolist()
        self.req = Requests.of(trace.prompt_tokens, trace.output_tokens)
        n = len(trace)
        self.replica_of = [-1] * n  # index into self.replicas
        self.rerouted = [0] * n
        self.dropped = np.zeros(n, bool)
        self.arrived_by_type = np.zeros(grid.num_types, np.int64)
        self.timers: dict[ReplicaConfig, StepTimer] = {}
        self.engines: list[Engine] = []
        self.engine_replica: list[int] = []
        self.in_flight: list[bool] = []
        self.replicas: list[_ReplicaState] = []
        self.heap: list[tuple[float, int, int, int]] = []
        self.control: list[float] = []  # times of pending control events (the engines' horizon)
        self._seq = 0
        self.pending: deque[int] = deque()  # requests no replica could take yet
        self.switches: list[dict] = []
        self.completed = 0
        self.now = 0.0
        self.deployment = deployment
        self.active: list[int] = [self._new_replica(r, 0.0, ready=True) for r in deployment.replicas]
        self._set_router()

    # -- plumbing -------------------------------------------------------------------------------------------
    def push(self, t: float, kind: int, index: int) -> None:
        self._seq += 1
        heapq.heappush(self.heap, (t, self._seq, kind, index))
        if kind >= DECIDE:
            heapq.heappush(self.control, t)

    def timer(self, config: ReplicaConfig) -> StepTimer:
        t = self.timers.get(config)
        if t is None:
            t = self.timers[config] = StepTimer(CostModel(self.model, config, self.calibration))
        return t

    def _new_replica(self, spec: Replica, alloc_s: float, *, ready: bool) -> int:
        c = spec.config
        timer = self.timer(c)
        blocks = timer.cost_model.kv_capacity_tokens // c.block_size // c.pp
        idx = len(self.replicas)
        engines = []
        for _ in range(c.pp):
            engines.append(len(self.engines))
            self.engines.append(
                Engine(
                    timer,
                    self.req,
                    kv_blocks=blocks,
                    block_size=c.block_size,
                    max_num_seqs=c.max_num_seqs,
                    max_num_batched_tokens=c.max_num_batched_tokens,
                    chunked_prefill=self.chunked,
                )
            )
            self.engine_replica.append(idx)
            self.in_flight.append(False)
        taken = {r.name for r in self.replicas}
        name = spec.name if spec.name not in taken else f"{spec.name}@{len(self.switches)}"
        self.replicas.append(_ReplicaState(name, spec, engines, alloc_s, alloc_s if ready else math.inf))
        return idx

    def _set_router(self) -> None:
        n = len(self.active)
        self.load = LoadView.empty(n)
        self.view_of = {r: i for i, r in enumerate(self.active)}
        for i, r in enumerate(self.active):
            self.load.in_service[i] = self.replicas[r].ready_s <= self.now and not self.replicas[r].stopping
            self._sync(r)
        weights = np.array(self.deployment.weight_matrix(self.grid.names), dtype=np.float64)
        self.router = make_router(self.router_name, weights, self.seed)

    def _sync(self, r: int) -> None:
        """Copy replica ``r``'s load into the router's view."""
        i = self.view_of.get(r)
        if i is None:
            return
        engines = [self.engines[e] for e in self.replicas[r].engines]
        if len(engines) == 1:
            e = engines[0]
            self.load.outstanding_tokens[i] = e.outstanding
            self.load.queued[i] = len(e.waiting)
            self.load.running[i] = e.n_live
        else:
            self.load.outstanding_tokens[i] = sum(e.outstanding for e in engines)
            self.load.queued[i] = sum(len(e.waiting) for e in engines)
            self.load.running[i] = sum(e.n_live for e in engines)

    def horizon(self) -> float:
        return min(self.next_arrival, self.control[0] if self.control else math.inf)

    def kick(self, e: int) -> None:
        if self.in_flight[e]:
            return
        end = self.engines[e].step(self.now, self.horizon())
        if end is not None:
            self.in_flight[e] = True
            self.push(end, STEP, e)
        self._sync(self.engine_replica[e])

    # -- requests -------------------------------------------------------------------------------------------
    def route(self, rid: int) -> None:
        i = self.router.route(self.types[rid], self.req.goal[rid], self.load)
        if i < 0:
            self.pending.append(rid)
            return
        r = self.active[i]
        engines = self.replicas[r].engines
        e = engines[0] if len(engines) == 1 else min(engines, key=lambda k: self.engines[k].outstanding)
        self.replica_of[rid] = r
        if not self.engines[e].fits(rid):
            self.dropped[rid] = True
            return
        self.engines[e].add(rid)
        self._sync(r)
        self.kick(e)

    def flush_pending(self) -> None:
        pending, self.pending = self.pending, deque()
        for rid in pending:
            self.route(rid)

    def reroute(self, rids: list[int]) -> None:
        for rid in rids:
            self.rerouted[rid] += 1
            self.route(rid)

    # -- switches -------------------------------------------------------------------------------------------
    def apply_switch(self, sw: Switch) -> None:
        new, sched, now = sw.deployment, sw.schedule, self.now
        old = {self.replicas[r].name: r for r in self.active}
        kept: dict[str, int] = {}
        for spec in new.replicas:
            r = old.get(spec.name)
            if r is not None and self.replicas[r].spec == spec and spec.name not in sched.stop:
                kept[spec.name] = r
        stopped = [r for r in self.active if r not in kept.values()]
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
            self.replicas[r].stopping = sched.mode_of(self.replicas[r].name)
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
            self._settle(r)
        for r in self.active:
            self._maybe_start(r)
        self.reroute(moved)

    def _settle(self, r: int) -> None:
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
                self._maybe_start(other)

    def _maybe_start(self, r: int) -> None:
        st = self.replicas[r]
        if st.ready_s == math.inf and not st.waits_for and not st.stopping:
            st.ready_s = self.now + st.delay_s
            st.alloc_s = self.now
            self.push(st.ready_s, READY, r)

    # -- the loop -------------------------------------------------------------------------------------------
    def run(self) -> None:
        arrival = self.trace.arrival_s.tolist()
        n = len(arrival)
        self.next_arrival = float(arrival[0]) if n else math.inf
        if n:
            self.push(self.next_arrival, ARRIVAL, 0)
        t = self.policy.next_decision(-math.inf)
        if t is not None:
            self.push(float(t), DECIDE, 0)
        tick = max(1, n // 100)
        heap, engines = self.heap, self.engines
        while heap:
            now, _, kind, i = heapq.heappop(heap)
            self.now = now
            if kind == STEP:
                self.in_flight[i] = False
                eng = engines[i]
                if eng.finished:
                    self.completed += len(eng.finished)
                    eng.finished.clear()
                r = self.engine_replica[i]
                if self.replicas[r].stopping:
                    self._settle(r)
                self.kick(i)
                continue
            if kind == ARRIVAL:
                j = i
                while j < n and arrival[j] <= now:
                    self.arrived_by_type[self.types[j]] += 1
                    self.route(j)
                    j += 1
                self.next_arrival = float(arrival[j]) if j < n else math.inf
                if j < n:
                    self.push(self.next_arrival, ARRIVAL, j)
                if self.progress is not None and j // tick != i // tick:
                    self.progress(j / n)
                continue
            heapq.heappop(self.control)
            if kind == DECIDE:
                view = ClusterView(
                    now,
                    self.deployment,
                    self.load,
                    self.arrived_by_type.copy(),
                    tuple(self.grid.names),
                    self.completed,
                    any(self.replicas[r].ready_s > now for r in self.active),
                )
                sw = self.policy.decide(now, view)
                t = self.policy.next_decision(now)
                if t is not None:
                    self.push(float(t), DECIDE, 0)
                if sw is not None:
                    self.apply_switch(sw)
            elif kind == READY:
                k = self.view_of.get(i)
                if k is not None:
                    self.load.in_service[k] = True
                self.flush_pending()
            elif kind == DEADLINE:
                st = self.replicas[i]
                if math.isnan(st.release_s):
                    st.evict = True
                    self._settle(i)
            # a control event passed: engines idle-waiting on nothing are unaffected; busy ones see it next step

    def span_s(self) -> float:
        last = max((f for f in self.req.finish_s if f == f), default=0.0)
        return max(self.trace.duration_s, last, self.now)


def simulate(
    trace: Trace,
    deployment: Deployment,
    model: ModelSpec,
    cluster: Cluster | None = None,
    *,
    router: str = "weighted",
    grid: TypeGrid | None = None,
    calibration: Calibration | None = None,
    policy: Policy | None = None,
    seed: int = 0,
    duration_s: float | None = None,
    progress: Callable[[float], None] | None = None,
    chunked_prefill: bool = True,
    slo: dict[str, float] | None = None,
) -> SimResult:
    """Replay ``trace`` on ``deployment`` serving ``model``; per-request records and a summary.

    ``grid`` types the requests for the router (default: the deployment's ``type_edges`` when set, else
    ``TypeGrid.for_types(trace, 6)``); ``duration_s`` keeps only arrivals before it (all then run to the end);
    ``slo`` maps ``ttft_s`` / ``tpot_s`` / ``e2e_s`` to targets for goodput (default in ``metrics``).
    Deterministic for the same inputs and ``seed``.
    """
    if cluster is not None:
        deployment.validate(cluster)
    if duration_s is not None:
        trace = trace.take(trace.arrival_s < duration_s, duration_s=min(trace.duration_s, duration_s))
    if grid is None:
        edges = deployment.type_edges
        if edges and ("prompt_edges" in edges or "output_edges" in edges):
            grid = TypeGrid(tuple(edges.get("prompt_edges", ())), tuple(edges.get("output_edges", ())))
        else:
            grid = TypeGrid.for_types(trace, 6)
    sim = _Sim(
        trace,
        deployment,
        model,
        grid,
        router,
        calibration,
        policy or StaticPolicy(),
        seed,
        chunked_prefill,
        progress,
    )
    sim.run()
    return build_result(sim, slo)
