"""The event loop the runtime's servers run on: uvloop when installed (the ``serve`` extra pulls it in on Linux),
else asyncio's default; and ``tune_gc``, the cyclic garbage collector's settings for a process serving thousands
of requests at once."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["run_async", "tune_gc"]

T = TypeVar("T")


def run_async(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)`` on uvloop when available."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def tune_gc(gen0_threshold: int) -> None:
    """Once a server is up: move what start-up allocated (modules, the planner's tables: ~180,000 objects in
    ``oserve serve``) out of the collector's sight (``gc.freeze``), and collect the young generation every
    ``gen0_threshold`` allocations instead of Python's 700. With thousands of requests held (a 4,096-client
    backlog), each request's objects outlive many young collections and the default settings spent a third of the
    gateway's CPU in the collector (docs/serve.md). Reference counting still frees everything acyclic at once;
    only cyclic garbage waits longer. ``gen0_threshold`` 0 leaves the collector as Python sets it."""
    if gen0_threshold <= 0:
        return
    gc.collect()
    gc.freeze()
    gc.set_threshold(gen0_threshold, 20, 10)
