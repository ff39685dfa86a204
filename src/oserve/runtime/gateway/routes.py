"""The gateway's routing state: a ``RouteTable`` (one deployment's replicas, URLs, router and ``LoadView``)
swapped atomically on a switch, and per-replica ``ReplicaLoad`` that outlives the swaps, so requests in flight
on a replica that left the table still count until they finish.

Routing is ``oserve.routing``'s code, the same the simulator runs: the router sees the plan's weights (types x
replicas) and a ``LoadView`` the gateway keeps current — outstanding tokens (prompt + expected output) and
running requests per replica, and ``in_service`` False for a replica that is saturated (``max_inflight``
requests) or marked down after a connection failure (for ``down_cooldown_s``).

A deployment with a prefill/decode pool routes as ``sim.disagg`` does: the router chooses among the aggregated
and the prefill replicas (a type's weight on a prefill replica sends it to the pool; a row naming only decode
replicas may go to any of them), and ``pick_decode`` gives the decode replica a prefilled request hands over to:
the least outstanding tokens per unit of speed among those in service.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from oserve.errors import ConfigError
from oserve.routing import (
    GATEWAY_SIGNALS,
    PREFIX,
    ROUTERS,
    LoadView,
    Router,
    check_signals,
    make_router,
    replica_speed,
)
from oserve.spec.deployment import Deployment
from oserve.spec.router import RouterSpec
from oserve.trace.classify import TypeGrid

__all__ = ["ReplicaLoad", "RouteTable", "check_gateway_router", "gateway_routers", "grid_of"]


def grid_of(deployment: Deployment) -> TypeGrid:
    """The type grid a deployment's weights are keyed by (its ``type_edges``), else one type."""
    edges = deployment.type_edges
    return TypeGrid.from_edges(edges) if edges is not None else TypeGrid()


@dataclass(slots=True, eq=False)
class ReplicaLoad:
    """What the gateway has sent one replica and not yet seen finish."""

    name: str
    inflight: int = 0
    outstanding_tokens: float = 0.0
    down_until_s: float = 0.0  # time.monotonic() before which it is skipped after a connection failure
    missed_probes: int = 0  # consecutive /health probes that timed out or could not connect
    # upstream requests being sent (tasks) and responses being read: both let the prober cut the requests in
    # flight there loose, so they retry elsewhere or end with an error event
    posts: set = field(default_factory=set)
    active: set = field(default_factory=set)

    def fail(self) -> None:
        """The replica stopped answering: cancel every request still waiting for its answer (``Proxy._forward``
        retries them elsewhere) and drop the connections of those being read."""
        for post in list(self.posts):
            post.cancel()
        self.posts.clear()
        for resp in list(self.active):
            resp.close()
        self.active.clear()


def gateway_routers() -> list[str]:
    """The registered routers the gateway can feed (all their signals are ones it collects)."""
    return [n for n, f in ROUTERS.items() if f.signals <= GATEWAY_SIGNALS]


def check_gateway_router(name: str) -> None:
    """``ConfigError`` for an unknown router or one that reads a signal the gateway does not collect."""
    if name not in ROUTERS:
        raise ConfigError(f"unknown router {name!r}; choose one of {', '.join(gateway_routers())}")
    check_signals(name, ROUTERS[name].signals, GATEWAY_SIGNALS, "the gateway", gateway_routers())


class RouteTable:
    """One deployment's routing: replica order, URLs, the router over its weights, and the live ``LoadView``."""

    def __init__(
        self,
        deployment: Deployment,
        endpoints: Mapping[str, str],
        grid: TypeGrid,
        router: str | RouterSpec,
        loads: dict[str, ReplicaLoad],
        max_inflight: int,
    ) -> None:
        names = [r.name for r in deployment.replicas]
        missing = [n for n in names if n not in endpoints]
        if missing:
            raise ConfigError(f"no endpoint for replica(s) {missing}; endpoints name {sorted(endpoints)}")
        self.deployment = deployment
        self.names = names
        self.urls = [endpoints[n].rstrip("/") for n in names]
        self.index = {n: i for i, n in enumerate(names)}
        self.loads = [loads.setdefault(n, ReplicaLoad(n)) for n in names]
        weights = np.asarray(deployment.weight_matrix(grid.names), dtype=np.float64)
        self.roles = [r.config.role for r in deployment.replicas]
        self.decoders = [i for i, role in enumerate(self.roles) if role == "decode"]
        self._front = [i for i, role in enumerate(self.roles) if role != "decode"]
        if self.decoders:  # the router chooses the front (aggregated and prefill); decode follows the prefill
            weights = weights.copy()
            weights[:, self.decoders] = 0.0
            empty = weights.sum(axis=1) <= 0
            weights[np.ix_(empty, self._front)] = 1.0
        spec = router if isinstance(router, RouterSpec) else RouterSpec(router)
        check_gateway_router(spec.type)  # known, and fed by what the gateway collects (else one-line error)
        self.router: Router = make_router(spec.type, weights, parameters=spec.parameters)
        self.max_inflight = max_inflight
        # relative speeds as the simulator gives them, so mixed replica sizes balance alike in both
        self.view = LoadView.empty(len(names), [replica_speed(r.config) for r in deployment.replicas])
        self._down: set[int] = set()
        for i, load in enumerate(self.loads):
            self.view.outstanding_tokens[i] = load.outstanding_tokens
            self.view.running[i] = load.inflight
            if load.down_until_s > time.monotonic():
                self._down.add(i)
            self._refresh(i)

    def _expire_cooldowns(self) -> None:
        if self._down:
            now = time.monotonic()
            for i in [i for i in self._down if self.loads[i].down_until_s <= now]:
                self._down.discard(i)
                self._refresh(i)

    def _refresh(self, i: int) -> None:
        self.view.in_service[i] = i not in self._down and self.loads[i].inflight < self.max_inflight

    @property
    def uses_prefix(self) -> bool:
        """Whether the router wants the request's prefix block hashes (``prefix-aware``)."""
        return PREFIX in self.router.signals

    def pick(self, type_index: int, tokens: float, exclude: set[int], prefix: Sequence[int] = ()) -> int:
        """The router's replica for the request, skipping ``exclude`` (replicas this request already failed on);
        -1 when none may take it. ``prefix``: the prompt's block hashes, for a router that reads ``prefix``."""
        self._expire_cooldowns()
        view = self.view
        kwargs = {"prefix": prefix} if self.uses_prefix else {}
        if not exclude:
            return self.router.route(type_index, int(tokens), view, **kwargs)
        saved = view.in_service.copy()
        view.in_service[list(exclude)] = False
        try:
            return self.router.route(type_index, int(tokens), view, **kwargs)
        finally:
            view.in_service[:] = saved

    def pick_decode(self, exclude: set[int]) -> int:
        """The decode replica for a request prefilled in the pool (the least outstanding tokens per unit of
        speed among those in service, fewer running on ties, then order); -1 when none may take it."""
        self._expire_cooldowns()
        view = self.view
        best, key = -1, None
        for i in self.decoders:
            if i in exclude or not view.in_service[i]:
                continue
            speed = float(view.speed[i]) if view.speed is not None else 1.0
            k = (view.outstanding_tokens[i] / speed, view.running[i], i)
            if key is None or k < key:
                best, key = i, k
        return best

    def free_slots(self) -> int:
        """Requests the replicas the router picks from (not decode ones) could still take: up, below their cap."""
        self._expire_cooldowns()
        live = self.view.in_service
        cap = self.max_inflight
        return sum(cap - self.loads[i].inflight for i in self._front if live[i])

    def saturated(self) -> bool:
        """Whether some replica is up but full (so a refusal is backpressure, 429, not an outage, 503)."""
        return any(
            i not in self._down and load.inflight >= self.max_inflight for i, load in enumerate(self.loads)
        )

    # -- accounting (the load objects are shared with other tables; the view is this table's) ---------------------
    def started(self, load: ReplicaLoad, tokens: float) -> None:
        load.inflight += 1
        load.outstanding_tokens += tokens
        i = self.index.get(load.name)
        if i is not None and self.loads[i] is load:
            self.view.running[i] += 1
            self.view.outstanding_tokens[i] += tokens
            if load.inflight >= self.max_inflight:
                self.view.in_service[i] = False

    def finished(self, load: ReplicaLoad, tokens: float) -> None:
        load.inflight -= 1
        load.outstanding_tokens -= tokens
        i = self.index.get(load.name)
        if i is not None and self.loads[i] is load:
            self.view.running[i] -= 1
            self.view.outstanding_tokens[i] -= tokens
            self._refresh(i)

    def mark_down(self, i: int, cooldown_s: float) -> None:
        self.loads[i].down_until_s = time.monotonic() + cooldown_s
        self._down.add(i)
        self._refresh(i)
