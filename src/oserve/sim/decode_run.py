"""A run of pure-decode steps of one unchanged batch, cut into the chunks the event loop's horizons make.

The reference loop ends every engine's decode run at the first step boundary at or after the next arrival,
whichever replica the arrival goes to, so each arrival costs an event and a run per replica (~4 on the 4-replica
conversation hour) though it changes one batch. A ``DecodeRun`` keeps the run going and computes those same chunks
lazily, as the loop's clock passes them (``Engine.advance``): chunk ``j`` starts where chunk ``j - 1`` ended,
its horizon is the first arrival after that boundary (or the pending control event), and its length and duration
come from the same arithmetic (scalar step times for chunks of at most 4 steps, the vectorised ones summed in
order otherwise), so every boundary, and every record, is bit-identical (``tests/sim/test_sim_decode_run.py``
compares the two loops). A request routed to the engine cuts the run at the chunk in flight (``Engine.cut``),
where the reference loop would have admitted it.

The run is ``final`` once its last chunk is known: a request finishes or the KV blocks run out (the natural end), a
chunk reaches the pending control event, or a boundary equals an arrival time (there the loop's event order
decides). Until then the loop holds a step event at :meth:`DecodeRun.lower_bound_s`, a lower bound of the
natural end (step time is convex in the context, so ``cap`` steps take at least ``cap`` times the middle
step's time); when it fires, the rest of the run is computed at once and the event moved to the true end.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from itertools import accumulate
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from oserve.sim.engine import Engine

__all__ = ["DecodeRun", "Horizon"]

_LOOP_STEPS = 64  # chunks up to this many steps are summed with itertools.accumulate, longer ones with numpy


@dataclass(slots=True)
class Horizon:
    """The outside events a decode run stops at: the next unprocessed arrival and the earliest pending control
    event (the loop keeps both current), and the sorted arrival times for the chunks after the first."""

    arrival_s: list[float]
    next_arrival_s: float = math.inf
    control_s: float = math.inf

    @property
    def now_s(self) -> float:
        return min(self.next_arrival_s, self.control_s)

    def after(self, t: float) -> float:
        """The horizon of a chunk starting at boundary ``t``: the first arrival after it, or the control event."""
        arrival = self.arrival_s
        i = bisect.bisect_right(arrival, t)
        return min(arrival[i], self.control_s) if i < len(arrival) else self.control_s

    def stops(self, t: float) -> bool:
        """Whether a run must end at boundary ``t``: it reached the control event or ties with an arrival."""
        if t >= self.control_s:
            return True
        arrival = self.arrival_s
        i = bisect.bisect_left(arrival, t)
        return i < len(arrival) and arrival[i] == t


class DecodeRun:
    """The chunks of one run: ``ends`` (seconds), ``ks`` (decode steps since the start, cumulative) and ``durs``
    (each chunk's duration); ``ptr`` is the chunk the loop's clock is in, whose effects are visible."""

    __slots__ = (
        "_tau",
        "_tau_list",
        "applied",
        "blk0",
        "cap",
        "comp0",
        "context0",
        "durs",
        "ends",
        "final",
        "horizon",
        "ks",
        "n",
        "ptr",
        "rem0",
        "rem_min",
        "slots",
        "start_s",
        "t_first",
        "timer",
        "tok0",
    )

    def __init__(
        self,
        engine: Engine,
        slots: np.ndarray,
        comp: np.ndarray,
        blk: np.ndarray,
        tok: np.ndarray,
        rem: np.ndarray,
    ) -> None:
        self.timer = engine.timer
        self.slots, self.comp0, self.blk0, self.tok0, self.rem0 = slots, comp, blk, tok, rem
        self.rem_min = int(np.minimum.reduce(rem))  # steps until the first request finishes
        self.n = len(slots)
        self.context0 = int(np.add.reduce(comp)) + self.n
        self.cap = self.rem_min  # steps until a request finishes or the blocks run out
        self.ends: list[float] = []
        self.ks: list[int] = []
        self.durs: list[float] = []
        self.t_first = self.start_s = math.nan
        self.ptr = 0
        self.final = False
        self.applied = False
        self.horizon: Horizon | None = None
        self._tau = np.empty(0)
        self._tau_list: list[float] = []

    @classmethod
    def start(
        cls,
        engine: Engine,
        now: float,
        horizon: float,
        slots: np.ndarray,
        comp: np.ndarray,
        blk: np.ndarray,
        later: Horizon | None,
    ) -> DecodeRun | None:
        """The run's first chunk from ``now`` for the running ``slots`` with computed tokens ``comp`` and blocks
        ``blk`` (None when the next step needs a block it cannot get); without ``later`` it is the whole run."""
        bs = engine.bs
        n = len(slots)
        tok = engine.tok[slots]
        rem = engine.goal[slots] - tok
        run = cls(engine, slots, comp, blk, tok, rem)
        k_cap = run.rem_min
        free = engine.free_blocks

        def new_blocks(k: int) -> int:
            return int(np.maximum(0, (comp + k + bs - 1) // bs - blk).sum())

        if n * (k_cap // bs + 1) > free and new_blocks(k_cap) > free:
            # the largest k whose blocks fit (0: the next step must preempt)
            lo, hi = 0, k_cap
            while lo < hi:
                mid = (lo + hi + 1) // 2
                if new_blocks(mid) <= free:
                    lo = mid
                else:
                    hi = mid - 1
            if lo == 0:
                return None
            k_cap = run.cap = lo
        run.start_s, run.horizon = now, later
        k, duration, run.t_first = run._chunk(now, horizon, 0, k_cap)
        run._append(now + duration, k, duration)
        if later is None:
            run.final = True
        return run

    def _append(self, end: float, k: int, duration: float) -> None:
        k_total = (self.ks[-1] if self.ks else 0) + k
        self.ends.append(end)
        self.ks.append(k_total)
        self.durs.append(duration)
        if k_total == self.cap or (self.horizon is not None and self.horizon.stops(end)):
            self.final = True

    def extend(self) -> None:
        """Compute the next chunk, as the loop would run it from the last boundary."""
        start, k_done = self.ends[-1], self.ks[-1]
        k, duration, _ = self._chunk(start, self.horizon.after(start), k_done, self.cap - k_done)
        self._append(start + duration, k, duration)

    def truncate(self) -> None:
        """Drop the chunks after the one in flight; the run ends there."""
        del self.ends[self.ptr + 1 :], self.ks[self.ptr + 1 :], self.durs[self.ptr + 1 :]
        self.final = True

    def lower_bound_s(self) -> float:
        """A time at or before the natural end, whatever the chunks (``cap`` steps; step time is convex in the
        context, so the steps' mean is at least the middle step's time), less a margin for rounding."""
        mid = self.timer.decode_time(self.n, self.context0 + self.n * (self.cap - 1) / 2)
        bound = self.start_s + self.cap * mid
        return max(self.ends[0], bound - 1e-6 - 1e-9 * abs(bound))

    # -- one chunk: the arithmetic of the one-chunk-per-event loop, step for step ------------------------------
    def _chunk(self, now: float, horizon: float, k_done: int, k_cap: int) -> tuple[int, float, float]:
        """(steps, duration, first step's time) of the chunk from ``now`` that ends at the first boundary at or
        after ``horizon``, ``k_done`` steps into the run, at most ``k_cap`` steps."""
        n = self.n
        context = self.context0 + n * k_done
        first = self.timer.decode_time(n, context)
        if horizon <= now + first:
            k_cap = 1
        elif horizon != math.inf:
            k_cap = min(k_cap, int((horizon - now) / first) + 1)  # steps only grow, so this many reach it
        if k_cap <= 4:  # a short run: plain floats beat numpy's per-call cost
            k, duration, step_time = 0, 0.0, first
            while True:
                duration += step_time
                k += 1
                if k == k_cap or now + duration >= horizon:
                    break
                step_time = self.timer.decode_time(n, context + k * n)
            return k, duration, first
        # the vectorised step times (the same values whatever slice of the run computes them: elementwise
        # IEEE arithmetic), summed in order as np.cumsum does, cut where searchsorted(side="left") would
        self._ensure(k_done + k_cap)
        if k_cap <= _LOOP_STEPS:  # the running sums in order (accumulate adds floats as a loop would)
            tau = self._tau_list
            cum = list(accumulate(tau[k_done : k_done + k_cap]))
            k = min(k_cap, bisect.bisect_left(cum, horizon - now) + 1)  # the first sum reaching the horizon
            return k, cum[k - 1], tau[k_done]
        cum = np.cumsum(self._tau[k_done : k_done + k_cap])
        k = k_cap
        if horizon != math.inf:
            k = min(k_cap, int(np.searchsorted(cum, horizon - now, side="left")) + 1)
        return k, float(cum[k - 1]), float(cum[0])

    def _ensure(self, steps: int) -> None:
        """Vectorised step times for the run's first ``steps`` steps at least."""
        have = len(self._tau)
        if have >= steps:
            return
        want = min(self.cap, max(steps, 2 * have, 32))
        more = self.timer.decode_run(self.n, self.context0 + self.n * have, want - have)
        self._tau = np.concatenate((self._tau, more)) if have else more
        self._tau_list.extend(more.tolist())
