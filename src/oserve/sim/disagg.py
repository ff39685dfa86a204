"""Disaggregated prefill and decode in virtual time: a deployment with a prefill/decode pool (DistServe, Dynamo).

A request routed to the pool prefills on a ``prefill`` replica (an ``Engine`` whose requests end at their first
token: its first token comes from the prefill), then its KV cache crosses to a ``decode`` replica and decodes
there. The hand-off, in order:

1. the prefill ends; the request keeps its KV blocks on the prefill replica (pinned) until the copy is done;
2. a decode replica is chosen (the least outstanding tokens per unit of speed among those that can hold it) and
   the request joins that replica's reservation queue, first come first served: the decode replica reserves the
   blocks of the prompt's KV and a sequence slot *before* the transfer; with no room the transfer waits (head of
   line) until finishing requests free blocks;
3. the transfer goes on the link between the two replicas, FIFO per link: NVLink when both are in one node, else
   the inter-node network; ``time = latency + bytes / bandwidth`` (``KvLink``), bytes = prompt tokens x the KV
   bytes per token per GPU at the smaller TP of the two (each GPU of a TP group sends or receives its own heads);
4. at the end the prefill side unpins, and the decode engine adopts the request with its KV computed (at its next
   step boundary when a step is in flight), the reserved blocks becoming the request's.

Aggregated replicas in the same deployment run as ``sim.cluster`` runs them. The router (the registered name)
chooses among the aggregated and the prefill replicas with the deployment's weights, so each type goes to
aggregated replicas or the pool as the plan says. Requests are typed by their true lengths (a replay), pp is 1,
and the policy is static: switching a pool is not modelled. Records carry ``prefill_replica``,
``decode_replica``, ``transfer_s`` (the copy) and ``transfer_wait_s`` (waiting for room and for the link).
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from oserve.errors import SpecError
from oserve.perf.calibration import Calibration, builtin_calibration
from oserve.perf.costmodel import CostModel
from oserve.routing import LoadView, make_router, replica_speed
from oserve.sim.engine import Engine, Requests
from oserve.sim.metrics import SimResult, summarize
from oserve.sim.timing import StepTimer
from oserve.spec.cluster import Cluster
from oserve.spec.deployment import Deployment, Replica
from oserve.spec.model import ModelSpec
from oserve.spec.replica import ReplicaConfig
from oserve.trace.classify import TypeGrid
from oserve.trace.core import Trace

__all__ = ["KvLink", "kv_link", "kv_transfer_bytes", "simulate_disagg"]

_ARRIVAL, _STEP, _XFER = 0, 1, 2


@dataclass(frozen=True, slots=True)
class KvLink:
    """The path a KV cache takes from a prefill replica to a decode replica."""

    kind: Literal["nvlink", "network"]
    bandwidth_gb_per_s: float  # what the pair gets: one port per GPU of the smaller TP group
    latency_s: float

    def transfer_s(self, nbytes: float) -> float:
        return self.latency_s + nbytes / (self.bandwidth_gb_per_s * 1e9)


def kv_link(
    src: Replica, dst: Replica, cluster: Cluster | None, calibration: Calibration | None = None
) -> KvLink:
    """NVLink (``Node.intra_gb_per_s`` per GPU) when both replicas sit in one node, else the network (each GPU
    its share of the node's NICs, ``Node.network_gb_per_s / GPUs``, the smaller of the two nodes'); the pair gets
    ``min(tp)`` such ports. Latency: the calibration's point-to-point alpha. Without a cluster: one NVLink node."""
    calib = (calibration or builtin_calibration()).for_gpu(src.config.gpu)
    ports = min(src.config.tp, dst.config.tp)
    if cluster is None:
        return KvLink("nvlink", ports * src.config.gpu.nvlink_gb_per_s, calib.p2p_intra[0])
    src_nodes = {cluster.gpus[g].node for g in src.gpu_ids}
    dst_nodes = {cluster.gpus[g].node for g in dst.gpu_ids}
    if len(src_nodes | dst_nodes) == 1:
        node = cluster.nodes[src_nodes.pop()]
        return KvLink("nvlink", ports * node.intra_gb_per_s, calib.p2p_intra[0])
    share = min(
        cluster.nodes[n].network_gb_per_s / len(cluster.node_gpu_ids(n)) for n in src_nodes | dst_nodes
    )
    return KvLink("network", ports * share, calib.p2p_inter[0])


def kv_transfer_bytes(
    model: ModelSpec,
    src: ReplicaConfig,
    dst: ReplicaConfig,
    tokens: int,
    calibration: Calibration | None = None,
) -> int:
    """Bytes one port carries for ``tokens`` of KV: the per-GPU KV of the smaller TP group (GQA-aware)."""
    narrow = src if src.tp <= dst.tp else dst
    return tokens * CostModel(model, narrow, calibration).memory.kv_bytes_per_token


class _DisaggSim:
    def __init__(
        self,
        trace: Trace,
        deployment: Deployment,
        model: ModelSpec,
        cluster: Cluster | None,
        grid: TypeGrid,
        router: str,
        calibration: Calibration | None,
        seed: int,
        chunked_prefill: bool,
    ) -> None:
        self.trace, self.deployment, self.model, self.grid = trace, deployment, model, grid
        n = len(trace)
        self.req = Requests.of(trace.prompt_tokens, trace.output_tokens)  # aggregated and decode engines
        self.preq = Requests.of(trace.prompt_tokens, np.ones(n, np.int64))  # prefill engines: end at token 1
        self.types = grid.classify(trace).tolist()
        timers: dict[ReplicaConfig, StepTimer] = {}
        self.engines: list[Engine] = []
        self.max_len: list[int] = []
        for r in deployment.replicas:
            c = r.config
            if c.pp != 1:
                raise SpecError(f"replica {r.name}: a deployment with a prefill/decode pool runs pp 1 only")
            timer = timers.get(c) or timers.setdefault(c, StepTimer(CostModel(model, c, calibration)))
            self.max_len.append(timer.cost_model.memory.max_model_len)
            self.engines.append(
                Engine(
                    timer,
                    self.preq if c.role == "prefill" else self.req,
                    kv_blocks=timer.cost_model.kv_capacity_tokens // c.block_size,
                    block_size=c.block_size,
                    max_num_seqs=c.max_num_seqs,
                    max_num_batched_tokens=c.max_num_batched_tokens,
                    chunked_prefill=chunked_prefill,
                )
            )
        roles = [r.config.role for r in deployment.replicas]
        self.front = [i for i, role in enumerate(roles) if role != "decode"]  # what the router chooses among
        self.decoders = [i for i, role in enumerate(roles) if role == "decode"]
        self.front_index = {e: i for i, e in enumerate(self.front)}
        self.roles = roles
        speed = [replica_speed(deployment.replicas[i].config) for i in self.front]
        self.load = LoadView.empty(len(self.front), speed)
        self.dspeed = [replica_speed(deployment.replicas[i].config) for i in self.decoders]
        weights = np.array(deployment.weight_matrix(grid.names), dtype=np.float64)[:, self.front]
        weights[weights.sum(axis=1) <= 0] = 1.0  # a row naming only decode replicas: any front replica
        self.router = make_router(router, weights, seed)
        self.links: dict[tuple[int, int], KvLink] = {}
        self.link_free_s: dict[tuple[int, int], float] = {}
        self.cluster, self.calibration = cluster, calibration
        self.bytes_per_token: dict[tuple[int, int], int] = {}
        self.waitq: dict[int, deque[int]] = {d: deque() for d in self.decoders}
        # goal tokens waiting for a reservation, per decode replica
        self.queued_tokens = dict.fromkeys(self.decoders, 0)
        self.reserved_seqs = dict.fromkeys(self.decoders, 0)
        self.landed: dict[int, list[int]] = {d: [] for d in self.decoders}
        self.pinned: dict[int, int] = {}  # rid -> blocks held on its prefill replica until the copy ends
        self.in_flight = [False] * len(self.engines)
        self.front_of = np.full(n, -1, np.int64)
        self.decode_of = np.full(n, -1, np.int64)
        self.prefill_done_s = np.full(n, math.nan)
        self.xfer_start_s = np.full(n, math.nan)
        self.transfer_s = np.full(n, math.nan)
        self.dropped = np.zeros(n, bool)
        self.rejected = np.zeros(n, bool)
        self.recomputed = 0  # adopted by recompute: the decode engine had no slot when the copy landed
        self.heap: list[tuple[float, int, int, int]] = []
        self._seq = 0
        self._rr = 0
        self.now = 0.0

    def push(self, t: float, kind: int, index: int) -> None:
        self._seq += 1
        heapq.heappush(self.heap, (t, self._seq, kind, index))

    def kick(self, e: int) -> None:
        if self.in_flight[e]:
            return
        horizon = self.heap[0][0] if self.heap else math.inf  # a decode run stops at the next event
        end = self.engines[e].step(self.now, horizon)
        if end is not None:
            self.in_flight[e] = True
            self.push(end, _STEP, e)
        self._sync(e)

    def _sync(self, e: int) -> None:
        if self.roles[e] == "decode":
            return
        i = self.front_index[e]
        eng = self.engines[e]
        self.load.outstanding_tokens[i] = eng.outstanding
        self.load.queued[i] = len(eng.waiting)
        self.load.running[i] = eng.n_live

    # -- requests -------------------------------------------------------------------------------------------
    def arrive(self, rid: int) -> None:
        i = self.router.route(self.types[rid], self.req.goal[rid], self.load)
        if i < 0:
            i = int(np.argmin(self.load.outstanding_tokens))
        e = self.front[i]
        self.front_of[rid] = e
        if self.roles[e] == "prefill":
            if (
                self.req.goal[rid] > max(self.max_len[d] for d in self.decoders)
                or self.preq.goal[rid] > self.max_len[e]
            ):
                self.rejected[rid] = True
                return
            if not any(self.engines[d].fits(rid) for d in self.decoders):
                self.dropped[rid] = True
                return
        elif self.req.goal[rid] > self.max_len[e]:
            self.rejected[rid] = True
            return
        eng = self.engines[e]
        if not eng.fits(rid):
            self.dropped[rid] = True
            return
        eng.add(rid)
        self.kick(e)

    def prefilled(self, e: int, rid: int) -> None:
        """Prefill of ``rid`` ended on prefill replica ``e``: its first token is out; hand its KV over."""
        t = self.preq.finish_s[rid]
        self.req.first_token_s[rid] = self.preq.first_token_s[rid]
        self.prefill_done_s[rid] = t
        self.req.generated[rid] = 1
        if self.req.goal[rid] == self.req.prompt[rid] + 1:  # one output token: done at the prefill
            self.req.finish_s[rid] = t
            return
        eng = self.engines[e]
        blocks = -(-self.req.prompt[rid] // eng.bs)
        eng.free_blocks -= blocks  # pinned until the copy is through
        self.pinned[rid] = blocks
        able = [k for k, d in enumerate(self.decoders) if self.engines[d].fits(rid)]
        nd, rr = len(self.decoders), self._rr
        k = min(  # the least outstanding tokens per unit of speed; ties in turn
            able,
            key=lambda k: (
                (self.engines[self.decoders[k]].outstanding + self.queued_tokens[self.decoders[k]])
                / self.dspeed[k],
                (k - rr) % nd,
            ),
        )
        self._rr = (k + 1) % nd
        d = self.decoders[k]
        self.decode_of[rid] = d
        self.waitq[d].append(rid)
        self.queued_tokens[d] += self.req.goal[rid]
        self.reserve(d)

    def reserve(self, d: int) -> None:
        """Reserve blocks and a slot on decode replica ``d`` for the head of its queue, then start its copy."""
        eng, q = self.engines[d], self.waitq[d]
        while q:
            rid = q[0]
            need = -(-self.req.prompt[rid] // eng.bs)
            if need > eng.free_blocks or eng.n_live + self.reserved_seqs[d] >= eng.max_seqs:
                return  # the transfer waits for room (first come, first served)
            q.popleft()
            self.queued_tokens[d] -= self.req.goal[rid]
            eng.free_blocks -= need
            self.reserved_seqs[d] += 1
            p = int(self.front_of[rid])
            key = (p, d)
            link = self.links.get(key)
            if link is None:
                reps = self.deployment.replicas
                link = self.links[key] = kv_link(reps[p], reps[d], self.cluster, self.calibration)
                self.bytes_per_token[key] = kv_transfer_bytes(
                    self.model, reps[p].config, reps[d].config, 1, self.calibration
                )
            start = max(self.now, self.link_free_s.get(key, 0.0))
            dur = link.transfer_s(self.req.prompt[rid] * self.bytes_per_token[key])
            self.link_free_s[key] = start + dur
            self.xfer_start_s[rid] = start
            self.transfer_s[rid] = dur
            self.push(start + dur, _XFER, rid)

    def landed_kv(self, rid: int) -> None:
        """The copy of ``rid`` ended: the prefill side unpins, the decode replica takes it at a step boundary."""
        p, d = int(self.front_of[rid]), int(self.decode_of[rid])
        self.engines[p].free_blocks += self.pinned.pop(rid)
        self.kick(p)
        if self.in_flight[d]:
            self.landed[d].append(rid)
        else:
            self._adopt(d, rid)
            self.kick(d)

    def _adopt(self, d: int, rid: int) -> None:
        eng = self.engines[d]
        eng.free_blocks += -(-self.req.prompt[rid] // eng.bs)  # the reservation becomes the request's
        self.reserved_seqs[d] -= 1
        if not eng.adopt(rid):  # the engine filled its slots with its own preempted requests meanwhile
            self.recomputed += 1
            eng.add(rid)

    # -- the loop -------------------------------------------------------------------------------------------
    def run(self) -> None:
        arrival = self.trace.arrival_s
        n = len(arrival)
        if n:
            self.push(float(arrival[0]), _ARRIVAL, 0)
        while self.heap:
            now, _, kind, i = heapq.heappop(self.heap)
            self.now = now
            if kind == _ARRIVAL:
                j = i
                while j < n and arrival[j] <= now:
                    j += 1
                if j < n:  # first, so the engines' decode runs stop at it
                    self.push(float(arrival[j]), _ARRIVAL, j)
                for k in range(i, j):
                    self.arrive(k)
            elif kind == _XFER:
                self.landed_kv(i)
            else:
                self.in_flight[i] = False
                eng = self.engines[i]
                done, eng.finished = eng.finished, []
                role = self.roles[i]
                if role == "prefill":
                    for rid in done:
                        self.prefilled(i, rid)
                elif role == "decode":
                    for rid in self.landed[i]:
                        self._adopt(i, rid)
                    self.landed[i] = []
                    self.reserve(i)
                self.kick(i)

    # -- results --------------------------------------------------------------------------------------------
    def result(self, slo: dict[str, float] | None) -> SimResult:
        trace, reps = self.trace, self.deployment.replicas
        names = np.array([r.name for r in reps] + [""], dtype=object)
        types = np.asarray(self.types, np.int64)
        pre = np.where(
            np.array([self.roles[k] == "prefill" for k in self.front_of.tolist()], bool)
            if len(types)
            else np.zeros(0, bool),
            self.front_of,
            -1,
        )
        preempt = np.asarray(self.req.preemptions, np.int64) + np.asarray(self.preq.preemptions, np.int64)
        records = pd.DataFrame(
            {
                "request_id": np.arange(len(trace), dtype=np.int64),
                "arrival_s": trace.arrival_s,
                "type": types,
                "type_name": np.array(self.grid.names, dtype=object)[types] if len(types) else [],
                "replica": names[self.front_of],
                "prefill_replica": names[pre],
                "decode_replica": names[self.decode_of],
                "first_token_s": np.asarray(self.req.first_token_s, np.float64),
                "finish_s": np.asarray(self.req.finish_s, np.float64),
                "prompt_tokens": trace.prompt_tokens,
                "output_tokens": trace.output_tokens,
                "preemptions": preempt,
                "rerouted": np.zeros(len(trace), np.int64),
                "migrations": np.zeros(len(trace), np.int64),
                "transfer_s": self.transfer_s,
                "transfer_wait_s": self.xfer_start_s - self.prefill_done_s,
                "dropped": self.dropped,
                "rejected": self.rejected,
            }
        )
        last = np.nanmax(records["finish_s"].to_numpy()) if records["finish_s"].notna().any() else 0.0
        span = max(trace.duration_s, float(last), self.now)
        rows = []
        for r, eng, role in zip(reps, self.engines, self.roles, strict=True):
            g = r.config.num_gpus
            rows.append(
                {
                    "replica": r.name,
                    "config": r.config.label,
                    "role": role,
                    "gpus": g,
                    "gpu_ids": r.gpu_ids,
                    "alloc_s": 0.0,
                    "ready_s": 0.0,
                    "stop_s": math.nan,
                    "release_s": math.nan,
                    "gpu_seconds": g * span,
                    "busy_s": eng.busy_s,
                    "utilisation": eng.busy_s / span if span > 0 else 0.0,
                    "steps": eng.steps,
                }
            )
        replicas = pd.DataFrame(rows)
        summary = summarize(records, span, slo=slo, offered_s=trace.duration_s)
        moved = records["transfer_s"].notna().to_numpy()
        summary.update(
            {
                "unholdable": int(np.count_nonzero(np.asarray(self.req.goal) > max(self.max_len))),
                "oracle_lengths": True,
                "switches": 0,
                "reroutes": 0,
                "migrations": 0,
                "migrations_running": 0,
                "disaggregated": True,
                "kv_transfers": int(moved.sum()),
                "kv_transfer_s_mean": float(records["transfer_s"][moved].mean()) if moved.any() else 0.0,
                "kv_transfer_wait_s_mean": (
                    float(records["transfer_wait_s"][moved].mean()) if moved.any() else 0.0
                ),
                "kv_recomputed": self.recomputed,
                "gpu_seconds": float(replicas["gpu_seconds"].sum()),
                "utilisation": dict(zip(replicas["replica"], replicas["utilisation"].round(4), strict=True)),
            }
        )
        return SimResult(records, replicas, summary, [], None)


def simulate_disagg(
    trace: Trace,
    deployment: Deployment,
    model: ModelSpec,
    cluster: Cluster | None = None,
    *,
    router: str = "least-tokens",
    grid: TypeGrid | None = None,
    calibration: Calibration | None = None,
    seed: int = 0,
    chunked_prefill: bool = True,
    slo: dict[str, float] | None = None,
) -> SimResult:
    """Replay ``trace`` on a deployment with a prefill/decode pool (and any aggregated replicas); see the module
    docstring. Deterministic for the same inputs and ``seed``."""
    if cluster is not None:
        deployment.validate(cluster)
    if grid is None:
        edges = deployment.type_edges
        grid = TypeGrid.from_edges(edges) if edges is not None else TypeGrid.for_types(trace, 6)
    sim = _DisaggSim(trace, deployment, model, cluster, grid, router, calibration, seed, chunked_prefill)
    sim.run()
    return sim.result(slo)
