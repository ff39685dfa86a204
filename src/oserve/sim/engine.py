"""One replica's engine as vLLM v1 schedules it: continuous batching, chunked prefill, paged KV, preemption.

A step spends the token budget (``max_num_batched_tokens``) on the running requests first — decodes one token
each, then continuing prefill chunks — and then admits waiting requests first come, first served, while fewer
than ``max_num_seqs`` run. KV is held in ``block_size``-token blocks; a request holds blocks for its computed
tokens plus the step's new ones. When a running request cannot get a block, the last admitted running request is
preempted by recompute (blocks freed, put back at the head of the queue, its prompt and generated tokens
prefilled again later), as ``vllm/v1/core/sched/scheduler.py`` does; no admissions happen in a step that
preempted. ``chunked_prefill=False`` is prefill-first (vLLM v0's default): a step runs whole prompts only, and
decodes run when no waiting request can be admitted.

With a ``PrefixCache`` an admitted request's longest cached prefix counts as computed, its blocks shared, not
taken from the pool; prefills cache their blocks, kept when freed until the pool needs them (``sim.prefix_cache``).

Runs of pure-decode steps with nothing to change the batch (no admission possible, no finish, enough blocks, no
outside event) are advanced in one call: their step times come from ``StepTimer.decode_run``; a ``DecodeRun``
carries one past the arrivals routed elsewhere (see ``decode_run``). A PP virtual engine (``pipeline`` given)
books each step's batch through the replica's stages behind the other virtual engines' (``Pipeline``), and runs
decode steps in a run only while no prefill is in the pipeline (see ``sim.pipeline``).

Per-sequence state lives in numpy slot arrays (one slot per running sequence) and the shared ``Requests``
lists; nothing here is an object per request.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np

from oserve.sim.decode_run import DecodeRun, Horizon
from oserve.sim.pipeline import Pipeline
from oserve.sim.prefix_cache import CachedPrefixes, PrefixCache
from oserve.sim.requests import Requests
from oserve.sim.timing import StepTimer

__all__ = ["Engine", "Requests"]


class Engine(CachedPrefixes):
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
        pipeline: Pipeline | None = None,
        prefix_cache: PrefixCache | None = None,
    ) -> None:
        self.timer = timer
        self.cache = prefix_cache
        self.pipeline = pipeline
        self.last_prefill = (
            False  # the last step ran prefill tokens (a PP replica's siblings then step singly)
        )
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
        if prefix_cache is not None:
            self.held: list[list[int]] = [[] for _ in range(cap)]  # block hashes each slot holds in the cache
            self.units = [0] * cap  # hash blocks of the slot's prompt looked up or scheduled so far
        self._free_slots = list(range(cap - 1, -1, -1))
        self._admitted = 0
        self.n_live = 0
        self.partial = 0  # running sequences in the middle of a chunked prefill
        self.waiting: deque[int] = deque()
        self.waiting_tokens = 0  # tokens the waiting requests must prefill (prompt + generated), summed
        self.outstanding = 0  # tokens still to process: goal - computed, summed over live and waiting
        self.busy_s = 0.0
        self.steps = 0
        self.finished: list[int] = []  # request ids finished by the last step (the caller clears it)
        self.run: DecodeRun | None = None  # the decode run in flight, if any

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
        self.waiting_tokens += self.req.prompt[rid] + self.req.generated[rid]
        self.outstanding += self.req.goal[rid]

    def take_waiting(self) -> list[int]:
        """Remove and return the requests not running (for re-routing)."""
        out = list(self.waiting)
        self.waiting.clear()
        self.waiting_tokens = 0
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

    # -- migration (see ``sim.migration``) -----------------------------------------------------------------
    def kv_free_blocks(self) -> int:
        """Free blocks as of the step in flight, counting the growth of a decode run not yet written."""
        run = self.run
        if run is None or run.applied:
            return self.free_blocks
        grown = np.maximum(run.blk0, (run.comp0 + run.ks[run.ptr] + self.bs - 1) // self.bs) - run.blk0
        return self.free_blocks - int(grown.sum())

    def remove_waiting(self, rid: int) -> None:
        """Take one waiting request out of the queue (to run elsewhere)."""
        self.waiting.remove(rid)
        self.waiting_tokens -= self.req.prompt[rid] + self.req.generated[rid]
        self.outstanding -= self.req.goal[rid]

    def decoding_slot(self, rid: int) -> int:
        """The slot of running request ``rid`` when it is decoding (first token sampled), else -1."""
        hit = np.flatnonzero(self.live & (self.rid == rid))
        if not len(hit):
            return -1
        s = int(hit[0])
        return s if self.comp[s] == self.tok[s] - 1 and self.tok[s] > self.prm[s] else -1

    def shortest_decoding(self, exclude: set[int]) -> tuple[int, int]:
        """(request id, blocks held) of the decoding request with the shortest context not in ``exclude``
        (Llumnix's SR choice: the least KV to copy), or (-1, 0)."""
        live = self.live & (self.comp == self.tok - 1) & (self.tok > self.prm)
        for s in np.flatnonzero(live)[np.argsort(self.tok[live], kind="stable")].tolist():
            rid = int(self.rid[s])
            if rid not in exclude:
                return rid, int(self.blk[s])
        return -1, 0

    def migrate_out(self, s: int) -> None:
        """Stop running slot ``s`` for a move; its KV leaves with it (generated tokens kept)."""
        self._release(s)
        self.outstanding -= int(self.goal[s])

    def adopt(self, rid: int) -> bool:
        """Run request ``rid`` here with its KV already computed (all tokens but the last sampled one); False
        when no sequence slot or blocks are free."""
        tok = self.req.prompt[rid] + self.req.generated[rid]
        blocks = -(-(tok - 1) // self.bs)
        if self.n_live >= self.max_seqs or blocks > self.free_blocks:
            return False
        s = self._admit(rid, blocks)
        self.comp[s] = tok - 1
        self.outstanding += self.req.goal[rid] - tok + 1
        if self.cache is not None:
            self._trim()
        return True

    def abort(self, rid: int) -> bool:
        """Drop request ``rid`` (its client went away), waiting or running, as vLLM's ``finish_requests`` does:
        blocks freed, nothing recorded. False when the engine does not hold it. Not during an unapplied decode
        run (the live runtime steps one iteration at a time, so its runs are always applied)."""
        if self.run is not None and not self.run.applied:
            raise RuntimeError("abort during a decode run that is not applied")
        if rid in self.waiting:
            self.remove_waiting(rid)
            return True
        hit = np.flatnonzero(self.live & (self.rid == rid))
        if len(hit) == 0:
            return False
        s = int(hit[0])
        self._release(s)
        self.outstanding -= int(self.goal[s])  # _release put back the computed tokens
        return True

    def _release(self, s: int) -> None:
        """Free slot ``s`` for recompute: generated tokens saved, blocks freed, outstanding back to goal."""
        rid = int(self.rid[s])
        self.req.generated[rid] = int(self.tok[s] - self.prm[s])
        if self.cache is None:
            self.free_blocks += int(self.blk[s])
        else:
            self._free_cached(s)
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
        self.waiting_tokens += self.req.prompt[rid] + self.req.generated[rid]

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
        if self.cache is not None:
            self.held[s] = []
            self.units[s] = 0
        return s

    def _head_need(self) -> int:
        rid = self.waiting[0]
        return self.req.prompt[rid] + self.req.generated[rid]

    def _can_admit(self, decode_blocks: int, decode_tokens: int) -> bool:
        """Whether this step could admit the head of the queue (after the decodes took their share)."""
        if not self.waiting or self.n_live >= self.max_seqs:
            return False
        need = self._head_need()
        hit, shared, _ = self._head_hit(need)
        if self.chunked:
            room = self.budget - decode_tokens
            blocks = -(-(hit + min(need - hit, room)) // self.bs) - shared
            return room > 0 and blocks <= self.free_blocks - decode_blocks
        return -(-need // self.bs) - shared <= self.free_blocks

    # -- stepping -----------------------------------------------------------------------------------------
    def step(self, now: float, horizon: float = math.inf, later: Horizon | None = None) -> float | None:
        """Schedule and run the next step (or run of decode steps) from ``now``; return when it ends, or None
        when there is nothing to run. State is updated at once; finished request ids go to ``finished``.
        A run of decode steps stops at the first step boundary at or after ``horizon`` (the next outside event).
        With ``later`` it goes on past the arrivals that follow (``DecodeRun``): the time returned is then a lower
        bound of its end while ``self.run.final`` is False, and the caller moves the run's clock with
        :meth:`advance`, finishes it with :meth:`complete` and cuts it with :meth:`cut`.
        """
        if self.run is not None:  # the previous run ended at ``now``
            self._end_run()
        self.last_prefill = False
        if self.n_live == 0 and not self.waiting:
            return None
        pipe = self.pipeline
        if (
            self.partial == 0
            and 0 < self.n_live <= self.budget
            and (pipe is None or pipe.prefill_until_s <= now)
        ):
            slots = self.live.nonzero()[0]
            comp, blk = self.comp[slots], self.blk[slots]
            # the head of the queue could join (_can_admit, its decode blocks counted only when it may)
            admit = (
                bool(self.waiting)
                and self.n_live < self.max_seqs
                and self._can_admit(int(np.count_nonzero(comp >= blk * self.bs)), self.n_live)
            )
            if not admit:
                run = DecodeRun.start(self, now, horizon, slots, comp, blk, later)
                if run is not None:
                    self.run = run
                    self.outstanding -= run.n * run.ks[0]
                    fresh = slots[run.tok0 == self.prm[slots]]  # a prompt's last token run as a decode
                    for s in fresh.tolist():
                        rid = int(self.rid[s])
                        if self.req.first_token_s[rid] != self.req.first_token_s[rid]:
                            self.req.first_token_s[rid] = now + run.t_first
                    if run.final:
                        self._apply_run()
                        return run.ends[0]
                    return run.lower_bound_s()
        return self._single_step(now)

    def advance(self, t: float) -> bool:
        """Move a decode run's clock to ``t``, computing its chunks up to the one in flight (the first ending at
        or after ``t``), whose effects become visible. True when the outstanding tokens or the batch changed."""
        run = self.run
        if run is None or run.applied:
            return False
        while not run.final and run.ends[-1] < t:
            run.extend()
        ends, p, last = run.ends, run.ptr, len(run.ends) - 1
        while p < last and ends[p] < t:
            p += 1
        return self._move(p)

    def complete(self) -> float:
        """Compute the rest of the decode run (its clock stays); return when it ends."""
        run = self.run
        while not run.final:
            run.extend()
        self._move(run.ptr)
        return run.ends[-1]

    def cut(self) -> float | None:
        """End the decode run at the chunk in flight (call :meth:`advance` first); return when it now ends."""
        run = self.run
        if run is None or run.applied:
            return None
        run.truncate()
        self._apply_run()
        return run.ends[-1]

    def _end_run(self) -> None:
        run = self.run
        if not run.applied:  # driven without advance (a standalone engine): the run is over
            run.final = True
            del run.ends[run.ptr + 1 :], run.ks[run.ptr + 1 :], run.durs[run.ptr + 1 :]
            self._apply_run()
        self.run = None

    def _move(self, p: int) -> bool:
        run = self.run
        changed = p != run.ptr
        if changed:
            self.outstanding -= run.n * (run.ks[p] - run.ks[run.ptr])
            run.ptr = p
        if run.final and p == len(run.ends) - 1 and not run.applied:
            self._apply_run()
            return True
        return changed

    def _apply_run(self) -> None:
        """Write the run's effects into the slot arrays (the outstanding count already follows the clock)."""
        run = self.run
        k = run.ks[-1]
        slots = run.slots
        new_comp = run.comp0 + k
        new_blk = np.maximum(run.blk0, (new_comp + (self.bs - 1)) // self.bs)
        self.free_blocks -= int(np.add.reduce(new_blk - run.blk0))
        if self.cache is not None:
            self._trim()
        self.blk[slots] = new_blk
        self.comp[slots] = new_comp
        self.tok[slots] = run.tok0 + k
        for duration in run.durs:  # summed chunk by chunk, as the steps were
            self.busy_s += duration
        self.steps += k
        run.applied = True
        if k == run.rem_min:
            end = run.ends[-1]
            for s in slots[run.rem0 == k].tolist():
                self._finish(s, end)

    def _single_step(self, now: float) -> float | None:
        bs = self.bs
        budget = self.budget
        decodes: list[int] = []
        dec_slots = None  # ``decodes`` as an array, when it is every running slot
        chunks: list[tuple[int, int]] = []  # (slot, new tokens)
        preempted = False
        every = False  # every running slot decodes this step (``comp`` then stays theirs until they sample)
        prefill_first = not self.chunked and self._can_admit(0, 0)
        if self.n_live and not prefill_first:
            slots = self.live.nonzero()[0]
            comp = self.comp[slots]
            if self.partial == 0 and len(slots) <= budget:
                grow = comp >= self.blk[slots] * bs  # comp + 1 > blocks * bs: the step's token needs a block
                n_grow = int(np.count_nonzero(grow))
                if n_grow <= self.free_blocks:  # the common case: every decode gets its block
                    if n_grow:
                        self.blk[slots[grow]] += 1
                    self.free_blocks -= n_grow
                    if self.cache is not None:
                        self._trim()
                    decodes, dec_slots, every = slots.tolist(), slots, True
                    budget -= len(decodes)
            if not decodes:
                is_dec = comp == self.tok[slots] - 1
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
                            if self.cache is not None:
                                self._trim()
                        if self.comp[s] == self.tok[s] - 1:
                            decodes.append(s)
                        else:
                            chunks.append((s, new))
                        budget -= new
                        i += 1
                        continue
                    break
        cache = self.cache
        if not preempted and (prefill_first or self.chunked):
            first = True
            while self.waiting and budget > 0 and self.n_live < self.max_seqs:
                need = self._head_need()
                hit, shared, units = self._head_hit(need)
                todo = need - hit
                if self.chunked:
                    new = min(todo, budget)
                elif first or todo <= budget:
                    new = todo  # whole prompts; one longer than the budget runs alone
                else:
                    break
                blocks = -(-(hit + new) // bs)
                if blocks - shared > self.free_blocks:
                    break
                rid = self.waiting.popleft()
                self.waiting_tokens -= need
                s = self._admit(rid, blocks)
                if cache is not None:
                    self._take_hit(s, rid, units, need, shared)
                chunks.append((s, new))
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
            if cache is not None:
                self._register(s, c + new)
        if decodes and dec_slots is None:
            dec_slots = np.array(decodes, np.int64)
        d_context = (
            int(np.add.reduce(comp if every else self.comp[dec_slots])) + len(decodes) if decodes else 0
        )
        duration = self.timer.step_time(p_tokens, len(chunks), pairs, p_kv, len(decodes), d_context)
        if self.pipeline is None:
            end = now + duration
        else:  # through the stages, behind the other virtual engines' micro-batches
            end = self.pipeline.schedule(now, duration, p_tokens + len(decodes), p_tokens > 0)
            self.last_prefill = p_tokens > 0
        self.busy_s += duration
        self.steps += 1
        self.outstanding -= p_tokens + len(decodes)
        sampled = list(decodes)
        for s, new in chunks:
            self.comp[s] += new
            if self.comp[s] == self.tok[s]:
                sampled.append(s)
        if every:
            self.comp[dec_slots] = comp + 1
        elif decodes:
            self.comp[dec_slots] += 1
        if sampled:  # each samples a token: first tokens, then the finished, in batch order
            idx = dec_slots if len(sampled) == len(decodes) else np.array(sampled, np.int64)
            tok = self.tok[idx]
            first_token = self.req.first_token_s
            for s in idx[tok == self.prm[idx]].tolist():
                rid = int(self.rid[s])
                if first_token[rid] != first_token[rid]:
                    first_token[rid] = end
            tok += 1
            self.tok[idx] = tok
            for s in idx[tok == self.goal[idx]].tolist():
                self._finish(s, end)
        live = self.live
        if every:  # the decodes still decode (or finished): only a prefill chunk can be left mid-prompt
            c, t = self.comp, self.tok
            self.partial = sum(1 for s, _ in chunks if live[s] and c[s] < t[s] - 1)
        else:
            self.partial = int(np.count_nonzero(live & (self.comp < self.tok - 1)))
        return end

    def _finish(self, s: int, end: float) -> None:
        rid = int(self.rid[s])
        self.req.generated[rid] = int(self.tok[s] - self.prm[s])
        self.req.finish_s[rid] = end
        self.outstanding -= int(self.goal[s] - self.comp[s])
        if self.cache is None:
            self.free_blocks += int(self.blk[s])
        else:
            self._free_cached(s)
        self.live[s] = False
        self._free_slots.append(s)
        self.n_live -= 1
        self.finished.append(rid)
