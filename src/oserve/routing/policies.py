"""Router policies: plan-weighted by type, least tokens (or least work at each replica's speed) among the plan's
replicas, round-robin, least outstanding tokens, join-shortest-queue."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from oserve.errors import ConfigError
from oserve.spec import ReplicaConfig

__all__ = [
    "ROUTERS",
    "JoinShortestQueue",
    "LeastOutstandingTokens",
    "LeastTokensAmongAllowed",
    "LeastWorkAmongAllowed",
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

    @classmethod
    def empty(cls, num_replicas: int, speed: np.ndarray | None = None) -> LoadView:
        return cls(
            np.zeros(num_replicas, np.float64),
            np.zeros(num_replicas, np.int64),
            np.zeros(num_replicas, np.int64),
            np.ones(num_replicas, bool),
            None if speed is None else np.asarray(speed, np.float64),
        )


def replica_speed(config: ReplicaConfig) -> float:
    """A replica's relative token rate for load balancing: its GPUs' summed HBM bandwidth (decode, which dominates
    busy replicas, is bound by reading weights and KV), so a TP8 replica counts as twice a TP4 one."""
    return config.num_gpus * config.gpu.hbm_gb_per_s


class Router(Protocol):
    """Choose a replica index for a request; -1 when no replica may take it now."""

    def route(self, type_index: int, tokens: int, load: LoadView) -> int: ...


def _least(values: np.ndarray, allowed: np.ndarray) -> int:
    if not allowed.any():
        return -1
    masked = np.where(allowed, values, np.inf)
    return int(np.argmin(masked))


class RoundRobin:
    """Each request to the next in-service replica, ignoring type and load (vLLM behind a plain load balancer)."""

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

    def __init__(self, weights: np.ndarray | None = None, seed: int = 0) -> None:
        pass

    def route(self, type_index: int, tokens: int, load: LoadView) -> int:
        return _least(load.outstanding_tokens, load.in_service)


class JoinShortestQueue:
    """Shortest queue (queued + running) among the replicas the plan allows for the type."""

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

    def __init__(self, weights: np.ndarray | None = None, seed: int = 0) -> None:
        self.allowed = None if weights is None else np.asarray(weights) > 0

    def route(self, type_index: int, tokens: int, load: LoadView) -> int:
        allowed = load.in_service if self.allowed is None else self.allowed[type_index] & load.in_service
        if not allowed.any():
            allowed = load.in_service
        return _least(load.outstanding_tokens, allowed)


class LeastWorkAmongAllowed:
    """Among the replicas the plan lets serve the type, the one that would finish its outstanding tokens (this
    request's included) soonest at its relative speed: least-tokens for mixed replica sizes, where a TP8 replica
    drains twice the tokens of a TP4 one in the same time."""

    def __init__(self, weights: np.ndarray | None = None, seed: int = 0) -> None:
        self.allowed = None if weights is None else np.asarray(weights) > 0

    def route(self, type_index: int, tokens: int, load: LoadView) -> int:
        allowed = load.in_service if self.allowed is None else self.allowed[type_index] & load.in_service
        if not allowed.any():
            allowed = load.in_service
        work = load.outstanding_tokens + tokens
        return _least(work if load.speed is None else work / load.speed, allowed)


ROUTERS: dict[str, Callable[..., Router]] = {
    "weighted": WeightedByType,
    "allowed-least-tokens": LeastTokensAmongAllowed,
    "allowed-least-work": LeastWorkAmongAllowed,
    "round-robin": RoundRobin,
    "least-tokens": LeastOutstandingTokens,
    "jsq": JoinShortestQueue,
}


def make_router(name: str, weights: np.ndarray | None = None, seed: int = 0) -> Router:
    """A router by its registered name; ``weights`` is types x replicas (the deployment's plan)."""
    try:
        factory = ROUTERS[name]
    except KeyError:
        raise ConfigError(f"unknown router {name!r}; choose one of {', '.join(ROUTERS)}") from None
    return factory(weights, seed)
