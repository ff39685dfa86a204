"""Capacity mu: the request rate one replica config sustains on one request type within the SLO.

A steady-state model of continuous batching with chunked prefill, one PP virtual engine at a time (a replica
with ``pp`` stages has ``pp`` engines, each with ``1/pp`` of the KV cache, as the simulator models it).

Parametrised by the mean decode batch ``d`` (sequences decoding in a step), everything is closed form:

- each request costs its prefill once, ``dP(d)`` = the extra step time its prompt chunks add to a batch of
  ``d`` decodes, and ``O - 1`` decode steps; so the mean step is ``t(d) = T_dec(d) + d * dP(d) / (O - 1)`` and,
  by Little's law on the decoding sequences, the rate is ``lam(d) = d / ((O - 1) * t(d))``;
- a request's TPOT is the mean of its own decode steps, among which land Poisson(``d``) prefills: the SLO is held
  at ``d + tail_z * sqrt(d / (1 - rho))`` of them (``tail_z`` 1.28: the 90th percentile; ``rho`` the share of
  time spent on prefills, whose bursts stretch a request's window); TTFT is a residual step plus the
  steps that carry the prompt's chunks;
- the sequences in the system ``N = lam * (TTFT + (O - 1) * t)`` are Poisson at steady state (an M/G/inf
  population), so ``N + z * sqrt(N)`` must stay within ``max_num_seqs`` and its tokens within the KV cache,
  else requests queue and TTFT explodes; the mean tokens per step must fit ``max_num_batched_tokens``.

Every constraint grows with ``d``, so mu is ``lam`` at the largest ``d`` that meets them all; ``limit`` names
the constraint that stopped it. ``benchmarks/capacity_accuracy.py`` checks mu against the simulator.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from oserve.perf import Calibration, CostModel
from oserve.planner.slo import Slo
from oserve.sim.timing import StepTimer
from oserve.spec import ModelSpec, ReplicaConfig

__all__ = ["Capacity", "CapacityModel"]

_FRACTIONAL_BATCHES = (0.05, 0.1, 0.25, 0.5)


@dataclass(frozen=True, slots=True)
class Capacity:
    """mu for one (type, config): ``rate_rps`` for the whole replica and what limits it.

    ``limit`` is one of ``tpot``, ``ttft``, ``e2e``, ``max_seqs``, ``kv``, ``token_budget`` (the binding constraint
    at mu), ``batch`` (the decode batch reached ``max_num_seqs`` with every SLO met), or ``unfit`` /
    ``slo`` when the replica cannot serve the type at all (model does not fit; SLO missed even unloaded).
    ``step_s``, ``ttft_s`` and ``batch`` are the model's steady state at mu (per PP engine).
    """

    rate_rps: float
    limit: str
    step_s: float = math.nan
    ttft_s: float = math.nan
    batch: float = 0.0

    @property
    def serves(self) -> bool:
        return self.rate_rps > 0


@dataclass(frozen=True, slots=True)
class _Point:
    lam: float
    step_s: float
    ttft_s: float
    batch: float
    violated: str | None


class CapacityModel:
    """mu(type, config) for one model and SLO, memoised per (config, prompt, output)."""

    def __init__(
        self,
        model: ModelSpec,
        slo: Slo,
        calibration: Calibration | None = None,
        *,
        headroom_z: float = 1.65,
        tail_z: float = 1.28,
    ) -> None:
        self.model, self.slo, self.calibration = model, slo, calibration
        self.headroom_z, self.tail_z = headroom_z, tail_z
        self._timers: dict[ReplicaConfig, StepTimer] = {}
        self._cache: dict[tuple[ReplicaConfig, int, int], Capacity] = {}

    def timer(self, config: ReplicaConfig) -> StepTimer:
        t = self._timers.get(config)
        if t is None:
            t = self._timers[config] = StepTimer(CostModel(self.model, config, self.calibration))
        return t

    def capacity(self, config: ReplicaConfig, prompt_tokens: float, output_tokens: float) -> Capacity:
        """mu of ``config`` on requests of these mean lengths (tokens)."""
        key = (config, max(1, round(prompt_tokens)), max(1, round(output_tokens)))
        cap = self._cache.get(key)
        if cap is None:
            cap = self._cache[key] = self._solve(config, key[1], key[2])
        return cap

    def unloaded(
        self, config: ReplicaConfig, prompt_tokens: float, output_tokens: float
    ) -> tuple[float, float]:
        """(TTFT, TPOT) of a lone request on an idle replica: the latency floor the SLO must clear."""
        timer = self.timer(config)
        p, o = max(1, round(prompt_tokens)), max(1, round(output_tokens))
        ttft = sum(
            timer.step_time(c, 1, _pairs(c, b), b + c, 0, 0)
            for c, b in _chunks(p, config.max_num_batched_tokens)
        )
        return ttft, timer.decode_time(1, p + o // 2)

    # -- the model -----------------------------------------------------------------------------------------
    def _solve(self, config: ReplicaConfig, prompt: int, output: int) -> Capacity:
        timer = self.timer(config)
        cm = timer.cost_model
        if not cm.fits:
            return Capacity(0.0, "unfit")
        ttft0, tpot0 = self.unloaded(config, prompt, output)
        if ttft0 > self.slo.ttft_s or (output > 1 and tpot0 > self.slo.tpot_s):
            return Capacity(0.0, "slo", tpot0, ttft0)
        kv_tokens = cm.kv_capacity_tokens // config.pp
        grid = (*_FRACTIONAL_BATCHES, *range(1, config.max_num_seqs + 1))

        def point(i: int) -> _Point:
            return self._point(timer, config, prompt, output, grid[i], kv_tokens)

        # every constraint grows with the decode batch: binary-search the last feasible grid point
        lo, hi = -1, len(grid)  # grid[lo] feasible (or none), grid[hi] infeasible (or past the end)
        limit = "batch"
        while hi - lo > 1:
            mid = (lo + hi) // 2
            p = point(mid)
            if p.violated:
                hi, limit = mid, p.violated
            else:
                lo = mid
        if lo < 0:
            return Capacity(0.0, limit, tpot0, ttft0)
        best = point(lo)
        return Capacity(best.lam * config.pp, limit, best.step_s, best.ttft_s, best.batch)

    def _point(
        self, timer: StepTimer, config: ReplicaConfig, prompt: int, output: int, d: float, kv_tokens: int
    ) -> _Point:
        """The steady state with ``d`` sequences decoding per step (one PP engine)."""
        budget = config.max_num_batched_tokens
        decodes = max(1, round(d))
        context = prompt + output / 2.0
        t_dec = timer.decode_time(decodes, round(decodes * context))
        steps = 0.0  # the prompt's steps, each with the decode batch beside it
        for chunk, before in _chunks(prompt, max(1, budget - decodes)):
            steps += timer.step_time(
                chunk, 1, _pairs(chunk, before), before + chunk, decodes, round(decodes * context)
            )
        d_prefill = steps - t_dec * math.ceil(prompt / max(1, budget - decodes))
        decode_steps = max(output - 1, 1)
        t = t_dec + d * d_prefill / decode_steps
        lam = d / (decode_steps * t)
        # a request's TPOT averages its own decode steps; the prefills landing among them are Poisson with mean
        # d, so its tail TPOT sees d + z * sqrt(d) of them
        busy = min(
            0.99, lam * d_prefill
        )  # fraction of time spent on prefills: bursts of them stretch windows
        tpot_tail = t_dec + (d + self.tail_z * math.sqrt(d / (1.0 - busy))) * d_prefill / decode_steps
        ttft = t + steps
        in_system = d + lam * ttft
        headroom = in_system + self.headroom_z * math.sqrt(in_system)
        slo = self.slo
        violated = None
        if output > 1 and tpot_tail > slo.tpot_s:
            violated = "tpot"
        elif ttft > slo.ttft_s:
            violated = "ttft"
        elif slo.e2e_s is not None and ttft + (output - 1) * t > slo.e2e_s:
            violated = "e2e"
        elif headroom > config.max_num_seqs:
            violated = "max_seqs"
        elif headroom * (context + config.block_size / 2) > kv_tokens:
            violated = "kv"
        elif d + lam * t * prompt > budget:
            violated = "token_budget"
        return _Point(lam, t, ttft, d, violated)


def _chunks(prompt: int, budget: int) -> list[tuple[int, int]]:
    """A prompt's prefill chunks ``(tokens, context_before)`` under a per-step token budget."""
    out, done = [], 0
    while done < prompt:
        chunk = min(budget, prompt - done)
        out.append((chunk, done))
        done += chunk
    return out


def _pairs(chunk: int, before: int) -> float:
    return chunk * (before + (chunk + 1) / 2)
