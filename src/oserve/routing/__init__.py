"""Routing policies shared by the simulator and the live gateway, so what is simulated is what runs.

A router picks a replica for a request of a given type from a ``LoadView`` of the replicas (outstanding tokens,
queued and running requests, which are in service). Policies register by the name users type (``--router``).
A router that declares ``uses_prefix`` (``prefix-aware``) is also given the request's prefix block hashes.
"""

from oserve.routing.policies import (
    ROUTERS,
    JoinShortestQueue,
    LeastLoadAmongAllowed,
    LeastOutstandingTokens,
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

ROUTERS["prefix-aware"] = PrefixAware

__all__ = [
    "ROUTERS",
    "JoinShortestQueue",
    "LeastLoadAmongAllowed",
    "LeastOutstandingTokens",
    "LeastTokensAmongAllowed",
    "LeastWorkAmongAllowed",
    "Llumnix",
    "LoadView",
    "PrefixAware",
    "RoundRobin",
    "Router",
    "WeightedByType",
    "make_router",
    "replica_speed",
]
