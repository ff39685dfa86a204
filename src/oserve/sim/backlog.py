"""The work in flight at one moment: the requests queued and running on each replica, as a replay starts from.

A ``Backlog`` is what a switch decision must weigh besides the traffic still to come: the requests the running
replicas hold (queued, mid-prefill, decoding) at ``now_s``, each with the replica that holds it ("" for one that
no replica holds yet, or one on a replica already leaving the deployment), the tokens generated so far and when
its first token came. ``snapshot`` reads it off a running simulation (``ClusterView.backlog``); the live
controller builds one from the gateway's in-flight table. ``simulate(..., backlog=...)`` starts a replay from it
(``start_from``): each request goes back onto the replica that holds it, keeps its arrival time (so its TTFT and
E2E count the time it already waited) and its first token, and recomputes its prompt and generated tokens there,
as vLLM does after preemption by recompute (the replay does not copy KV blocks).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from oserve.trace.core import Trace

if TYPE_CHECKING:  # pragma: no cover
    from oserve.sim.cluster import _Sim

__all__ = ["Backlog", "snapshot", "start_from", "with_backlog"]


@dataclass(frozen=True, slots=True, eq=False)
class Backlog:
    """Requests in flight at ``now_s``, sorted by arrival (seconds, tokens; ``first_token_s`` NaN: none yet)."""

    now_s: float
    replica: tuple[str, ...]
    arrival_s: np.ndarray
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray  # expected total output (the replay's truth; live: the gateway's estimate)
    generated_tokens: np.ndarray
    first_token_s: np.ndarray

    @classmethod
    def of(
        cls,
        now_s: float,
        replica: list[str] | tuple[str, ...],
        arrival_s,
        prompt_tokens,
        output_tokens,
        generated_tokens,
        first_token_s,
    ) -> Backlog:
        """Columns in any order, sorted here; arrivals clipped to ``[0, now_s]`` and outputs to more than what
        was generated (an estimate below it would finish the request before its next token)."""
        arrival = np.minimum(np.maximum(np.asarray(arrival_s, np.float64), 0.0), now_s)
        order = np.argsort(arrival, kind="stable")
        generated = np.maximum(np.asarray(generated_tokens, np.int64), 0)[order]
        output = np.maximum(np.asarray(output_tokens, np.int64)[order], generated + 1)
        names = tuple(replica[i] for i in order.tolist())
        first = np.asarray(first_token_s, np.float64)[order]
        return cls(
            float(now_s),
            names,
            arrival[order],
            np.maximum(np.asarray(prompt_tokens, np.int64)[order], 1),
            output,
            generated,
            np.where(generated > 0, first, math.nan),
        )

    @classmethod
    def empty(cls, now_s: float = 0.0) -> Backlog:
        none = np.zeros(0)
        return cls(
            float(now_s), (), none, none.astype(np.int64), none.astype(np.int64), none.astype(np.int64), none
        )

    def __len__(self) -> int:
        return len(self.arrival_s)

    @property
    def queued(self) -> int:
        """Requests without a first token yet."""
        return int(np.count_nonzero(self.generated_tokens == 0))

    def per_replica(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for name in self.replica:
            out[name] = out.get(name, 0) + 1
        return out


def with_backlog(backlog: Backlog, future: Trace) -> Trace:
    """One trace for a replay from ``backlog.now_s``: the backlog's requests first (their own arrivals), then
    ``future`` (arrivals relative to ``now_s``) shifted to absolute time."""
    now = backlog.now_s
    n = len(future)
    return Trace.from_arrays(
        np.concatenate([backlog.arrival_s, future.arrival_s + now]),
        np.concatenate([backlog.prompt_tokens, future.prompt_tokens]),
        np.concatenate([backlog.output_tokens, future.output_tokens]),
        duration_s=now + (future.duration_s if n else 0.0),
        name=future.name,
        source=future.source,
        sort=False,
    )


def snapshot(sim: _Sim) -> Backlog:
    """The requests the run holds at ``sim.now``: queued or running on a replica, or waiting for one."""
    req, trace = sim.req, sim.trace
    names: list[str] = []
    rids: list[int] = []
    generated: list[int] = []
    active = set(sim.active)
    for r, state in enumerate(sim.replicas):
        held = state.name if r in active and not state.stopping else ""
        for e in state.engines:
            eng = sim.engines[e]
            slots = np.flatnonzero(eng.live)
            rids += eng.rid[slots].tolist()
            generated += (eng.tok[slots] - eng.prm[slots]).tolist()  # a running request's tokens: its slot's
            rids += list(eng.waiting)
            generated += [req.generated[rid] for rid in eng.waiting]
            names += [held] * (len(slots) + len(eng.waiting))
    rids += list(sim.pending)
    generated += [req.generated[rid] for rid in sim.pending]
    names += [""] * len(sim.pending)
    index = np.asarray(rids, np.int64)
    return Backlog.of(
        sim.now,
        names,
        trace.arrival_s[index],
        trace.prompt_tokens[index],
        trace.output_tokens[index],
        generated,
        [req.first_token_s[i] for i in rids],
    )


def start_from(sim: _Sim, backlog: Backlog) -> int:
    """Put the first ``len(backlog)`` requests of ``sim``'s trace (``with_backlog``) back where they were at
    ``backlog.now_s``; returns the index of the first request still to arrive."""
    sim.now = backlog.now_s
    by_name = {sim.replicas[r].name: r for r in sim.active}
    req = sim.req
    kicked: set[int] = set()
    for rid, name in enumerate(backlog.replica):
        req.generated[rid] = int(backlog.generated_tokens[rid])
        req.first_token_s[rid] = float(backlog.first_token_s[rid])
        if sim.oracle:
            sim.arrived_by_type[sim.types[rid]] += 1
        else:
            sim.arrived_by_type[sim.classify_arrival(rid)] += 1
        r = by_name.get(name)
        if r is None:
            sim.route(rid)
            continue
        engines = sim.replicas[r].engines
        e = min(engines, key=lambda k: sim.engines[k].outstanding)
        if not sim.engines[e].fits(rid):
            sim.route(rid)  # drops it, as an arrival would be
            continue
        sim.replica_of[rid] = r
        sim.engines[e].add(rid)
        if not sim.oracle:
            sim.credit_to(rid, r)
        kicked.add(e)
    for r in sim.active:
        sim._sync(r)
    for e in sorted(kicked):
        sim.kick(e)
    return len(backlog)
