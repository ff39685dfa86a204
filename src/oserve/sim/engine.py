"""One replica's engine as vLLM v1 schedules it: continuous batching, chunked prefill, paged KV, preemption.

A step spends the token budget (``max_num_batched_tokens``) on the running requests first — decodes one token
each, then continuing prefill chunks — and then admits waiting requests first come, first served, while fewer
than ``max_num_seqs`` run. KV is held in ``block_size``-token blocks; a request holds blocks for its computed
tokens plus the step's new ones. When a running request cannot get a block, the last admitted running request is
preempted by recompute (blocks freed, put back at the head of the queue, its prompt and generated tokens
prefilled again later), as ``vllm/v1/core/sched/scheduler.py`` does; no admissions happen in a step that
preempted. ``chunked_prefill=False`` is prefill-first (vLLM v0's default): a step runs whole prompts only, and
decodes run when no waiting request can be admitted.

Runs of pure-decode steps with nothing to change the batch (no admission possible, no finish, enough blocks, no
outside event) are advanced in one call: their step times come from ``StepTimer.decode_run``.

Per-sequence state lives in numpy slot arrays (one slot per running sequence) and the shared ``Requests``
lists; nothing here is an object per request.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from oserve.sim.timing import StepTimer

__all__ = ["Engine", "Requests"]


@dataclass(slots=True)
class Requests:
    """Per-request state shared by the engines of a run (plain lists indexed by request id)."""

    prompt: list[int]
    goal: list[int]  # prompt + output tokens (output at least 1)
    generated: list[int] = field(default_factory=list)  # tokens sampled so far, kept across preemption
    first_token_s: list[float] = field(default_factory=list)
    finish_s: list[float] = field(default_factory=list)
    preemptions: list[int] = field(default_factory=list)

    @classmethod
    def of(cls, prompt: np.ndarray, output: np.ndarray) -> Requests:
        n = len(prompt)
        p = np.maximum(prompt, 1).astype(np.int64)
        g = p + np.maximum(output, 1)
        nan = [math.nan] * n
        return cls(p.tolist(), g.tolist(), [0] * n, nan, list(nan), [0] * n)


class Engine:
    """The scheduler, KV block pool and step clock of one replica (or one PP virtual engine)."""

    def __init__(
        self,
        timer: StepTimer,
        requests: Requests,
        *,
        kv_blocks: int,
        block_size: int,
        max_num_seqs: int,
        max_num_batched_tokens: int,
        chunked_prefill: bool = True,
    ) -> None:
        self.timer = timer
        self.req = requests
        self.bs = block_size
        self.budget = max_num_batched_tokens
        self.max_seqs = max_num_seqs
        self.chunked = chunked_prefill
        self.total_blocks = self.free_blocks = kv_blocks
        cap = max_num_seqs
        self.rid = np.full(cap, -1, np.int64)
        self.prm = np.zeros(cap, np.int64)  # prompt tokens
        self.comp = np.zeros(cap, np.int64)  # tokens whose KV is computed
        self.tok = np.zeros(cap, np.int64)  # tokens known (prompt + generated)
        self.goal = np.zeros(cap, np.int64)
        self.blk = np.zeros(cap, np.int64)
        self.order = np.zeros(cap, np.int64)  # admission order (preemption takes the newest)
        self.live = np.zeros(cap, bool)
        self._free_slots = list(range(cap - 1, -1, -1))
        self._admitted = 0
        self.n_live = 0
        self.partial = 0  # running sequences in the middle of a chunked prefill
        self.waiting: deque[int] = deque()
        self.outstanding = 0  # tokens still to process: goal - computed, summed over live and waiting
        self.busy_s = 0.0
        self.steps = 0
        self.finished: list[int] = []  # request ids finished by the last step (the caller clears it)

    @property
    def capacity_tokens(self) -> int:
        return self.total_blocks * self.bs

    def fits(self, rid: int) -> bool:
        """Whether the request can ever be held: its longest context (goal - 1 tokens) fits the KV cache."""
        return self.req.goal[rid] - 1 <= self.capacity_tokens

    @property
    def idle(self) -> bool:
        return self.n_live == 0 and not self.waiting

    # -- queue operations ---------------------------------------------------------------------------------
    def add(self, rid: int) -> None:
        self.waiting.append(rid)
        self.outstanding += self.req.goal[rid]

    def take_waiting(self) -> list[int]:
        """Remove and return the requests not running (for re-routing)."""
        out = list(self.waiting)
        self.waiting.clear()
        self.outstanding -= sum(self.req.goal[r] for r in out)
        return out

    def take_all(self) -> list[int]:
        """Stop every running request (their generated tokens kept) and return them with the waiting ones."""
        slots = np.flatnonzero(self.live)
        slots = slots[np.argsort(self.order[slots], kind="stable")]
        out = []
        for s in slots.tolist():
            self._release(s)
            self.outstanding -= int(self.goal[s])  # _release put back the computed tokens
            out.append(int(self.rid[s]))
        return out + self.take_waiting()

    def _release(self, s: int) -> None:
        """Free slot ``s`` for recompute: generated tokens saved, blocks freed, outstanding back to goal."""
        rid = int(self.rid[s])
        self.req.generated[rid] = int(self.tok[s] - self.prm[s])
        self.free_blocks += int(self.blk[s])
        self.outstanding += int(self.comp[s])
        if self.comp[s] < self.tok[s] - 1:
            self.partial -= 1
        self.live[s] = False
        self._free_slots.append(s)
        self.n_live -= 1

    def _preempt(self, s: int) -> None:
        rid = int(self.rid[s])
        self._release(s)
        self.req.preemptions[rid] += 1
        self.waiting.appendleft(rid)

    def _admit(self, rid: int, blocks: int) -> int:
        s = self._free_slots.pop()
        prompt = self.req.prompt[rid]
        self.rid[s] = rid
        self.prm[s] = prompt
        self.comp[s] = 0
        self.tok[s] = prompt + self.req.generated[rid]
        self.goal[s] = self.req.goal[rid]
        self.blk[s] = blocks
        self.order[s] = self._admitted
        self._admitted += 1
        self.live[s] = True
        self.n_live += 1
        self.free_blocks -= blocks
        return s

    def _head_need(self) -> int:
        rid = self.waiting[0]
        return self.req.prompt[rid] + self.req.generated[rid]

    def _can_admit(self, decode_blocks: int, decode_tokens: int) -> bool:
        """Whether this step could admit the head of the queue (after the decodes took their share)."""
        if not self.waiting or self.n_live >= self.max_seqs:
            return False
        need = self._head_need()
        if self.chunked:
            room = self.budget - decode_tokens
            return room > 0 and -(-min(need, room) // self.bs) <= self.free_blocks - decode_blocks
        return -(-need // self.bs) <= self.free_blocks

    # -- stepping -----------------------------------------------------------------------------------------
    def step(self, now: float, horizon: float = math.inf) -> float | None:
        """Schedule and run the next step (or run of decode steps) from ``now``; return when it ends, or None
        when there is nothing to run. State is updated at once; finished request ids go to ``finished``.
        A run of decode steps stops at the first step boundary at or after ``horizon`` (the next outside event).
        """
        if self.n_live == 0 and not self.waiting:
            return None
        if self.partial == 0 and 0 < self.n_live <= self.budget:
            slots = np.flatnonzero(self.live)
            comp = self.comp[slots]
            grow = int(np.count_nonzero(comp + 1 > self.blk[slots] * self.bs))
            if not self._can_admit(grow, self.n_live):
                end = self._decode_run(now, horizon, slots, comp)
                if end is not None:
                    return end
        return self._single_step(now)

    def _decode_run(self, now: float, horizon: float, slots: np.ndarray, comp: np.ndarray) -> float | None:
        bs, n = self.bs, len(slots)
        blk = self.blk[slots]
        tok = self.tok[slots]
        rem = self.goal[slots] - tok
        k_cap = int(rem.min())
        free = self.free_blocks

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
            k_cap = lo
        context = int(comp.sum()) + n
        first = self.timer.decode_time(n, context)
        if horizon <= now + first:
            k_cap = 1
        elif horizon != math.inf:
            k_cap = min(k_cap, int((horizon - now) / first) + 1)  # steps only grow, so this many reach it
        if k_cap <= 4:  # a short run: plain floats beat numpy's per-call cost
            k, duration, t_first = 0, 0.0, first
            step_time = first
            while True:
                duration += step_time
                k += 1
                if k == k_cap or now + duration >= horizon:
                    break
                step_time = self.timer.decode_time(n, context + k * n)
        else:
            cum = np.cumsum(self.timer.decode_run(n, context, k_cap))
            k = k_cap
            if horizon != math.inf:
                k = min(k_cap, int(np.searchsorted(cum, horizon - now, side="left")) + 1)
            duration, t_first = float(cum[k - 1]), float(cum[0])
        end = now + duration
        new_comp = comp + k
        new_blk = np.maximum(blk, (new_comp + bs - 1) // bs)
        self.free_blocks -= int((new_blk - blk).sum())
        self.blk[slots] = new_blk
        self.comp[slots] = new_comp
        self.tok[slots] = tok + k
        self.outstanding -= n * k
        self.busy_s += duration
        self.steps += k
        fresh = slots[tok == self.prm[slots]]  # a prompt's last token run as a decode: first token now
        for s in fresh.tolist():
            rid = int(self.rid[s])
            if self.req.first_token_s[rid] != self.req.first_token_s[rid]:
                self.req.first_token_s[rid] = now + t_first
        for s in slots[rem == k].tolist():
            self._finish(s, end)
        return end

    def _single_step(self, now: float) -> float | None:
        bs = self.bs
        budget = self.budget
        decodes: list[int] = []
        chunks: list[tuple[int, int]] = []  # (slot, new tokens)
        preempted = False
        prefill_first = not self.chunked and self._can_admit(0, 0)
        if self.n_live and not prefill_first:
            slots = np.flatnonzero(self.live)
            comp, tok = self.comp[slots], self.tok[slots]
            is_dec = comp == tok - 1
            if self.partial == 0 and len(slots) <= budget:
                grow = comp + 1 > self.blk[slots] * bs
                n_grow = int(np.count_nonzero(grow))
                if n_grow <= self.free_blocks:  # the common case: every decode gets its block
                    self.blk[slots[grow]] += 1
                    self.free_blocks -= n_grow
                    decodes = slots.tolist()
                    budget -= len(decodes)
            if not decodes:
                order = self.order[slots]
                dec, pre = slots[is_dec], slots[~is_dec]
                queue = (
                    dec[np.argsort(order[is_dec], kind="stable")].tolist()
                    + pre[np.argsort(order[~is_dec], kind="stable")].tolist()
                )
                i = 0
                while i < len(queue) and budget > 0:
                    s = queue[i]
                    c = int(self.comp[s])
                    new = min(int(self.tok[s]) - c, budget)
                    need = -(-(c + new) // bs) - int(self.blk[s])
                    while need > self.free_blocks:
                        victim = queue.pop()
                        self._preempt(victim)
                        preempted = True
                        if victim == s:
                            break
                    else:
                        if need > 0:
                            self.blk[s] += need
                            self.free_blocks -= need
                        if self.comp[s] == self.tok[s] - 1:
                            decodes.append(s)
                        else:
                            chunks.append((s, new))
                        budget -= new
                        i += 1
                        continue
                    break
        if not preempted and (prefill_first or self.chunked):
            first = True
            while self.waiting and budget > 0 and self.n_live < self.max_seqs:
                need = self._head_need()
                if self.chunked:
                    new = min(need, budget)
                elif first or need <= budget:
                    new = need  # whole prompts; one longer than the budget runs alone
                else:
                    break
                blocks = -(-new // bs)
                if blocks > self.free_blocks:
                    break
                rid = self.waiting.popleft()
                chunks.append((self._admit(rid, blocks), new))
                budget -= new
                first = False
        if not decodes and not chunks:
            return None
        # the batch's aggregates, then its effects
        p_tokens = p_kv = 0
        pairs = 0.0
        for s, new in chunks:
            c = int(self.comp[s])
            p_tokens += new
            pairs += new * (c + (new + 1) / 2)
            p_kv += c + new
        d_context = int(self.comp[decodes].sum()) + len(decodes) if decodes else 0
        duration = self.timer.step_time(p_tokens, len(chunks), pairs, p_kv, len(decodes), d_context)
        end = now + duration
        self.busy_s += duration
        self.steps += 1
        self.outstanding -= p_tokens + len(decodes)
        sampled = list(decodes)
        for s, new in chunks:
            self.comp[s] += new
            if self.comp[s] == self.tok[s]:
                sampled.append(s)
        if decodes:
            self.comp[decodes] += 1
        first_token = self.req.first_token_s
        for s in sampled:
            if self.tok[s] == self.prm[s]:
                rid = int(self.rid[s])
                if first_token[rid] != first_token[rid]:
                    first_token[rid] = end
            self.tok[s] += 1
            if self.tok[s] == self.goal[s]:
                self._finish(s, end)
        live = self.live
        self.partial = int(np.count_nonzero(live & (self.comp < self.tok - 1)))
        return end

    def _finish(self, s: int, end: float) -> None:
        rid = int(self.rid[s])
        self.req.generated[rid] = int(self.tok[s] - self.prm[s])
        self.req.finish_s[rid] = end
        self.outstanding -= int(self.goal[s] - self.comp[s])
        self.free_blocks += int(self.blk[s])
        self.live[s] = False
        self._free_slots.append(s)
        self.n_live -= 1
        self.finished.append(rid)
