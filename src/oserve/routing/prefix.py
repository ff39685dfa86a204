"""``prefix-aware``: llm-d's prefix-cache scorer weighed with a load scorer, for replicas with prefix caching.

As llm-d's inference scheduler combines scorers (``pkg/epp/framework/plugins/scheduling/scorer/prefix``), each
candidate replica gets scores in [0, 1] and the weighted sum picks it:

- prefix: the fraction of the request's prefix blocks the replica likely holds — the consecutive blocks from
  the first found in what this router sent it (llm-d's approximate prefix index: the router remembers the block
  hashes it routed to each replica, an LRU of ``capacity_blocks`` per replica, and never asks the engines).
  Unset, the capacity is what the server says a replica's KV cache holds in its hash blocks (the simulator: the
  KV capacity over 512-token Mooncake blocks, :meth:`size_index`), else llm-d's default of 31,250 blocks
  (500k tokens in 16-token blocks, the gateway's);
- load: ``1 - min(1, (L - L_min) / load_span)`` of the ``allowed-least-load`` load ``L`` (requests + outstanding
  tokens / 2,048, scaled by replica speed to the mean replica). llm-d's queue scorer normalises by the spread
  (max - min), so any difference is full scale; an absolute span lets "much busier" mean something: with equal
  weights, a replica holding the whole prefix keeps the request until it carries ``load_span`` more load units
  than the least loaded one.

Ties go to the lower load, then the lower index. Requests without block hashes are routed by load alone.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import ClassVar

import numpy as np

from oserve.errors import ConfigError
from oserve.routing.policies import LeastLoadAmongAllowed, LoadView
from oserve.routing.signals import OUTSTANDING_TOKENS, PREFIX, REQUESTS

__all__ = ["LLM_D_LRU_BLOCKS", "PrefixAware"]

LLM_D_LRU_BLOCKS = 31_250  # llm-d's lruCapacityPerServer: 500k tokens of 16-token blocks


class PrefixAware(LeastLoadAmongAllowed):
    """Weighted prefix-cache and load scores among the replicas the plan allows for the type."""

    # the simulator and the gateway pass the request's block hashes as ``prefix``
    signals: ClassVar[frozenset[str]] = frozenset({REQUESTS, OUTSTANDING_TOKENS, PREFIX})

    def __init__(
        self,
        weights: np.ndarray | None = None,
        seed: int = 0,
        *,
        prefix_weight: float = 1.0,
        load_weight: float = 1.0,
        load_span: float = 8.0,
        capacity_blocks: int | None = None,
    ) -> None:
        super().__init__(weights, seed)
        if prefix_weight < 0 or load_weight < 0 or prefix_weight + load_weight <= 0:
            raise ConfigError("prefix-aware prefix_weight and load_weight must be >= 0, not both 0")
        if not load_span > 0:
            raise ConfigError(f"prefix-aware load_span must be > 0, got {load_span}")
        if capacity_blocks is not None and capacity_blocks < 1:
            raise ConfigError(f"prefix-aware capacity_blocks must be >= 1, got {capacity_blocks}")
        self.prefix_weight, self.load_weight = float(prefix_weight), float(load_weight)
        self.load_span = float(load_span)
        self.sized = capacity_blocks is not None  # given: the server's size does not override it
        self.capacity_blocks = int(capacity_blocks) if capacity_blocks is not None else LLM_D_LRU_BLOCKS
        self.index: list[OrderedDict[int, None]] = []  # per replica: block hashes routed there, LRU first

    def size_index(self, blocks: int) -> None:
        """The blocks a replica's KV cache holds, in the hash blocks the router is given (unless set)."""
        if not self.sized:
            self.capacity_blocks = max(1, int(blocks))

    def _load(self, tokens: int, load: LoadView) -> np.ndarray:
        score = load.queued + load.running + (load.outstanding_tokens + tokens) / self.TOKENS_PER_REQUEST
        if load.speed is None:
            return score.astype(np.float64)
        return score * (float(np.mean(load.speed)) / load.speed)

    def matched(self, replica: int, prefix: Sequence[int]) -> int:
        """Leading blocks of ``prefix`` the router sent to ``replica`` and still remembers."""
        if replica >= len(self.index):
            return 0
        held = self.index[replica]
        n = 0
        for h in prefix:
            if h not in held:
                break
            n += 1
        return n

    def scores(self, type_index: int, tokens: int, load: LoadView, prefix: Sequence[int] = ()) -> np.ndarray:
        """The weighted score of each replica (-inf where it may not take the request)."""
        able = self._able(type_index, load)
        total = np.full(len(able), -np.inf)
        if not able.any():
            return total
        work = self._load(tokens, load)
        low = float(work[able].min())
        load_score = 1.0 - np.minimum(1.0, (work - low) / self.load_span)
        prefix_score = np.zeros(len(able))
        if len(prefix):
            for i in np.flatnonzero(able).tolist():
                prefix_score[i] = self.matched(i, prefix) / len(prefix)
        total[able] = (self.prefix_weight * prefix_score + self.load_weight * load_score)[able]
        return total

    def route(self, type_index: int, tokens: int, load: LoadView, prefix: Sequence[int] = ()) -> int:
        score = self.scores(type_index, tokens, load, prefix)
        if not np.isfinite(score).any():
            return -1
        best = np.flatnonzero(score >= score.max() - 1e-12)
        if len(best) > 1:  # ties: the lower load, then the lower index
            best = best[np.argsort(self._load(tokens, load)[best], kind="stable")]
        i = int(best[0])
        if len(prefix):
            self._remember(i, prefix, len(load.in_service))
        return i

    def _remember(self, replica: int, prefix: Sequence[int], n: int) -> None:
        while len(self.index) < n:
            self.index.append(OrderedDict())
        held = self.index[replica]
        for h in prefix:
            held[h] = None
            held.move_to_end(h)
        while len(held) > self.capacity_blocks:
            held.popitem(last=False)
