"""What the router is shown: the gateway's view of each request (the default) or the replay's true lengths.

The gateway types a request at its arrival with its ``OnlineClassifier`` (prompt tokens, ``max_tokens`` capped by
an output estimate learned from the completions it has seen), tells the router prompt + estimated output tokens,
and counts each replica's outstanding tokens as the sum of those estimates over the requests it sent there and has
not seen finish. ``GatewayView`` does the same inside the simulator's loop: requests are typed on arrival
(``classify_arrival``), credited to the replica they are routed to (``credit_to``), and leave it, teaching the
classifier their true output, at their finish time (``settle_finished``; an engine records a step's effects when
the step starts, so finished requests wait in a heap until the clock reaches them). With ``oracle_lengths`` the
types and tokens are the true ones and the outstanding tokens the engines' own.
"""

from __future__ import annotations

import heapq
from typing import TYPE_CHECKING

import numpy as np

from oserve.trace.classify import LiveClassifier, OnlineClassifier, TypeGrid
from oserve.trace.core import Trace

if TYPE_CHECKING:  # pragma: no cover
    from oserve.sim.engine import Engine

__all__ = ["GatewayView"]


class GatewayView:
    """Mixed into the simulator's loop (``sim.cluster._Sim``, whose ``req``, ``load``, ``view_of``, ``now``,
    ``completed`` and ``_sync`` it uses): types, router tokens and estimated outstanding work."""

    def init_view(
        self, trace: Trace, grid: TypeGrid, oracle_lengths: bool, classifier: LiveClassifier | None
    ) -> None:
        n = len(trace)
        self.oracle = oracle_lengths
        if oracle_lengths:
            self.types = grid.classify(trace).tolist()
            self.seen = self.req.goal  # the tokens the router is told of: the true prompt + output
        else:  # typed at arrival (``classify_arrival``)
            self.types, self.seen = [0] * n, [0.0] * n
            self.classifier = OnlineClassifier(grid, classifier)
            mt = trace.extras.get("max_tokens")
            self.max_tokens = [None] * n if mt is None else np.asarray(mt, np.float64).tolist()
            self.prompt_list = trace.prompt_tokens.tolist()
            self.output_list = trace.output_tokens.tolist()
        self.credit = [-1] * n  # the replica whose estimated outstanding tokens hold the request
        self.finishing: list[tuple[float, int]] = []  # (finish time, request) not yet settled
        self.expected: list[float] = []  # per replica: estimated tokens of its unfinished requests

    def classify_arrival(self, rid: int) -> int:
        """Type a request at its arrival: the classifier's type, and prompt + estimated output for the router."""
        t, est = self.classifier.classify(self.prompt_list[rid], self.max_tokens[rid])
        self.types[rid] = t
        self.seen[rid] = self.prompt_list[rid] + est
        return t

    def credit_to(self, rid: int, r: int) -> None:
        """Request ``rid`` was handed to replica ``r`` (a re-route moves its estimate from the old one)."""
        old = self.credit[rid]
        self.credit[rid] = r
        self.expected[r] += self.seen[rid]
        if old >= 0:
            self.expected[old] -= self.seen[rid]
            if old != r:
                self._sync(old)

    def collect(self, eng: Engine) -> None:
        """Count the engine's finished requests and, in the gateway's view, queue them for ``settle_finished``."""
        self.completed += len(eng.finished)
        if not self.oracle:
            finish = self.req.finish_s
            for rid in eng.finished:
                heapq.heappush(self.finishing, (finish[rid], rid))
        eng.finished.clear()

    def settle_finished(self) -> None:
        """The requests finished by now leave their replica's estimated outstanding tokens and teach the
        classifier their true outputs, as the gateway sees each completion."""
        heap, now = self.finishing, self.now
        while heap and heap[0][0] <= now:
            _, rid = heapq.heappop(heap)
            r = self.credit[rid]
            if r >= 0:
                self.expected[r] -= self.seen[rid]
                self.credit[rid] = -1
                i = self.view_of.get(r)
                if i is not None:
                    self.load.outstanding_tokens[i] = self.expected[r]
            self.classifier.observe(self.prompt_list[rid], self.output_list[rid])
