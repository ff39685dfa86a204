"""Routing policies shared by the simulator and the live gateway, so what is simulated is what runs.

A router picks a replica for a request of a given type from a ``LoadView`` of the replicas (outstanding tokens,
queued and running requests, which are in service). Policies register by the name users type (``--router``).
Each router declares the load signals it reads (``signals``, see ``routing.signals``): one that reads ``prefix``
(``prefix-aware``) is also given the request's prefix block hashes; one that migrates is a ``Rebalancer``.
"""

from oserve.routing.policies import (
    ROUTERS,
    JoinShortestQueue,
    LeastLoadAmongAllowed,
    LeastOutstandingTokens,
    LeastRequests,
    LeastTokensAmongAllowed,
    LeastWorkAmongAllowed,
    Llumnix,
    LoadView,
    RoundRobin,
    Router,
    WeightedByType,
    make_router,
    replica_speed,
)
from oserve.routing.prefix import PrefixAware
from oserve.routing.signals import GATEWAY_SIGNALS, KV_BLOCKS, PREFIX, Rebalancer, check_signals

ROUTERS["prefix-aware"] = PrefixAware

__all__ = [
    "GATEWAY_SIGNALS",
    "KV_BLOCKS",
    "PREFIX",
    "ROUTERS",
    "JoinShortestQueue",
    "LeastLoadAmongAllowed",
    "LeastOutstandingTokens",
    "LeastRequests",
    "LeastTokensAmongAllowed",
    "LeastWorkAmongAllowed",
    "Llumnix",
    "LoadView",
    "PrefixAware",
    "Rebalancer",
    "RoundRobin",
    "Router",
    "WeightedByType",
    "check_signals",
    "make_router",
    "replica_speed",
]
