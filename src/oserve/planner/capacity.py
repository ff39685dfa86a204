"""Capacity mu: the request rate one replica config sustains on one request type within the SLO.

A steady-state model of continuous batching with chunked prefill, one PP virtual engine at a time (a replica
with ``pp`` stages has ``pp`` engines, each with ``1/pp`` of the KV cache, as the simulator models it). A type is a
sample of its requests' (prompt, output) lengths (or one pair), because the spread inside a type — a few long
prompts, many one-token outputs — decides its tail latency as much as the means do.

Parametrised by the mean decode batch ``d`` (sequences decoding in a step), everything is closed form:

- a request ``i`` costs its prefill once, ``dP_i(d)`` = the extra step time its prompt chunks add to a batch of
  ``d`` decodes, and ``s_i = O_i - 1`` decode steps; so the mean step is ``t(d) = T_dec(d) + d * E[dP] / E[s]``
  and, by Little's law on the decoding sequences, the rate is ``lam(d) = d / (E[s] * t(d))``;
- the mean step is the cost model's time of ``d`` decodes beside Poisson(``kappa = d / E[s]``) prefills of the
  mean prompt (exact per prefill count: the GEMMs bend from memory- to compute-bound);
- request ``i``'s TPOT averages its own ``s_i`` steps, among which land Poisson(``kappa * s_i / (1 - rho)``)
  prefills (``rho`` the share of time spent on prefills, whose bursts stretch windows): it meets the TPOT SLO
  when they fit the room the SLO leaves above a pure decode step, ``(tpot - T_dec) * s_i / E[dP]``;
  its TTFT is a residual step plus the steps that carry its prompt's chunks; the type meets the SLO when the
  expected share of requests meeting every target is at least ``attainment`` (0.9, as the simulator scores);
- the sequences in the system ``N = lam * E[TTFT] + d`` are Poisson at steady state (an M/G/inf population), so
  ``N + headroom_z * sqrt(N)`` must stay within ``max_num_seqs`` and its tokens within the KV cache, else requests
  queue and TTFT explodes; the mean tokens per step must fit ``max_num_batched_tokens``.

Every constraint tightens as ``d`` grows, so mu is ``lam`` at the largest ``d`` that meets them all (binary search);
``limit`` names the constraint that stopped it. ``benchmarks/capacity_accuracy.py`` checks mu against the simulator.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.special import pdtr

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
    """mu(type, config) for one model and SLO, memoised per (config, lengths)."""

    def __init__(
        self,
        model: ModelSpec,
        slo: Slo,
        calibration: Calibration | None = None,
        *,
        attainment: float = 0.9,
        headroom_z: float = 1.65,
    ) -> None:
        if not 0 < attainment < 1:
            raise ValueError(f"attainment must be in (0, 1), got {attainment}")
        self.model, self.slo, self.calibration = model, slo, calibration
        self.attainment, self.headroom_z = attainment, headroom_z
        self._timers: dict[ReplicaConfig, StepTimer] = {}
        self._cache: dict[tuple, Capacity] = {}

    def timer(self, config: ReplicaConfig) -> StepTimer:
        t = self._timers.get(config)
        if t is None:
            t = self._timers[config] = StepTimer(CostModel(self.model, config, self.calibration))
        return t

    def capacity(
        self, config: ReplicaConfig, prompt_tokens: float | np.ndarray, output_tokens: float | np.ndarray
    ) -> Capacity:
        """mu of ``config`` on requests of these lengths (tokens): one pair, or same-length arrays sampling the
        type's requests."""
        prompts = np.maximum(1, np.rint(np.atleast_1d(np.asarray(prompt_tokens, dtype=np.float64)))).astype(
            np.int64
        )
        outputs = np.maximum(1, np.rint(np.atleast_1d(np.asarray(output_tokens, dtype=np.float64)))).astype(
            np.int64
        )
        if prompts.shape != outputs.shape or prompts.size == 0:
            raise ValueError("prompt and output lengths must be non-empty and of the same length")
        key = (config, prompts.tobytes(), outputs.tobytes())
        cap = self._cache.get(key)
        if cap is None:
            cap = self._cache[key] = _Solver(self, config, prompts, outputs).solve()
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


class _Solver:
    """One (config, length sample) solve; memoises each prompt's prefill cost per decode batch."""

    def __init__(
        self, owner: CapacityModel, config: ReplicaConfig, prompts: np.ndarray, outputs: np.ndarray
    ) -> None:
        self.owner, self.config = owner, config
        self.timer = owner.timer(config)
        self.prompts, self.outputs = prompts, outputs
        self.steps = np.maximum(outputs - 1, 0).astype(np.float64)
        self.mean_steps = max(float(self.steps.mean()), 1.0)
        self.context = float(np.mean(prompts + outputs / 2.0))
        self.mean_prompt = float(prompts.mean())
        self.mean_pairs = float(np.mean(prompts * (prompts + 1) / 2.0))
        self._prefill: dict[int, tuple[float, np.ndarray, np.ndarray]] = {}
        self._mixed: dict[tuple[int, float], float] = {}

    def prefill(self, decodes: int) -> tuple[float, np.ndarray, np.ndarray]:
        """(T_dec, extra time dP_i, time of the steps carrying prompt i) beside ``decodes`` decoding sequences."""
        cached = self._prefill.get(decodes)
        if cached is None:
            timer, budget = self.timer, max(1, self.config.max_num_batched_tokens - decodes)
            ctx = round(decodes * self.context)
            t_dec = timer.decode_time(decodes, ctx)
            chunks = [_chunks(p, budget) for p in self.prompts.tolist()]
            counts = np.array([len(c) for c in chunks])
            flat = np.array([pair for c in chunks for pair in c], dtype=np.float64)
            times = timer.prefill_times(flat[:, 0], flat[:, 1], decodes, ctx)
            own = np.add.reduceat(times, np.concatenate(([0], np.cumsum(counts)[:-1])))
            extra = own - t_dec * counts
            cached = self._prefill[decodes] = (t_dec, extra, own)
        return cached

    def mixed_step(self, decodes: int, kappa: float) -> float:
        """Mean step time when ``decodes`` sequences decode beside Poisson(``kappa``) prefills
        of the sample's mean prompt (exact cost model per prefill count: the GEMMs' memory- to compute-bound bend
        makes the k-th prefill dearer than the first)."""
        key = (decodes, round(kappa, 6))
        cached = self._mixed.get(key)
        if cached is None:
            timer = self.timer
            budget = max(1, self.config.max_num_batched_tokens - decodes)
            ctx = round(decodes * self.context)
            k_max = int(kappa + 5 * math.sqrt(kappa) + 3)
            ks = np.arange(k_max + 1)
            weights = np.exp(
                ks * math.log(max(kappa, 1e-300)) - kappa - np.array([math.lgamma(k + 1) for k in ks])
            )
            weights /= weights.sum()
            # T(k) is smooth and convex in k: exact at a few counts, interpolated between them
            nodes = sorted({0, 1, 2, 3, k_max} | {int(v) for v in np.geomspace(4, max(4, k_max), 8)})
            k = np.array(nodes[1:], dtype=np.float64)
            tokens = np.minimum(budget, np.rint(k * self.mean_prompt))
            share = tokens / np.maximum(1.0, k * self.mean_prompt)
            with_prefill = timer.step_times(
                tokens, k.astype(np.int64), k * self.mean_pairs * share, tokens, decodes, ctx
            )
            node_times = np.concatenate(([timer.decode_time(decodes, ctx)], with_prefill))
            times = np.interp(ks, nodes, node_times)
            cached = self._mixed[key] = float(weights @ times)
        return cached

    def point(self, d: float, kv_tokens: int) -> _Point:
        config, owner, slo = self.config, self.owner, self.owner.slo
        decodes = max(1, round(d))
        t_dec, extra, own = self.prefill(decodes)
        kappa = d / self.mean_steps  # prefills per step, by Little's law on the decoding sequences
        t = self.mixed_step(decodes, kappa)
        lam = d / (self.mean_steps * t)
        # request i's TPOT averages its s_i steps; it holds while the prefills landing among them (Poisson, mean
        # kappa * s_i widened by 1 / (1 - rho) for the bursts that stretch a window; rho: prefill share of time)
        # fit the room the TPOT SLO leaves above a pure decode step
        rho = min(0.95, max(0.0, 1.0 - t_dec / t))
        mean_dp = max(float(extra.mean()), 1e-9)
        arrivals = kappa * self.steps / (1.0 - rho)  # prefills among its steps; bursts stretch the window
        allowed = np.floor(np.maximum(slo.tpot_s - t_dec, 0.0) * self.steps / mean_dp)
        p_tpot = np.where(self.steps > 0, pdtr(allowed, arrivals), 1.0)
        ttft_i = t + own + (t - t_dec)  # a residual step, the prompt's own steps, other prefills beside it
        ok = (ttft_i <= slo.ttft_s).astype(np.float64)
        if slo.e2e_s is not None:
            ok *= ttft_i + self.steps * t <= slo.e2e_s
        both, latency = float(np.mean(ok * p_tpot)), float(np.mean(ok))
        ttft = float(np.mean(ttft_i))
        in_system = d + lam * ttft
        headroom = in_system + owner.headroom_z * math.sqrt(in_system)
        violated = None
        if both < owner.attainment:
            violated = "ttft" if latency < owner.attainment else "tpot"
        elif headroom > config.max_num_seqs:
            violated = "max_seqs"
        elif headroom * (self.context + config.block_size / 2) > kv_tokens:
            violated = "kv"
        elif d + lam * t * self.mean_prompt > config.max_num_batched_tokens:
            violated = "token_budget"
        return _Point(lam, t, ttft, d, violated)

    def solve(self) -> Capacity:
        cm = self.timer.cost_model
        if not cm.fits:
            return Capacity(0.0, "unfit")
        floors = [
            self.owner.unloaded(self.config, p, o)
            for p, o in zip(self.prompts.tolist(), self.outputs.tolist(), strict=True)
        ]
        ttft0 = float(np.mean([f[0] for f in floors]))
        tpot0 = float(np.mean([f[1] for f in floors]))
        slo = self.owner.slo
        meets = [
            f[0] <= slo.ttft_s and (o <= 1 or f[1] <= slo.tpot_s)
            for f, o in zip(floors, self.outputs.tolist(), strict=True)
        ]
        if np.mean(meets) < self.owner.attainment:
            return Capacity(0.0, "slo", tpot0, ttft0)
        kv_tokens = cm.kv_capacity_tokens // self.config.pp
        grid = (*_FRACTIONAL_BATCHES, *range(1, self.config.max_num_seqs + 1))
        # every constraint tightens with the decode batch: binary-search the last feasible grid point
        lo, hi = -1, len(grid)  # grid[lo] feasible (or none), grid[hi] infeasible (or past the end)
        limit = "batch"
        while hi - lo > 1:
            mid = (lo + hi) // 2
            p = self.point(grid[mid], kv_tokens)
            if p.violated:
                hi, limit = mid, p.violated
            else:
                lo = mid
        if lo < 0:
            return Capacity(0.0, limit, tpot0, ttft0)
        best = self.point(grid[lo], kv_tokens)
        return Capacity(best.lam * self.config.pp, limit, best.step_s, best.ttft_s, best.batch)


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
