"""Llumnix-style request migration between replicas inside the event loop (OSDI'24, §4.2 and §4.4).

A router that declares ``rebalance_interval_s`` (``routing.Llumnix``) gets a ``REBALANCE`` event at that period;
there it names (source, destination) pairs and, for each, the loop moves one request at a time while the router
says the move narrows the pair's freeness gap (``improves``):

- waiting requests first, first come first (Llumnix's FCW): nothing to copy, they join the destination's queue
  at once;
- then, one at a time per source, the decoding request with the shortest context (SR: the least KV to copy),
  by live migration. Blocks for its KV are reserved on the destination; the copy of the KV it holds takes
  ``handshake_s + tokens x KV bytes per token / link bandwidth`` while it keeps decoding on the source
  (stage 0); at the source's next step boundary after the copy it stops (stage 1) and the tokens it computed
  meanwhile are copied (its downtime, stage 2), then it runs on the destination with its KV, without
  recomputing. A request that finished or was preempted during the copy is not moved (the reservation is
  returned); one the destination cannot seat on arrival (no sequence slot or blocks) joins its queue and is
  recomputed, as a preemption would be.

The link bandwidth is the router's ``link_gb_per_s`` when set, else from the cluster spec: the replicas' GPUs
copy their KV shards in parallel, so NVLink (or PCIe) per GPU times the smaller replica's GPU count inside a
node, and each GPU's share of its node's NIC (one NIC per GPU, as on DGX nodes) across nodes.

Without such a router nothing here runs, and the loop's hot path is unchanged but for one flag test.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from oserve.routing.signals import Rebalancer
from oserve.sim.switching import MIGRATE, REBALANCE
from oserve.spec.cluster import Cluster

__all__ = ["Migrating", "Move"]


@dataclass(slots=True)
class Move:
    """One live migration of a running request, from engine ``src`` to engine ``dst``."""

    rid: int
    src: int
    dst: int
    start_s: float
    kv_tokens: int  # tokens whose KV the bulk copy carries
    reserved_blocks: int  # held on the destination until the request arrives
    bytes_per_s: float
    stage: int = 0  # 0: bulk copy; 1: waiting for the source's step boundary; 2: last tokens in flight
    stop_s: float = math.nan
    done_s: float = math.nan
    outcome: str = ""  # "moved", "queued" (seated in the destination's queue) or "aborted"


class Migrating:
    """The migration steps of the simulator's loop (a base of ``cluster._Sim``, whose state they use)."""

    def init_migration(self, cluster: Cluster | None) -> None:
        self.cluster = cluster
        self.kv_view = False  # set by _set_router: the router reads KV state from the LoadView
        self.moves: list[Move] = []
        self.copying: dict[int, int] = {}  # source replica -> its live move (one at a time)
        self.moving: dict[int, int] = {}  # request id -> its live move
        self.leaving: dict[int, list[int]] = {}  # source engine -> moves to stop at its next step boundary
        self.migrated = [0] * len(self.trace)  # moves per request (waiting and running)
        self.waiting_moves = 0
        self._rates: dict[tuple[int, int], float] = {}

    # -- the load view ----------------------------------------------------------------------------------------
    def sync_kv(self, i: int, engines: list) -> None:
        bs = engines[0].bs
        self.load.kv_free_blocks[i] = sum(e.kv_free_blocks() for e in engines)
        self.load.kv_queued_blocks[i] = sum(e.waiting_tokens for e in engines) / bs

    def schedule_rebalance(self) -> None:
        if not isinstance(self.router, Rebalancer):
            return
        interval = self.router.rebalance_interval_s
        busy = self.hz.next_arrival_s != math.inf or self.moving or self.pending
        if busy or any(not self.engines[e].idle for r in self.active for e in self.replicas[r].engines):
            self.push(self.now + interval, REBALANCE, 0)

    # -- decisions ------------------------------------------------------------------------------------------
    def rebalance(self) -> None:
        router = self.router
        for s, d in router.pairs(self.load):
            rs, rd = self.active[s], self.active[d]
            moves = 0
            while moves < router.max_moves_per_pair:
                e, rid = self._first_waiting(rs)
                if rid < 0:
                    break
                eng = self.engines[e]
                blocks = -(-(self.req.prompt[rid] + self.req.generated[rid]) // eng.bs)
                if not router.improves(self.load, s, d, blocks):
                    break
                self._move_waiting(e, rid, rd)
                moves += 1
            if moves < router.max_moves_per_pair and rs not in self.copying:
                self._start_copy(s, d, rs, rd)
        self.schedule_rebalance()

    def _first_waiting(self, r: int) -> tuple[int, int]:
        """(engine, request id) of replica ``r``'s earliest waiting request, or (-1, -1)."""
        best = (-1, -1)
        for e in self.replicas[r].engines:
            waiting = self.engines[e].waiting
            if waiting and (best[1] < 0 or waiting[0] < best[1]):
                best = (e, waiting[0])
        return best

    def _dst_engine(self, r: int) -> int:
        engines = self.replicas[r].engines
        return (
            engines[0]
            if len(engines) == 1
            else min(engines, key=lambda k: (self.engines[k].outstanding, self.in_flight[k]))
        )

    def _move_waiting(self, e: int, rid: int, rd: int) -> None:
        self.engines[e].remove_waiting(rid)
        self._sync(self.engine_replica[e])
        d = self._dst_engine(rd)
        eng = self.engines[d]
        if eng.run is not None:
            self._cut(d)  # the run ends at the chunk in flight, where the request can join
        eng.add(rid)
        self.replica_of[rid] = rd
        self.migrated[rid] += 1
        self.waiting_moves += 1
        self._sync(rd)
        self.kick(d)

    def _start_copy(self, s: int, d: int, rs: int, rd: int) -> None:
        best = (-1, -1, 0)
        for e in self.replicas[rs].engines:
            rid, blocks = self.engines[e].shortest_decoding(set())
            if rid >= 0 and (best[1] < 0 or blocks < best[2]):
                best = (e, rid, blocks)
        e, rid, blocks = best
        if rid < 0 or not self.router.improves(self.load, s, d, blocks):
            return
        de = max(self.replicas[rd].engines, key=lambda k: self.engines[k].kv_free_blocks())
        dst = self.engines[de]
        if dst.run is not None:
            self._cut(de)  # its run counted on the blocks it had free
        reserve = blocks + 1  # room for the tokens decoded during the copy, as far as one block
        if dst.free_blocks < reserve or not dst.fits(rid):
            return
        dst.free_blocks -= reserve
        if dst.cache is not None:  # the reservation may need cached free blocks
            dst.cache.trim(dst.free_blocks)
        src = self.engines[e]
        kv_tokens = int(src.tok[src.decoding_slot(rid)]) - 1
        rate = self._bytes_per_s(rs, rd)
        m = Move(rid, e, de, self.now, kv_tokens, reserve, rate)
        self.moves.append(m)
        self.copying[rs] = self.moving[rid] = len(self.moves) - 1
        self._sync(rd)
        copy_s = self.router.handshake_s + kv_tokens * self.model.kv_bytes_per_token / rate
        self.push(self.now + copy_s, MIGRATE, len(self.moves) - 1)

    # -- the move's stages ----------------------------------------------------------------------------------
    def on_migrate(self, k: int) -> None:
        m = self.moves[k]
        if m.stage == 2:
            self._arrive(k)
            return
        m.stage = 1
        if self.in_flight[m.src]:
            self.leaving.setdefault(m.src, []).append(k)  # stopped at the step boundary (``at_boundary``)
        else:
            self._stop(k)

    def at_boundary(self, e: int) -> None:
        """Engine ``e`` finished a step: stop the requests whose bulk copy is done."""
        for k in self.leaving.pop(e, ()):
            self._stop(k)

    def _stop(self, k: int) -> None:
        m = self.moves[k]
        src = self.engines[m.src]
        slot = src.decoding_slot(m.rid)
        if slot < 0 or self.replicas[self.engine_replica[m.dst]].stopping:
            self._end(k, "aborted")  # finished or preempted during the copy, or the destination stops
            return
        new_tokens = int(src.tok[slot]) - 1 - m.kv_tokens
        src.migrate_out(slot)
        self._sync(self.engine_replica[m.src])
        m.stage, m.stop_s = 2, self.now
        self.push(self.now + new_tokens * self.model.kv_bytes_per_token / m.bytes_per_s, MIGRATE, k)

    def _arrive(self, k: int) -> None:
        m = self.moves[k]
        dst = self.engines[m.dst]
        if dst.run is not None:
            self._cut(m.dst)
        dst.free_blocks += m.reserved_blocks
        rd = self.engine_replica[m.dst]
        if self.replicas[rd].stopping:  # a switch stopped the destination meanwhile: route it afresh
            self._end(k, "queued")
            self._sync(rd)
            self.reroute([m.rid])
            return
        self.replica_of[m.rid] = rd
        self.migrated[m.rid] += 1
        if dst.adopt(m.rid):
            self._end(k, "moved")
        else:
            dst.add(m.rid)  # recomputed there, as after a preemption
            self._end(k, "queued")
        self._sync(rd)
        self.kick(m.dst)

    def _end(self, k: int, outcome: str) -> None:
        m = self.moves[k]
        if outcome == "aborted":
            self.engines[m.dst].free_blocks += m.reserved_blocks
            self._sync(self.engine_replica[m.dst])
        m.outcome, m.done_s = outcome, self.now
        del self.moving[m.rid]
        self.copying.pop(self.engine_replica[m.src], None)

    def _bytes_per_s(self, rs: int, rd: int) -> float:
        """KV copy bandwidth from replica ``rs`` to ``rd`` (bytes/s); see the module docstring."""
        rate = self._rates.get((rs, rd))
        if rate is not None:
            return rate
        src, dst = self.replicas[rs].spec, self.replicas[rd].spec
        width = min(len(src.gpu_ids), len(dst.gpu_ids))
        fixed = self.router.link_gb_per_s
        if fixed is not None:
            gb = fixed
        elif self.cluster is None:
            gpu = src.config.gpu
            gb = width * (gpu.nvlink_gb_per_s if gpu.has_nvlink else gpu.pcie_gb_per_s)
        else:
            nodes = self.cluster.nodes
            src_nodes = {self.cluster.gpus[g].node for g in src.gpu_ids}
            dst_nodes = {self.cluster.gpus[g].node for g in dst.gpu_ids}
            if src_nodes == dst_nodes and len(src_nodes) == 1:
                gb = width * nodes[next(iter(src_nodes))].intra_gb_per_s
            else:
                gb = width * min(nodes[n].network_gb_per_s / nodes[n].num_gpus for n in src_nodes | dst_nodes)
        rate = self._rates[(rs, rd)] = gb * 1e9
        return rate
