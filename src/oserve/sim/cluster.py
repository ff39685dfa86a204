"""``simulate``: a trace through a deployment's replicas, a router and a switch policy, in virtual time.

One ``heapq`` of ``(time, seq, kind, index)`` events, ``seq`` from a per-run counter so ties resolve the same way
every run: arrivals (one pending at a time), engine step completions, policy decisions and switch milestones
(drain deadlines, replicas coming into service). Engines advance runs of decode steps up to the next arrival or
control event, so the router's ``LoadView`` is never more than one step ahead of virtual time. An arrival routed
to one replica does not stop the others: their runs go on, in the same chunks the arrivals cut them into but
computed as the clock passes them, without events (``DecodeRun``); the loop moves every run's clock to the
current time before the router or a policy looks (``advance_all``), and the engine that gets a request is cut
at the chunk in flight (``Engine.cut``).

The router sees what the gateway sees (``oracle_lengths=False``, the default): each request is typed at its
arrival by an ``OnlineClassifier`` from its prompt, its ``max_tokens`` (the trace's ``max_tokens`` column, when it
has one) and the output estimate learned from the completions so far, the router is given prompt + estimated
output tokens, and the outstanding tokens it balances are the sums of those estimates over each replica's requests,
as the gateway counts them. ``oracle_lengths=True`` types and routes by the true lengths and the engines' true
outstanding work (what only a replay knows). The bookkeeping is ``sim.online.GatewayView``.

A pipeline-parallel replica (pp > 1) is modelled as vLLM runs it: ``pp`` virtual engines (micro-batches), each
with ``1/pp`` of the KV blocks, whose batches pass through the replica's stages in order, each stage one
micro-batch at a time, first in first out (``sim.pipeline``): up to ``pp`` batches are in flight, and a long
prefill on a stage delays the micro-batch behind it.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Callable

import numpy as np

from oserve.errors import ConfigError
from oserve.perf.calibration import Calibration
from oserve.perf.costmodel import CostModel
from oserve.routing import KV_BLOCKS, PREFIX, LoadView, Router, make_router, replica_speed
from oserve.sim.backlog import Backlog, snapshot, start_from, with_backlog
from oserve.sim.decode_run import Horizon
from oserve.sim.engine import Engine, Requests
from oserve.sim.metrics import SimResult, build_result
from oserve.sim.migration import Migrating
from oserve.sim.online import GatewayView
from oserve.sim.pipeline import Pipeline
from oserve.sim.policy import ClusterView, Policy, StaticPolicy
from oserve.sim.prefix_cache import MOONCAKE_BLOCK_TOKENS, PrefixCache
from oserve.sim.switching import (
    ARRIVAL,
    DEADLINE,
    DECIDE,
    MIGRATE,
    READY,
    REBALANCE,
    STEP,
    ReplicaState,
    Switching,
)
from oserve.sim.timing import StepTimer
from oserve.spec.cluster import Cluster
from oserve.spec.deployment import Deployment, Replica
from oserve.spec.model import ModelSpec
from oserve.spec.replica import ReplicaConfig
from oserve.spec.router import RouterSpec
from oserve.trace.classify import LiveClassifier, TypeGrid
from oserve.trace.core import Trace

__all__ = ["simulate"]


class _Sim(Switching, Migrating, GatewayView):
    #: False runs the reference loop: every decode run ends at the next event (tests compare the two)
    chain_runs = True

    def __init__(
        self,
        trace: Trace,
        deployment: Deployment,
        model: ModelSpec,
        cluster: Cluster | None,
        grid: TypeGrid,
        router: str | RouterSpec | Callable[..., Router],
        calibration: Calibration | None,
        policy: Policy,
        seed: int,
        chunked_prefill: bool,
        progress: Callable[[float], None] | None,
        oracle_lengths: bool = False,
        classifier: LiveClassifier | None = None,
        backlog: Backlog | None = None,
    ) -> None:
        self.backlog = backlog
        self.trace, self.model, self.calibration = trace, model, calibration
        self.grid, self.router_choice, self.seed = grid, router, seed  # a name, a RouterSpec or a factory
        self.policy, self.progress, self.chunked = policy, progress, chunked_prefill
        hashes = trace.extras.get("hash_ids")  # Mooncake's prefix block hashes, one per 512 tokens
        if hashes is not None:
            hashes = [() if row is None else row for row in hashes]
        self.req = Requests.of(trace.prompt_tokens, trace.output_tokens, hashes)
        n = len(trace)
        self.init_view(trace, grid, oracle_lengths, classifier)
        self.replica_of = [-1] * n  # index into self.replicas
        self.rerouted = [0] * n
        self.dropped = np.zeros(n, bool)
        self.rejected = np.zeros(n, bool)  # over the routed replica's max_model_len (vLLM's HTTP 400)
        self.max_len: list[int] = []  # max_model_len of each replica
        self.arrived_by_type = np.zeros(grid.num_types, np.int64)
        self.timers: dict[ReplicaConfig, StepTimer] = {}
        self.engines: list[Engine] = []
        self.engine_replica: list[int] = []
        self.replica_engines: list[list[Engine]] = []  # each replica's engines (``ReplicaState.engines``)
        self.in_flight: list[bool] = []
        self.step_seq: list[int] = []  # seq of each engine's live STEP event (a moved one leaves a stale one)
        self.step_at: list[float] = []  # and its time
        self.chained: dict[int, None] = {}  # engines whose decode run is not all applied (see DecodeRun)
        self.hz = Horizon(trace.arrival_s.tolist())
        self.replicas: list[ReplicaState] = []
        self.heap: list[tuple[float, int, int, int]] = []
        self.control: list[float] = []  # times of pending control events (the engines' horizon)
        self._seq = 0
        self.pending: deque[int] = deque()  # requests no replica could take yet
        self.switches: list[dict] = []
        self.reroutes = 0  # weights-only switches (same replicas, new routing)
        self.completed = 0
        self.now = 0.0
        self.deployment = deployment
        self.init_migration(cluster)
        self.active: list[int] = [self._new_replica(r, 0.0, ready=True) for r in deployment.replicas]
        self._set_router()

    # -- plumbing -------------------------------------------------------------------------------------------
    def push(self, t: float, kind: int, index: int) -> None:
        if kind >= DECIDE:
            self.advance_all()  # the chunks in flight were scheduled before this event existed
        self._seq += 1
        heapq.heappush(self.heap, (t, self._seq, kind, index))
        if kind == STEP:
            self.step_seq[index] = self._seq
            self.step_at[index] = t
        elif kind >= DECIDE:
            heapq.heappush(self.control, t)
            self.hz.control_s = self.control[0]
            self._cut_ahead()

    def timer(self, config: ReplicaConfig) -> StepTimer:
        t = self.timers.get(config)
        if t is None:
            t = self.timers[config] = StepTimer(CostModel(self.model, config, self.calibration))
        return t

    def _new_replica(self, spec: Replica, alloc_s: float, *, ready: bool) -> int:
        c = spec.config
        timer = self.timer(c)
        blocks = timer.cost_model.kv_capacity_tokens // c.block_size // c.pp
        pipeline = Pipeline(timer.cost_model) if c.pp > 1 else None
        idx = len(self.replicas)
        self.max_len.append(timer.cost_model.memory.max_model_len)
        self.expected.append(0.0)
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
                    pipeline=pipeline,
                    prefix_cache=PrefixCache(MOONCAKE_BLOCK_TOKENS, c.block_size)
                    if self.req.hashes is not None and c.enable_prefix_caching
                    else None,
                )
            )
            self.engine_replica.append(idx)
            self.in_flight.append(False)
            self.step_seq.append(0)
            self.step_at.append(math.nan)
        self.replica_engines.append([self.engines[e] for e in engines])
        taken = {r.name for r in self.replicas}
        name = spec.name if spec.name not in taken else f"{spec.name}@{len(self.switches)}"
        self.replicas.append(ReplicaState(name, spec, engines, alloc_s, alloc_s if ready else math.inf))
        return idx

    def _set_router(self) -> None:
        n = len(self.active)
        self.load = LoadView.empty(n, [replica_speed(self.replicas[r].spec.config) for r in self.active])
        self.view_of = {r: i for i, r in enumerate(self.active)}
        weights = np.array(self.deployment.weight_matrix(self.grid.names), dtype=np.float64)
        spec = self.router_choice
        if isinstance(spec, RouterSpec):
            self.router = make_router(spec.type, weights, self.seed, spec.parameters)
        else:
            self.router = make_router(spec, weights, self.seed)
        self.kv_view = KV_BLOCKS in self.router.signals
        self.prefix_view = PREFIX in self.router.signals and self.req.hashes is not None
        if self.prefix_view:  # its index: a KV cache in hash blocks
            kv = max(
                self.timer(self.replicas[r].spec.config).cost_model.kv_capacity_tokens for r in self.active
            )
            self.router.size_index(kv // MOONCAKE_BLOCK_TOKENS)
        for i, r in enumerate(self.active):
            self.load.in_service[i] = self.replicas[r].ready_s <= self.now and not self.replicas[r].stopping
            self._sync(r)

    def _sync(self, r: int) -> None:
        """Copy replica ``r``'s load into the router's view."""
        engines = self.replica_engines[r]
        oracle = self.oracle
        if not oracle:
            for e in engines:
                if e.finished:
                    self.collect(e)
        i = self.view_of.get(r)
        if i is None:
            return
        if len(engines) == 1:
            e = engines[0]
            load = self.load
            load.outstanding_tokens[i] = e.outstanding if oracle else self.expected[r]
            load.queued[i] = len(e.waiting)
            load.running[i] = e.n_live
        else:
            self.load.outstanding_tokens[i] = (
                sum(e.outstanding for e in engines) if self.oracle else self.expected[r]
            )
            self.load.queued[i] = sum(len(e.waiting) for e in engines)
            self.load.running[i] = sum(e.n_live for e in engines)
        if self.kv_view:
            self.sync_kv(i, engines)

    def kick(self, e: int) -> None:
        if self.in_flight[e]:
            return
        eng = self.engines[e]
        # a replica evicting at its next step boundary checks its engines at every step end, as before
        later = self.hz if self.chain_runs and not self.replicas[self.engine_replica[e]].evict else None
        end = eng.step(self.now, self.hz.now_s, later)
        if end is not None:
            self.in_flight[e] = True
            self.push(end, STEP, e)
            if eng.run is not None and not eng.run.applied:
                self.chained[e] = None
            if eng.last_prefill:
                self._behind_prefill(e)
        self._sync(self.engine_replica[e])

    def _behind_prefill(self, e: int) -> None:
        """Engine ``e`` of a PP replica booked a prefill: its siblings' decode runs end at their step in flight,
        so their next steps queue behind it on the stages (``sim.pipeline``)."""
        for k in self.replicas[self.engine_replica[e]].engines:
            run = self.engines[k].run
            if k != e and run is not None and not run.applied:
                self.engines[k].advance(self.now)
                if not run.applied:
                    self._cut(k)
                elif self.step_at[k] != run.ends[-1]:  # the clock reached its last chunk: it ends there
                    self.push(run.ends[-1], STEP, k)

    def advance_all(self) -> None:
        """Move every decode run's clock to now (what the router and policies see); a run whose end became
        known gets its step event there."""
        if not self.chained:
            return
        now, keep = self.now, {}
        for e in self.chained:
            eng = self.engines[e]
            run = eng.run
            if run is None:
                continue
            if eng.advance(now):
                self._sync(self.engine_replica[e])
            if run.final and self.step_at[e] != run.ends[-1]:
                self.push(run.ends[-1], STEP, e)
            if not run.applied:
                keep[e] = None
        self.chained = keep

    def _cut_ahead(self) -> None:
        """Runs computed past the clock did not know the control event just pushed: end them at the chunk in
        flight (the loop starts the next from there, with the new horizon)."""
        for e in self.chained:
            run = self.engines[e].run
            if run is not None and run.ptr < len(run.ends) - 1:
                self._cut(e)

    def _cut(self, e: int) -> None:
        end = self.engines[e].cut()
        if end is not None and self.step_at[e] != end:
            self.push(end, STEP, e)

    # -- requests -------------------------------------------------------------------------------------------
    def route(self, rid: int, arriving: bool = False) -> None:
        self.advance_all()
        if not self.oracle:
            self.settle_finished()
            if arriving:
                self.arrived_by_type[self.classify_arrival(rid)] += 1
        if self.prefix_view:  # a prefix-aware router is given the request's block hashes
            i = self.router.route(self.types[rid], self.seen[rid], self.load, prefix=self.req.hashes[rid])
        else:
            i = self.router.route(self.types[rid], self.seen[rid], self.load)
        if i < 0:
            self.pending.append(rid)
            return
        r = self.active[i]
        self.replica_of[rid] = r
        if self.req.goal[rid] > self.max_len[r]:  # prompt + max_tokens over the context: vLLM rejects it
            self.rejected[rid] = True
            return
        engines = self.replicas[r].engines
        if len(engines) == 1:
            e = engines[0]
        else:  # the virtual engine with the least work left; of equals, one whose batch is not in the pipeline
            e = min(engines, key=lambda k: (self.engines[k].outstanding, self.in_flight[k]))
        eng = self.engines[e]
        if not eng.fits(rid):
            self.dropped[rid] = True
            return
        if eng.run is not None:
            self._cut(e)  # the run ends at the chunk in flight, where the request can join
        eng.add(rid)
        if not self.oracle:
            self.credit_to(rid, r)
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

    # -- the loop -------------------------------------------------------------------------------------------
    def run(self) -> None:
        hz = self.hz
        arrival = hz.arrival_s
        n = len(arrival)
        first = start_from(self, self.backlog) if self.backlog is not None else 0
        hz.next_arrival_s = float(arrival[first]) if first < n else math.inf
        if first < n:
            self.push(hz.next_arrival_s, ARRIVAL, first)
        t = self.policy.next_decision(-math.inf)
        if t is not None:
            self.push(float(t), DECIDE, 0)
        self.schedule_rebalance()
        tick = max(1, n // 100)
        heap, engines, step_seq = self.heap, self.engines, self.step_seq
        while heap:
            now, seq, kind, i = heapq.heappop(heap)
            if kind == STEP and seq != step_seq[i]:
                continue  # the run was cut: a newer event ends it
            self.now = now
            if kind == STEP:
                eng = engines[i]
                run = eng.run
                if run is not None and not run.final:  # the lower bound of its end: compute the rest
                    if eng.advance(now):
                        self._sync(self.engine_replica[i])
                    end = eng.complete()
                    if end < now:  # the bound rests on step time being convex in the context
                        raise RuntimeError(f"a decode run ended at {end!r}, before its lower bound {now!r}")
                    self.push(end, STEP, i)
                    continue
                self.in_flight[i] = False
                eng.advance(now)
                if eng.finished:
                    self.collect(eng)
                if self.leaving:
                    self.at_boundary(i)
                r = self.engine_replica[i]
                if self.replicas[r].stopping:
                    self.settle(r)
                self.kick(i)
                continue
            if kind == ARRIVAL:
                j = i
                while j < n and arrival[j] <= now:
                    if self.oracle:
                        self.arrived_by_type[self.types[j]] += 1
                        self.route(j)
                    else:
                        self.route(j, arriving=True)
                    j += 1
                hz.next_arrival_s = float(arrival[j]) if j < n else math.inf
                if j < n:
                    self.push(hz.next_arrival_s, ARRIVAL, j)
                if self.progress is not None and j // tick != i // tick:
                    self.progress(j / n)
                continue
            self.advance_all()  # before the event leaves the runs' horizon
            heapq.heappop(self.control)
            hz.control_s = self.control[0] if self.control else math.inf
            if kind == DECIDE:
                if not self.oracle:
                    self.settle_finished()
                view = ClusterView(
                    now,
                    self.deployment,
                    self.load,
                    self.arrived_by_type.copy(),
                    tuple(self.grid.names),
                    self.completed,
                    any(self.replicas[r].ready_s > now for r in self.active),
                    snapshot(self),
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
                    self.settle(i)
            elif kind == REBALANCE:
                self.rebalance()
            elif kind == MIGRATE:
                self.on_migrate(i)
            # a control event passed: engines idle-waiting on nothing are unaffected; busy ones see it next step

    def span_s(self) -> float:
        last = max((f for f in self.req.finish_s if f == f), default=0.0)
        return max(self.trace.duration_s, last, self.now)


def _disagg(
    trace, deployment, model, cluster, router, grid, calibration, policy, seed, chunked, slo
) -> SimResult:
    from oserve.sim.disagg import simulate_disagg

    if policy is not None and not isinstance(policy, StaticPolicy):
        raise ConfigError("a deployment with a prefill/decode pool is simulated under a static policy only")
    return simulate_disagg(
        trace,
        deployment,
        model,
        cluster,
        router=router,
        grid=grid,
        calibration=calibration,
        seed=seed,
        chunked_prefill=chunked,
        slo=slo,
    )


def simulate(
    trace: Trace,
    deployment: Deployment,
    model: ModelSpec,
    cluster: Cluster | None = None,
    *,
    router: str | RouterSpec | Callable[..., Router] = "weighted",
    grid: TypeGrid | None = None,
    calibration: Calibration | None = None,
    policy: Policy | None = None,
    seed: int = 0,
    duration_s: float | None = None,
    progress: Callable[[float], None] | None = None,
    chunked_prefill: bool = True,
    slo: dict[str, float] | None = None,
    oracle_lengths: bool = False,
    classifier: LiveClassifier | None = None,
    backlog: Backlog | None = None,
) -> SimResult:
    """Replay ``trace`` on ``deployment`` serving ``model``; per-request records and a summary.

    ``grid`` types the requests for the router (default: the deployment's ``type_edges`` when set, else
    ``TypeGrid.for_types(trace, 6)``); ``duration_s`` keeps only arrivals before it (all then run to the end);
    ``slo`` maps ``ttft_s`` / ``tpot_s`` / ``e2e_s`` to targets for goodput (default in ``metrics``).
    ``router`` is a registered name, a ``RouterSpec`` (name and parameters, e.g. a deployment file's) or a factory
    ``(weights, seed) -> Router``; a ``routing.Rebalancer``
    (``llumnix``) also migrates requests between replicas (``sim.migration``).
    By default requests are typed and routed as the gateway does (``OnlineClassifier``, seeded by ``classifier``,
    else 256 tokens per prompt bin until completions teach it); ``oracle_lengths`` uses the true output lengths.
    ``backlog`` starts the run at ``backlog.now_s`` with its requests back on their replicas (``sim.backlog``):
    ``trace`` is then the traffic after it (arrivals relative to ``now_s``), and the records hold the backlog's
    requests first. Deterministic for the same inputs and ``seed``.
    """
    if cluster is not None:
        deployment.validate(cluster)
    if duration_s is not None:
        trace = trace.take(trace.arrival_s < duration_s, duration_s=min(trace.duration_s, duration_s))
    if deployment.disaggregated:  # a prefill/decode pool: sim.disagg (static, typed by the true lengths)
        if backlog is not None:
            raise ConfigError("a replay from live work (backlog) is not modelled for prefill/decode pools")
        return _disagg(
            trace, deployment, model, cluster, router, grid, calibration, policy, seed, chunked_prefill, slo
        )
    if backlog is not None:
        trace = with_backlog(backlog, trace)
    if grid is None:
        edges = deployment.type_edges
        grid = TypeGrid.from_edges(edges) if edges is not None else TypeGrid.for_types(trace, 6)
    sim = _Sim(
        trace,
        deployment,
        model,
        cluster,
        grid,
        router,
        calibration,
        policy or StaticPolicy(),
        seed,
        chunked_prefill,
        progress,
        oracle_lengths,
        classifier,
        backlog,
    )
    sim.run()
    return build_result(sim, slo)
