"""``RealtimeEngine``: the simulator's engine model (``oserve.sim.Engine`` priced by ``StepTimer``) run against
the wall clock, so an emulated replica batches, queues, preempts and paces tokens as the cost model says its
replica config would.

Each virtual engine (``pp`` of them for a pipeline-parallel replica, each with ``1/pp`` of the KV blocks, sharing
the replica's stages through one ``Pipeline``, as the simulator models vLLM's virtual engines) runs one asyncio task: admit the requests that arrived, schedule one
iteration (``Engine.step``), sleep until the step's end on the virtual clock, then hand each running request
the tokens that step sampled. The virtual clock is ``speed`` times the wall clock: ``speed=100`` runs a 20 ms
step in 0.2 ms. Steps shorter than ``tick_s`` of wall time (fast models, high speeds) would cost more Python than
they emulate, so the horizon given to ``Engine.step`` is one tick ahead: a run of pure-decode steps that ends
within the tick is computed in one call and its tokens delivered together at its end (pacing stays exact at
the tick's granularity; a step longer than the tick is always alone). ``tick_s=0`` steps one iteration at a
time. Back-to-back steps start where the
previous one ended in virtual time, so a loop that falls behind the wall clock catches up instead of losing
throughput. Request ids are recycled once their engine has delivered their last step, so a long-running
server's per-request lists stay as long as its peak concurrency.

With ``enable_prefix_caching`` (the default, as vLLM's) each virtual engine caches prefixes as the simulator does
(``sim.prefix_cache``), from the chained hashes of each request's ``block_size``-token prompt blocks given to
``submit``; ``prefix_cache_queries`` / ``prefix_cache_hits`` count tokens as vLLM's counters do.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from oserve.errors import ConfigError
from oserve.perf.calibration import Calibration
from oserve.perf.costmodel import CostModel
from oserve.sim.engine import Engine, Requests
from oserve.sim.pipeline import Pipeline
from oserve.sim.prefix_cache import PrefixCache
from oserve.sim.timing import StepTimer
from oserve.spec.model import ModelSpec
from oserve.spec.replica import ReplicaConfig

__all__ = ["DEFAULT_TICK_S", "Generation", "RealtimeEngine"]

DEFAULT_TICK_S = 0.002  # wall seconds: decode steps that end within one tick are run (and delivered) together


@dataclass(slots=True, eq=False)
class Generation:
    """One request in flight: the tokens it will produce and a queue of the counts each step sampled."""

    rid: int
    engine: int
    prompt_tokens: int
    output_tokens: int
    arrival_s: float  # wall clock (time.monotonic)
    emitted: int = 0
    first_token_s: float = math.nan
    finish_s: float = math.nan
    tokens: asyncio.Queue[int] = field(default_factory=asyncio.Queue)

    @property
    def done(self) -> bool:
        return self.emitted >= self.output_tokens


class RealtimeEngine:
    """One emulated replica's schedulers on the wall clock. ``start()`` inside a running loop, ``submit()``
    requests, read ``Generation.tokens``; ``abort()`` a request whose client left; ``stop()`` at shutdown."""

    def __init__(
        self,
        model: ModelSpec,
        config: ReplicaConfig,
        *,
        speed: float = 1.0,
        tick_s: float = DEFAULT_TICK_S,
        calibration: Calibration | None = None,
        chunked_prefill: bool = True,
    ) -> None:
        if not speed > 0 or not math.isfinite(speed):
            raise ConfigError(f"speed must be a positive number, got {speed}")
        if not 0 <= tick_s < 1:
            raise ConfigError(f"tick must be in [0, 1) seconds, got {tick_s}")
        cost = CostModel(model, config, calibration)
        if not cost.fits:
            raise ConfigError(f"{model.name} on {config.label}: {cost.unfit_reason}")
        self.model, self.config, self.speed = model, config, speed
        self._tick_virtual_s = tick_s * speed
        self.max_model_len = cost.memory.max_model_len
        timer = StepTimer(cost)
        caching = config.enable_prefix_caching
        self.req = Requests([], [], [], [], [], [], [], [] if caching else None)
        blocks = cost.kv_capacity_tokens // config.block_size // config.pp
        pipeline = Pipeline(cost) if config.pp > 1 else None  # the stages the virtual engines' batches share
        self.engines = [
            Engine(
                timer,
                self.req,
                kv_blocks=blocks,
                block_size=config.block_size,
                max_num_seqs=config.max_num_seqs,
                max_num_batched_tokens=config.max_num_batched_tokens,
                chunked_prefill=chunked_prefill,
                pipeline=pipeline,
                prefix_cache=PrefixCache(config.block_size, config.block_size) if caching else None,
            )
            for _ in range(config.pp)
        ]
        self.capacity_tokens = blocks * config.block_size  # per virtual engine
        self._gens: dict[int, Generation] = {}
        self._free_rids: list[int] = []
        self._arrived: list[list[int]] = [[] for _ in self.engines]
        self._retired: list[list[int]] = [[] for _ in self.engines]  # rids to recycle after the next delivery
        self._wake = [asyncio.Event() for _ in self.engines]
        self._tasks: list[asyncio.Task[None]] = []
        self._t0 = time.monotonic()
        self.preemptions = 0  # of requests that finished or were aborted
        self._remote: set[int] = set()  # arrived rids whose prompt KV came from a prefill replica
        self.recomputed = 0  # of them, prefilled here after all (no room to adopt them)

    # -- clock ----------------------------------------------------------------------------------------------
    def _virtual_now(self) -> float:
        return (time.monotonic() - self._t0) * self.speed

    # -- requests -------------------------------------------------------------------------------------------
    def fits(self, prompt_tokens: int, output_tokens: int) -> str | None:
        """Why the request can never run here (None when it can): context length or KV capacity."""
        total = prompt_tokens + output_tokens
        if total > self.max_model_len:  # vLLM's wording (``serving_engine._validate_input``)
            return (
                f"This model's maximum context length is {self.max_model_len} tokens. However, you requested "
                f"{total} tokens ({prompt_tokens} in the messages, {output_tokens} in the completion). Please "
                "reduce the length of the messages or completion."
            )
        if total - 1 > self.capacity_tokens:
            return f"the request needs {total} tokens of KV cache; the replica holds {self.capacity_tokens}"
        return None

    @property
    def caching(self) -> bool:
        """Whether the engines cache prefixes (so ``submit`` wants the prompt's block hashes)."""
        return self.req.hashes is not None

    @property
    def prefix_cache_queries(self) -> int:
        """Prompt tokens looked up in the prefix cache so far (vLLM's ``prefix_cache_queries``)."""
        return sum(e.cache.queries for e in self.engines if e.cache is not None)

    @property
    def prefix_cache_hits(self) -> int:
        """Of them, tokens found cached (vLLM's ``prefix_cache_hits``)."""
        return sum(e.cache.hits for e in self.engines if e.cache is not None)

    def submit(
        self, prompt_tokens: int, output_tokens: int, hashes: Sequence[int] = (), *, remote_kv: bool = False
    ) -> Generation:
        """Queue a request of ``prompt_tokens`` that will produce exactly ``output_tokens`` (check ``fits``);
        ``hashes``: its prompt's chained ``block_size``-token block hashes, for the prefix cache. ``remote_kv``:
        the prompt's KV arrived from a prefill replica, so the engine adopts it computed (all but the last
        prompt token, whose step samples the first output token) instead of prefilling; with no slot or blocks
        free it prefills after all (recompute), as ``sim.disagg`` does."""
        req = self.req
        if self._free_rids:
            rid = self._free_rids.pop()
            req.prompt[rid], req.goal[rid] = prompt_tokens, prompt_tokens + output_tokens
            req.generated[rid], req.preemptions[rid] = 0, 0
            req.first_token_s[rid] = req.finish_s[rid] = math.nan
            req.cached[rid] = -1
            if req.hashes is not None:
                req.hashes[rid] = list(hashes)
        else:
            rid = len(req.prompt)
            req.prompt.append(prompt_tokens)
            req.goal.append(prompt_tokens + output_tokens)
            req.generated.append(0)
            req.first_token_s.append(math.nan)
            req.finish_s.append(math.nan)
            req.preemptions.append(0)
            req.cached.append(-1)
            if req.hashes is not None:
                req.hashes.append(list(hashes))
        e = 0
        if len(self.engines) > 1:  # the virtual engine with the least work, as the simulator routes within PP
            e = min(
                range(len(self.engines)), key=lambda i: self.engines[i].outstanding + len(self._arrived[i])
            )
        gen = Generation(rid, e, prompt_tokens, output_tokens, time.monotonic())
        self._gens[rid] = gen
        self._arrived[e].append(rid)
        if remote_kv:
            self._remote.add(rid)
        self._wake[e].set()
        return gen

    def abort(self, gen: Generation) -> None:
        """Drop a request that will not be read any more (client gone); a finished one is a no-op."""
        if self._gens.get(gen.rid) is not gen:
            return
        del self._gens[gen.rid]
        arrived = self._arrived[gen.engine]
        if gen.rid in arrived:
            arrived.remove(gen.rid)
            self._remote.discard(gen.rid)
            self._free_rids.append(gen.rid)
            return
        if self.engines[gen.engine].abort(gen.rid):  # else it finished in the step not yet delivered
            self.preemptions += self.req.preemptions[gen.rid]
            self._retired[gen.engine].append(gen.rid)

    # -- load -----------------------------------------------------------------------------------------------
    @property
    def num_running(self) -> int:
        return sum(e.n_live for e in self.engines)

    @property
    def num_waiting(self) -> int:
        return sum(len(e.waiting) for e in self.engines) + sum(len(a) for a in self._arrived)

    @property
    def kv_usage(self) -> float:
        """Fraction of KV blocks in use, 0..1."""
        total = sum(e.total_blocks for e in self.engines)
        return 1.0 - sum(e.free_blocks for e in self.engines) / total if total else 0.0

    @property
    def steps(self) -> int:
        """Engine iterations run so far."""
        return sum(e.steps for e in self.engines)

    @property
    def num_in_flight(self) -> int:
        return len(self._gens)

    # -- loop -----------------------------------------------------------------------------------------------
    def start(self) -> None:
        if not self._tasks:
            self._t0 = time.monotonic()
            self._tasks = [asyncio.create_task(self._run(i)) for i in range(len(self.engines))]

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._tasks = []

    async def _run(self, index: int) -> None:
        eng = self.engines[index]
        arrived, wake = self._arrived[index], self._wake[index]
        end = -math.inf  # virtual time the last step ended
        while True:
            if arrived:
                for rid in arrived:
                    if rid not in self._remote:
                        eng.add(rid)
                        continue
                    self._remote.discard(rid)
                    if not eng.adopt(rid):
                        self.recomputed += 1
                        eng.add(rid)
                arrived.clear()
            start = end if end > -math.inf else self._virtual_now()  # busy: back to back
            # the horizon one tick ahead: one iteration, or a run of decode steps ending within the tick
            step_end = None if eng.idle else eng.step(start, start + self._tick_virtual_s)
            if step_end is None:
                wake.clear()
                end = -math.inf
                await wake.wait()
                continue
            end = step_end
            delay_s = (end - self._virtual_now()) / self.speed
            await asyncio.sleep(delay_s if delay_s > 0 else 0)
            self._deliver(index, eng)

    def _deliver(self, index: int, eng: Engine) -> None:
        """Hand each request the tokens the last step sampled; retire the finished ones."""
        gens = self._gens
        wall = time.monotonic()
        if eng.n_live:
            slots = np.flatnonzero(eng.live)
            made = (eng.tok[slots] - eng.prm[slots]).tolist()
            for rid, n in zip(eng.rid[slots].tolist(), made, strict=True):
                gen = gens.get(rid)
                if gen is not None and n > gen.emitted:
                    self._emit(gen, n, wall)
        retired = self._retired[index]
        for rid in eng.finished:
            gen = gens.pop(rid, None)
            if gen is not None:
                self._emit(gen, self.req.generated[rid], wall)
                gen.finish_s = wall
            self.preemptions += self.req.preemptions[rid]
            retired.append(rid)
        eng.finished.clear()
        if retired:
            self._free_rids.extend(retired)
            retired.clear()

    @staticmethod
    def _emit(gen: Generation, total: int, wall: float) -> None:
        if gen.emitted == 0:
            gen.first_token_s = wall
        gen.tokens.put_nowait(total - gen.emitted)
        gen.emitted = total
