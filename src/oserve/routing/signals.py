"""The load signals routers read, declared by each router, and the protocol of routers that also migrate.

Every router class names the ``LoadView`` signals it reads in ``signals`` (a class attribute): whoever drives it
must fill them. The simulator fills all of them; the gateway fills those in ``GATEWAY_SIGNALS`` and refuses, by
name and with the reason, a router that needs another (``check_signals``), instead of feeding it zeros.

- ``requests``: queued and running requests per replica;
- ``outstanding_tokens``: prompt + expected output tokens not yet finished, per replica;
- ``kv_blocks``: free KV blocks and the blocks the waiting requests need (``kv_free_blocks``,
  ``kv_queued_blocks``), which only the engines know;
- ``prefix``: the request's prefix block hashes, passed to ``route`` as ``prefix=``; such a router also has
  ``size_index(blocks)``, told how many hash blocks one replica's KV cache holds.

A router that also moves requests between replicas is a ``Rebalancer`` (``Llumnix``): the simulator's migration
loop (``sim.migration``) runs only for those.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol, runtime_checkable

from oserve.errors import ConfigError

__all__ = [
    "GATEWAY_SIGNALS",
    "KV_BLOCKS",
    "OUTSTANDING_TOKENS",
    "PREFIX",
    "REQUESTS",
    "SIGNALS",
    "Rebalancer",
    "check_signals",
]

REQUESTS = "requests"
OUTSTANDING_TOKENS = "outstanding_tokens"
KV_BLOCKS = "kv_blocks"
PREFIX = "prefix"

SIGNALS = {
    REQUESTS: "queued and running requests per replica",
    OUTSTANDING_TOKENS: "prompt + expected output tokens not yet finished per replica",
    KV_BLOCKS: "each replica's free KV blocks and the blocks its waiting requests need",
    PREFIX: "the request's prefix block hashes",
}

#: what the live gateway knows of its replicas: it counts requests and tokens itself and hashes prompts, but
#: it does not read the engines' KV-cache state
GATEWAY_SIGNALS = frozenset({REQUESTS, OUTSTANDING_TOKENS, PREFIX})


def check_signals(
    name: str, needs: Iterable[str], available: frozenset[str], where: str, usable: Iterable[str]
) -> None:
    """Raise ``ConfigError`` when router ``name`` needs a signal ``where`` cannot supply, naming the signal and
    the routers that would work (``usable``)."""
    missing = sorted(set(needs) - available)
    if missing:
        what = "; ".join(f"{m} ({SIGNALS.get(m, 'unknown signal')})" for m in missing)
        raise ConfigError(
            f"router {name!r} needs {what}, which {where} does not collect; use one of {', '.join(usable)}"
        )


@runtime_checkable
class Rebalancer(Protocol):
    """A router that also migrates requests: every ``rebalance_interval_s`` the simulator asks it for (source,
    destination) pairs and moves one request at a time while ``improves`` says so (``sim.migration``)."""

    rebalance_interval_s: float
    max_moves_per_pair: int
    handshake_s: float
    link_gb_per_s: float | None

    def pairs(self, load) -> list[tuple[int, int]]: ...

    def improves(self, load, src: int, dst: int, blocks: float) -> bool: ...
