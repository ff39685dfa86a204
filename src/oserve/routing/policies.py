"""Router policies: plan-weighted by type; among the plan's replicas, least tokens, least work (tokens at each
replica's speed) or least load (requests plus token backlog, at each replica's speed); type-blind round-robin,
least outstanding tokens and least requests; join-shortest-queue, and Llumnix's freeness-based dispatch with
migration pairing."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import numpy as np

from oserve.errors import ConfigError
from oserve.routing.signals import KV_BLOCKS, OUTSTANDING_TOKENS, REQUESTS
from oserve.spec import ReplicaConfig

__all__ = [
    "ROUTERS",
    "JoinShortestQueue",
    "LeastLoadAmongAllowed",
    "LeastOutstandingTokens",
    "LeastRequests",
    "LeastTokensAmongAllowed",
    "LeastWorkAmongAllowed",
    "Llumnix",
    "LoadView",
    "RoundRobin",
    "Router",
    "WeightedByType",
    "make_router",
    "replica_speed",
]


@dataclass(slots=True)
class LoadView:
    """Live load of the replicas, updated in place by the simulator or the gateway (arrays indexed by replica)."""

    outstanding_tokens: np.ndarray  # prompt + expected output tokens not yet finished, per replica
    queued: np.ndarray  # requests waiting (not yet running)
    running: np.ndarray  # requests running
    in_service: np.ndarray  # bool: False while a replica drains or restarts
    speed: np.ndarray | None = None  # relative serving speed per replica (``replica_speed``); None: all equal
    # KV-cache state, filled only for routers whose ``signals`` include ``kv_blocks`` (None otherwise)
    kv_free_blocks: np.ndarray | None = None  # blocks not held by running requests (nor reserved)
    kv_queued_blocks: np.ndarray | None = None  # blocks the waiting requests' prompts (and generated) need

    @classmethod
    def empty(cls, num_replicas: int, speed: np.ndarray | None = None) -> LoadView:
        return cls(
            np.zeros(num_replicas, np.float64),
            np.zeros(num_replicas, np.int64),
            np.zeros(num_replicas, np.int64),
            np.ones(num_replicas, bool),
            speed=None if speed is None else np.asarray(speed, np.float64),
            kv_free_blocks=np.zeros(num_replicas, np.float64),
            kv_queued_blocks=np.zeros(num_replicas, np.float64),
        )


def replica_speed(config: ReplicaConfig) -> float:
    """A replica's relative token rate for load balancing: its GPUs' summed HBM bandwidth (decode, which dominates
    busy replicas, is bound by reading weights and KV), so a TP8 replica counts as twice a TP4 one."""
    return config.num_gpus * config.gpu.hbm_gb_per_s


class Router(Protocol):
    """Choose a replica index for a request; -1 when no replica may take it now. ``signals`` names the
    ``LoadView`` signals it reads (``routing.signals``); one whose signals include ``prefix`` is also called with
    ``prefix=`` the request's prefix block hashes (chained: equal hashes name equal prefixes)."""

    signals: ClassVar[frozenset[str]]

    def route(self, type_index: int, tokens: int, load: LoadView) -> int: ...


def _least(values: np.ndarray, allowed: np.ndarray) -> int:
    if not allowed.any():
        return -1
    masked = np.where(allowed, values, np.inf)
    return int(np.argmin(masked))


class RoundRobin:
    """Each request to the next in-service replica, ignoring type and load (vLLM behind a plain load balancer)."""

    signals: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, weights: np.ndarray | None = None, seed: int = 0) -> None:
        self._next = 0

    def route(self, type_index: int, tokens: int, load: LoadView) -> int:
        n = len(load.in_service)
        for step in range(n):
            i = (self._next + step) % n
            if load.in_service[i]:
                self._next = i + 1
                return i
        return -1


class LeastOutstandingTokens:
    """The in-service replica with the fewest outstanding tokens (Llumnix-style load balance, no migration)."""

    signals: ClassVar[frozenset[str]] = frozenset({OUTSTANDING_TOKENS})

    def __init__(self, weights: np.ndarray | None = None, seed: int = 0) -> None:
        pass

    def route(self, type_index: int, tokens: int, load: LoadView) -> int:
        return _least(load.outstanding_tokens, load.in_service)


class LeastRequests:
    """The in-service replica with the fewest requests (queued + running), whatever the request's type and the
    plan's weights: a plain least-request balancer in front of the replicas (Envoy's and Istio's
    ``LEAST_REQUEST``, the queue-depth scorer of llm-d and the Gateway API inference extension). It knows neither
    types nor replica speeds; a faster replica gets more only because it drains sooner."""

    signals: ClassVar[frozenset[str]] = frozenset({REQUESTS})

    def __init__(self, weights: np.ndarray | None = None, seed: int = 0) -> None:
        pass  # the plan's weights are ignored: this router is type-blind

    def route(self, type_index: int, tokens: int, load: LoadView) -> int:
        return _least(load.queued + load.running, load.in_service)


class JoinShortestQueue:
    """Shortest queue (queued + running) among the replicas the plan allows for the type."""

    signals: ClassVar[frozenset[str]] = frozenset({REQUESTS})

    def __init__(self, weights: np.ndarray | None = None, seed: int = 0) -> None:
        self.allowed = None if weights is None else np.asarray(weights) > 0

    def route(self, type_index: int, tokens: int, load: LoadView) -> int:
        allowed = load.in_service if self.allowed is None else self.allowed[type_index] & load.in_service
        if not allowed.any():
            allowed = load.in_service  # the plan's replicas are all out: any live one beats dropping
        return _least(load.queued + load.running, allowed)


class WeightedByType:
    """The plan's weights: among a type's replicas, the one whose outstanding tokens per unit of planned share is
    lowest — deterministic weighted balancing that follows the shares at steady state and reacts to live load."""

    signals: ClassVar[frozenset[str]] = frozenset({OUTSTANDING_TOKENS})

    def __init__(self, weights: np.ndarray | None = None, seed: int = 0) -> None:
        if weights is None:
            raise ConfigError("the weighted router needs a deployment with routing weights")
        self.weights = np.asarray(weights, dtype=np.float64)

    def route(self, type_index: int, tokens: int, load: LoadView) -> int:
        share = self.weights[type_index]
        allowed = (share > 0) & load.in_service
        if not allowed.any():
            return _least(load.outstanding_tokens, load.in_service)
        score = (load.outstanding_tokens + tokens) / np.where(share > 0, share, 1.0)
        return _least(score, allowed)


class LeastTokensAmongAllowed:
    """The in-service replica with the fewest outstanding tokens among those the plan lets serve the type (weight
    > 0), whatever its share: the plan decides where a type may go, live load decides where it goes — bursts
    spread over every able replica instead of queueing behind the preferred ones."""

    signals: ClassVar[frozenset[str]] = frozenset({OUTSTANDING_TOKENS})

    def __init__(self, weights: np.ndarray | None = None, seed: int = 0) -> None:
        self.allowed = None if weights is None else np.asarray(weights) > 0

    def _able(self, type_index: int, load: LoadView) -> np.ndarray:
        """In-service replicas the plan allows for the type; every in-service one when none of those is."""
        allowed = load.in_service if self.allowed is None else self.allowed[type_index] & load.in_service
        return allowed if allowed.any() else load.in_service

    def route(self, type_index: int, tokens: int, load: LoadView) -> int:
        return _least(load.outstanding_tokens, self._able(type_index, load))


class LeastWorkAmongAllowed(LeastTokensAmongAllowed):
    """Among the replicas the plan lets serve the type, the one that would finish its outstanding tokens (this
    request's included) soonest at its relative speed: least-tokens for mixed replica sizes, where a TP8 replica
    drains twice the tokens of a TP4 one in the same time."""

    def route(self, type_index: int, tokens: int, load: LoadView) -> int:
        work = load.outstanding_tokens + tokens
        return _least(work if load.speed is None else work / load.speed, self._able(type_index, load))


class LeastLoadAmongAllowed(LeastTokensAmongAllowed):
    """Among the replicas the plan lets serve the type, the one with the fewest requests per unit of speed, a
    backlog of ``TOKENS_PER_REQUEST`` outstanding tokens counting as one more request.

    Requests, not tokens, set what a replica's next arrival waits for: every running sequence adds to each decode
    step and takes a batch slot, while a 2,000-token prompt is one step of prefill. Balancing tokens alone counts
    that prompt as heavier than 19 sequences with 100 tokens left to decode (100 steps, each slowed by the
    batch); the token term still breaks ties toward the replica with less prefill queued. (The request count is
    what join-shortest-queue balances; ``benchmarks/routers.py`` compares them on the real traces.)"""

    signals: ClassVar[frozenset[str]] = frozenset({REQUESTS, OUTSTANDING_TOKENS})

    TOKENS_PER_REQUEST = 2048.0

    def route(self, type_index: int, tokens: int, load: LoadView) -> int:
        score = load.queued + load.running + (load.outstanding_tokens + tokens) / self.TOKENS_PER_REQUEST
        return _least(score if load.speed is None else score / load.speed, self._able(type_index, load))


class Llumnix:
    """Llumnix (OSDI'24) dispatch and migration pairing over homogeneous replicas.

    Load is Llumnix's *freeness* ``F = (M - sum V) / B`` in KV blocks per request: ``M - sum V`` is the free
    blocks less the blocks the waiting requests need (their virtual usage), ``B`` the running plus waiting
    requests (the ``remaining_steps`` metric of Llumnix's code, counting every waiting request). A request goes to
    the freest in-service replica. Every ``interval_s`` the simulator asks :meth:`pairs` for (source,
    destination) pairs — sources are replicas below ``threshold_blocks`` or with requests waiting (Llumnix's
    source filter: over the threshold or with preempted requests; here admission can also stall on
    ``max_num_seqs`` or the token budget, which shows as a queue), destinations those above it with none
    waiting, the least free paired with the freest — and moves one request at a time while :meth:`improves`
    (Llumnix's ``Balanced`` policy: the gap shrinks but stays positive and the destination stays above the
    threshold). ``handshake_s`` and ``link_gb_per_s`` (None: from the cluster spec) price a running request's
    live migration in the simulator (``sim.migration``); the fixed part stands for the destination's block
    pre-allocation and the copy's setup, which Llumnix measures in tens of milliseconds whatever the length.
    """

    signals: ClassVar[frozenset[str]] = frozenset({REQUESTS, KV_BLOCKS})

    def __init__(
        self,
        weights: np.ndarray | None = None,
        seed: int = 0,
        *,
        interval_s: float = 0.5,
        threshold_blocks: float = 3.0,
        max_moves_per_pair: int = 8,
        handshake_s: float = 0.01,
        link_gb_per_s: float | None = None,
    ) -> None:
        if interval_s <= 0:
            raise ConfigError(f"llumnix interval_s must be > 0, got {interval_s}")
        if max_moves_per_pair < 1:
            raise ConfigError(f"llumnix max_moves_per_pair must be >= 1, got {max_moves_per_pair}")
        self.rebalance_interval_s = float(interval_s)
        self.threshold_blocks = float(threshold_blocks)
        self.max_moves_per_pair = int(max_moves_per_pair)
        if handshake_s < 0 or (link_gb_per_s is not None and link_gb_per_s <= 0):
            raise ConfigError("llumnix handshake_s must be >= 0 and link_gb_per_s > 0")
        self.handshake_s = float(handshake_s)
        self.link_gb_per_s = link_gb_per_s

    @staticmethod
    def freeness(load: LoadView) -> np.ndarray:
        """Blocks per request left to each replica; without KV state, minus the outstanding tokens."""
        if load.kv_free_blocks is None or load.kv_queued_blocks is None:
            return -load.outstanding_tokens
        requests = np.maximum(load.running + load.queued, 1)
        return (load.kv_free_blocks - load.kv_queued_blocks) / requests

    def route(self, type_index: int, tokens: int, load: LoadView) -> int:
        return _least(-self.freeness(load), load.in_service)

    def pairs(self, load: LoadView) -> list[tuple[int, int]]:
        """(source, destination) replica pairs worth a migration now, most imbalanced first."""
        free = self.freeness(load)
        live = load.in_service
        waiting = load.queued > 0
        src = np.flatnonzero(live & ((free < self.threshold_blocks) | waiting))
        dst = np.flatnonzero(live & (free > self.threshold_blocks) & ~waiting)
        src = src[np.argsort(free[src], kind="stable")].tolist()
        dst = dst[np.argsort(-free[dst], kind="stable")].tolist()
        return [(s, d) for s, d in zip(src, dst, strict=False) if s != d]

    def improves(self, load: LoadView, src: int, dst: int, blocks: float) -> bool:
        """Whether moving one request from ``src`` to ``dst`` — running and holding ``blocks``, or waiting and
        needing them — narrows their freeness gap without inverting it, leaving ``dst`` above the threshold."""
        if load.kv_free_blocks is None or load.kv_queued_blocks is None:
            return False
        n_src = int(load.running[src] + load.queued[src])
        n_dst = int(load.running[dst] + load.queued[dst])
        left_src = load.kv_free_blocks[src] - load.kv_queued_blocks[src]
        left_dst = load.kv_free_blocks[dst] - load.kv_queued_blocks[dst]
        gap_before = left_dst / max(n_dst, 1) - left_src / max(n_src, 1)
        f_dst_after = (left_dst - blocks) / (n_dst + 1)
        gap_after = f_dst_after - (left_src + blocks) / max(n_src - 1, 1)
        return f_dst_after > self.threshold_blocks and 0 < gap_after < gap_before


ROUTERS: dict[str, Callable[..., Router]] = {
    "weighted": WeightedByType,
    "allowed-least-tokens": LeastTokensAmongAllowed,
    "allowed-least-work": LeastWorkAmongAllowed,
    "allowed-least-load": LeastLoadAmongAllowed,
    "round-robin": RoundRobin,
    "least-tokens": LeastOutstandingTokens,
    "least-requests": LeastRequests,
    "jsq": JoinShortestQueue,
    "llumnix": Llumnix,
}


def make_router(
    name: str | Callable[..., Router],
    weights: np.ndarray | None = None,
    seed: int = 0,
    parameters: Mapping[str, Any] | None = None,
) -> Router:
    """A router by its registered name (or a factory such as ``partial(Llumnix, interval_s=1.0)``); ``weights``
    is types x replicas (the deployment's plan); ``parameters`` are the router's keyword options (a deployment
    file's ``router.parameters``), each checked against what the router takes."""
    if callable(name):
        return name(weights, seed, **(parameters or {}))
    try:
        factory = ROUTERS[name]
    except KeyError:
        raise ConfigError(f"unknown router {name!r}; choose one of {', '.join(ROUTERS)}") from None
    if not parameters:
        return factory(weights, seed)
    accepted = [
        p.name
        for p in inspect.signature(factory).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    ]
    unknown = sorted(set(parameters) - set(accepted))
    if unknown:
        takes = ", ".join(accepted) if accepted else "no parameters"
        raise ConfigError(f"router {name!r} has no parameter {', '.join(unknown)}; it takes {takes}")
    try:
        return factory(weights, seed, **parameters)
    except TypeError as exc:  # e.g. a string where a number belongs
        raise ConfigError(f"router {name!r} parameters {dict(parameters)}: {exc}") from None
