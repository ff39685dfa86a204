"""What the gateway tells the controller core about its requests: those in flight, per replica, and the recent ones.

The simulator's adaptive policy gives the core the requests queued and running on each replica and the requests
seen so far, with their lengths; the live controller gives it the same from here. Every request the gateway
accepts is entered at its arrival (prompt tokens, the classifier's output estimate), marked with the replica it
is sent to (again on a retry) and closed when it ends, with its true output length when the answer says it.
Times are seconds since the ledger's ``origin`` on the monotonic clock, the live controller's clock. The gateway
does not parse a stream's tokens as they pass, so a request in flight counts as not started
(``Backlog.generated_tokens`` 0): the replay prefills it again, as after a preemption, in both of its branches.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

import numpy as np

from oserve.sim.backlog import Backlog
from oserve.trace import Trace

__all__ = ["Ledger"]


class Ledger:
    """Requests in flight and those that arrived in the last ``keep_s`` (at most ``max_recent``)."""

    def __init__(
        self, clock: Callable[[], float] = time.monotonic, keep_s: float = 1800.0, max_recent: int = 200_000
    ) -> None:
        self.clock = clock
        self.origin = clock()
        self.keep_s = keep_s
        self._next = 0
        # one row per request: [arrival_s, prompt_tokens, output_tokens (estimate until it ends), replica]
        self.open: dict[int, list] = {}
        self.recent: deque[list] = deque(maxlen=max_recent)

    def now(self) -> float:
        return self.clock() - self.origin

    def arrived(self, prompt_tokens: int, expected_output_tokens: int) -> int:
        """Enter a request; returns its ledger id."""
        now = self.now()
        row = [now, max(int(prompt_tokens), 1), max(int(expected_output_tokens), 1), ""]
        rid = self._next
        self._next += 1
        self.open[rid] = row
        self.recent.append(row)
        while self.recent and self.recent[0][0] < now - self.keep_s:
            self.recent.popleft()
        return rid

    def routed(self, rid: int, replica: str) -> None:
        row = self.open.get(rid)
        if row is not None:
            row[3] = replica

    def finished(self, rid: int, output_tokens: int | None = None) -> None:
        row = self.open.pop(rid, None)
        if row is not None and output_tokens is not None and output_tokens > 0:
            row[2] = int(output_tokens)

    def backlog(self, now_s: float | None = None) -> Backlog:
        """The requests in flight now, each on the replica it was last sent to ("" while none holds it)."""
        now = self.now() if now_s is None else now_s
        rows = list(self.open.values())
        return Backlog.of(
            now,
            [r[3] for r in rows],
            [r[0] for r in rows],
            [r[1] for r in rows],
            [r[2] for r in rows],
            [0] * len(rows),
            [float("nan")] * len(rows),
        )

    def recent_trace(self, since_s: float, now_s: float | None = None) -> Trace:
        """The requests that arrived in ``[since_s, now_s)``, lengths as known (true output once ended)."""
        now = self.now() if now_s is None else now_s
        rows = [r for r in self.recent if since_s <= r[0] < now]
        return Trace.from_arrays(
            np.array([max(r[0], 0.0) for r in rows], np.float64),
            np.array([r[1] for r in rows], np.int64),
            np.array([r[2] for r in rows], np.int64),
            duration_s=max(now, 0.0),
            name="gateway",
        )
