"""``AdmissionQueue``: where requests wait for a replica slot when every replica is full, instead of being refused.

A serving gateway in front of replicas that take ``max_inflight_per_replica`` requests each can hold many more
clients than that: a request that finds every replica full waits here (first come, first served, at most
``max_queued`` of them, each at most ``queue_timeout_s``) and goes on as soon as a request ends and frees a slot.
Only a full queue, or a wait past its deadline, is refused (429 with ``Retry-After``). A client that leaves while it
waits gives its place up (its handler is cancelled; the queue skips it).

Wake-ups are one per freed slot, never a poll: ``release()`` resolves the oldest waiter's future, and ``woken``
counts the waiters woken that have not yet resumed, so a request that finds a free slot wakes a waiter only for
a slot no woken one is about to take (else every arrival in that moment woke another waiter for the same slot,
and all but one went back to the queue: at a 4,096-client backlog, several router picks per answer). A waiter woken
but beaten to the slot (a request that arrived while the queue was empty) waits again at the front. A waiter that
is woken and then leaves (cancelled or timed out in the same moment) passes its wake-up on, so no freed slot is
left unused while requests wait.
"""

from __future__ import annotations

import asyncio
from collections import deque

__all__ = ["AdmissionQueue"]


class AdmissionQueue:
    """A bounded FIFO of requests waiting for a replica slot (``max_queued`` 0: no queue, refuse at once)."""

    def __init__(self, max_queued: int) -> None:
        self.max_queued = max_queued
        # (deadline on the loop's clock, future: True when woken, False when the deadline passed)
        self._waiters: deque[tuple[float, asyncio.Future[bool]]] = deque()
        self._timer: asyncio.TimerHandle | None = None  # one timer for the whole queue: the oldest deadline
        self.queued = 0  # waiters not yet woken
        self.woken = 0  # waiters woken for a slot that have not yet resumed to take it
        self.waited = 0  # requests that have waited here, ever (for the metrics)
        self.timed_out = 0  # of which their deadline passed

    @property
    def full(self) -> bool:
        return self.queued >= self.max_queued

    def release(self) -> None:
        """A slot freed: wake the oldest waiter still waiting."""
        waiters = self._waiters
        while waiters:
            _, fut = waiters.popleft()
            if not fut.done():
                fut.set_result(True)
                self.queued -= 1
                self.woken += 1
                return

    def wake_all(self) -> None:
        """The routes changed (a switch): every waiter tries again."""
        while self.queued:
            self.release()

    def _expire(self) -> None:
        """Refuse the waiters whose deadline passed (from the head: the queue is in deadline order, first come
        first served with one timeout), then arm the timer for the next."""
        self._timer = None
        waiters = self._waiters
        loop = asyncio.get_running_loop()
        now = loop.time()
        while waiters and (waiters[0][0] <= now or waiters[0][1].done()):
            _, fut = waiters.popleft()
            if not fut.done():
                fut.set_result(False)
                self.queued -= 1
                self.timed_out += 1
        if waiters:
            self._timer = loop.call_at(waiters[0][0], self._expire)

    async def wait(self, timeout_s: float, *, front: bool = False) -> bool:
        """Wait for a slot, at most ``timeout_s``; True when woken, False when full or the deadline passed.
        ``front``: a waiter woken but beaten to its slot keeps its place at the head."""
        if timeout_s <= 0 or (not front and self.full):
            return False
        waiters = self._waiters
        if len(waiters) > 2 * self.queued + 64:  # drop the places of waiters that left (amortised)
            self._waiters = waiters = deque(w for w in waiters if not w[1].done())
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[bool] = loop.create_future()
        deadline = loop.time() + timeout_s
        if front:
            waiters.appendleft((deadline, fut))
        else:
            waiters.append((deadline, fut))
            self.waited += 1
        self.queued += 1
        if self._timer is None or (front and deadline < self._timer.when()):
            if self._timer is not None:
                self._timer.cancel()
            self._timer = loop.call_at(waiters[0][0], self._expire)
        used = False
        try:
            used = await fut
            return used
        finally:
            if not fut.done() or fut.cancelled():  # left while waiting: release() skips its place
                fut.cancel()
                self.queued -= 1
            elif fut.result():
                self.woken -= 1
                if not used:
                    self.release()  # woken, then cancelled before it could take the slot: hand it on
