"""Capacity mu: the request rate one replica config sustains on one request type within the SLO.

A steady-state model of continuous batching with chunked prefill, one PP virtual engine at a time (a replica
with ``pp`` stages has ``pp`` engines, each with ``1/pp`` of the KV cache, as the simulator models it). A type is a
sample of its requests' (prompt, output) lengths (or one pair), because the spread inside a type — a few long
prompts, many one-token outputs — decides its tail latency as much as the means do.

Parametrised by the mean decode batch ``d`` (sequences decoding in a step; continuous), everything is closed form:

- a request ``i`` costs its prefill once, ``dP_i(d)`` = the extra step time its prompt chunks add to a batch of
  ``d`` decodes, and ``s_i = O_i - 1`` decode steps; so the mean step is ``t(d) = T_dec(d) + d * E[dP] / E[s]``
  and, by Little's law on the decoding sequences, the rate is ``lam(d) = d / (E[s] * t(d))``;
- the mean step is the cost model's time of ``d`` decodes beside Poisson(``kappa = d / E[s]``) prefills of the
  mean prompt (exact per prefill count: the GEMMs bend from memory- to compute-bound), one step's token budget
  of them at most, so never below ``T_dec + kappa * E[dP]`` (a prompt longer than the budget takes several steps);
- prefill work queues at the engine as an M/G/1 queue (``slo_shares``): a request waits with probability ``rho``
  (the engine's prefill share of time) an exponential time of the Pollaczek-Khinchine mean, and its TTFT is that
  wait plus a residual step plus the steps that carry its prompt's chunks;
- request ``i``'s TPOT averages its own ``s_i`` steps, which every prefill admitted among them stretches; those
  prefills are the prompts that arrive while it waits, while its own prefill steps run (first come, first
  served: they queue behind it, and a long prompt's chunks take several steps) and while its window is open, and
  each one keeps the window open longer: the window is a busy period of prefill work, and Kendall's identity
  gives the probability that it absorbs no more than the room the SLO leaves above the decode steps,
  ``(tpot - T_dec) * s_i``, and within an E2E target what that leaves after the TTFT and the decode steps
  (``planner.window``, over the type's own prefill times, so one long prompt landing in a short window counts for
  what it is);
- the type meets the SLO when the expected share of requests meeting every target is at least ``attainment``
  (0.9, as the simulator scores);
- the sequences in the system ``N = lam * E[TTFT] + d`` are Poisson at steady state (an M/G/inf population), so
  ``N + headroom_z * sqrt(N)`` must stay within ``max_num_seqs`` and its tokens within the KV cache, else requests
  queue and TTFT explodes; the mean tokens per step must fit ``max_num_batched_tokens``.

With ``pp > 1`` the engines share the stages (``sim.pipeline``): a step's latency is the whole pipeline's pass
(``iteration_time``), and each prefill on one engine's micro-batch holds every stage for its extra stage time,
``dP / pp``, which the other ``pp - 1`` engines' micro-batches queue behind; so each engine's mean step carries
its own prefills' extra time and ``(pp - 1) / pp`` of as many again from its siblings (and its TPOT window and
prefill queue stretch alike). The stages' throughput bound holds with it: a stage runs every engine's micro-batch
once per step, ``pp`` stage times of the mean batch, which is the pass less the overhead and sends.

Every constraint tightens as ``d`` grows, so mu is ``lam`` at the largest ``d`` that meets them all (geometric
bisection to 1.5% below the batch the necessary conditions allow, after halving down from it); ``limit`` names
the constraint that stopped it. ``benchmarks/capacity_accuracy.py`` checks mu against the simulator (``docs/plan.md`` has the figures).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.special import gammaln

from oserve.errors import ConfigError
from oserve.perf import Calibration, CostModel
from oserve.planner.slo import Slo
from oserve.planner.window import window_share
from oserve.sim.timing import StepTimer
from oserve.spec import ModelSpec, ReplicaConfig

__all__ = ["CONTEXT_QUANTILE", "Capacity", "CapacityModel", "max_model_len"]

_PREFILL_COUNTS = np.unique(np.concatenate(([0, 1, 2, 3], np.rint(np.geomspace(4, 8192, 34))))).astype(
    np.int64
)
_BATCH_LADDER = np.unique(np.rint(1.05 ** np.arange(200))).astype(np.int64)  # 1, 2, ... about 5% apart
_MIN_BATCH = 0.05  # the search's floor: below this mean decode batch a replica is nearly idle ...
# ... except for a type of long prompts and short outputs, whose decode batch stays tiny at any rate it can carry
# (34k-token prompts, 14 output tokens on 70B TP8: mu 0.17 req/s at a batch of 0.024): where nothing at or above
# the floor is feasible, the search goes on down to this one before it calls the type unservable
_TINY_BATCH = 1e-3
_BATCH_TOLERANCE = 0.015  # mu to about 1.5%
_HALVINGS = 3  # probes halving down from the batch bound before a plain bisection below it
#: a config holds a type when this quantile of the type's prompt + output tokens fits its ``max_model_len``
#: (vLLM rejects the rest with HTTP 400); mu is then solved on the requests that fit
CONTEXT_QUANTILE = 0.99


@dataclass(frozen=True, slots=True)
class Capacity:
    """mu for one (type, config): ``rate_rps`` for the whole replica and what limits it.

    ``limit`` is one of ``tpot``, ``ttft``, ``e2e``, ``max_seqs``, ``kv``, ``token_budget`` (the binding constraint
    at mu), ``batch`` (the decode batch reached ``max_num_seqs`` with every SLO met), or ``unfit`` / ``context`` /
    ``slo`` when the replica cannot serve the type at all (model does not fit; the type's long requests exceed the
    replica's ``max_model_len``, see ``CONTEXT_QUANTILE``; SLO missed even unloaded).
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
            raise ConfigError(f"attainment must be in (0, 1), got {attainment}")
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
            raise ConfigError("prompt and output lengths must be non-empty and of the same length")
        cm = self.timer(config).cost_model
        need, limit = prompts + outputs, cm.memory.max_model_len
        if cm.fits and need.max() > limit:
            if float(np.quantile(need, CONTEXT_QUANTILE)) > limit:
                return Capacity(0.0, "context")
            prompts, outputs = prompts[need <= limit], outputs[need <= limit]
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


def max_model_len(model: ModelSpec, config: ReplicaConfig, calibration: Calibration | None = None) -> int:
    """The longest request (prompt + output tokens) ``config`` accepts: its vLLM ``max_model_len``."""
    return CostModel(model, config, calibration).memory.max_model_len


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
        self._mixed: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._decode_s: np.ndarray | None = None
        # prefill time in a step, counted again for the siblings' prefills each micro-batch queues behind
        self.prefill_factor = 1.0 + (config.pp - 1) / config.pp

    def prefill(self, decodes: int) -> tuple[float, np.ndarray, np.ndarray]:
        """(T_dec, extra time dP_i, time of the steps carrying prompt i) beside ``decodes`` decoding
        sequences."""
        cached = self._prefill.get(decodes)
        if cached is None:
            timer, budget = self.timer, max(1, self.config.max_num_batched_tokens - decodes)
            ctx = round(decodes * self.context)
            t_dec = self._decode(decodes)
            chunks = [_chunks(p, budget) for p in self.prompts.tolist()]
            counts = np.array([len(c) for c in chunks])
            flat = np.array([pair for c in chunks for pair in c], dtype=np.float64)
            times = timer.prefill_times(flat[:, 0], flat[:, 1], decodes, ctx)
            ends = np.cumsum(counts)
            own = np.add.reduceat(times, ends - counts)
            extra = own - t_dec * counts
            cached = self._prefill[decodes] = (t_dec, extra, own)
        return cached

    def mixed_step(self, decodes: int, kappa: float) -> float:
        """Mean step time when ``decodes`` sequences decode beside Poisson(``kappa``) prefills of the sample's mean
        prompt: the cost model's time with ``k`` of them (the GEMMs' memory- to compute-bound bend makes the k-th
        prefill dearer than the first; smooth and convex in ``k``, so exact at fixed counts and interpolated
        between them), averaged over the Poisson count."""
        k_max = int(kappa + 5 * math.sqrt(kappa) + 3)
        nodes, node_times = self._count_times(decodes, k_max)
        ks = np.arange(k_max + 1)
        weights = np.exp(ks * math.log(max(kappa, 1e-300)) - kappa - gammaln(ks + 1.0))
        return float(weights @ np.interp(ks, nodes, node_times) / weights.sum())

    def _count_times(self, decodes: int, k_max: int) -> tuple[np.ndarray, np.ndarray]:
        """Step times with 0, 1, 2, ... (geometric beyond 4) mean prefills beside ``decodes`` decodes, through
        the first count at or above ``k_max`` (memoised per batch, extended on demand)."""
        have = self._mixed.get(decodes)
        if have is None or have[0][-1] < k_max:
            above = _PREFILL_COUNTS[k_max <= _PREFILL_COUNTS]
            top = int(above[0]) if len(above) else k_max
            nodes = np.append(_PREFILL_COUNTS[top > _PREFILL_COUNTS], top)
            timer = self.timer
            budget = max(1, self.config.max_num_batched_tokens - decodes)
            ctx = round(decodes * self.context)
            k = nodes[1:].astype(np.float64)
            tokens = np.minimum(budget, np.rint(k * self.mean_prompt))
            share = tokens / np.maximum(1.0, k * self.mean_prompt)
            with_prefill = timer.step_times(
                tokens, nodes[1:], k * self.mean_pairs * share, tokens, decodes, ctx
            )
            times = np.concatenate(([self._decode(decodes)], with_prefill))
            have = self._mixed[decodes] = (nodes, times)
        return have

    def state(self, d: float) -> tuple[float, np.ndarray, np.ndarray, float]:
        """(T_dec, dP_i, own_i, mean step) at mean decode batch ``d``. The decode step is linear between
        the integer batches around ``d`` (a step's time is close to linear in its batch, so the mean over a
        fluctuating batch is); prefill times, which hardly move with a few more decodes, are those beside the
        nearest batch of a ladder about 5% apart."""
        near = int(_BATCH_LADDER[min(np.searchsorted(_BATCH_LADDER, d), len(_BATCH_LADDER) - 1)])
        near = min(near, self.config.max_num_seqs)
        t_dec, extra, own = self.prefill(near)
        kappa = d / self.mean_steps
        # the prefills' time per step: the mixed step's (one step of the mean prompt's tokens, within the token
        # budget), but never below what the prompts' own chunks add (a prompt longer than the budget takes
        # several steps, each carrying a full chunk beside the decodes)
        prefill_s = max(self.mixed_step(near, kappa) - t_dec, kappa * float(extra.mean()))
        lo = max(1, math.floor(d))
        hi = min(lo + 1, self.config.max_num_seqs)
        w = min(max(d - lo, 0.0), 1.0) if hi > lo else 0.0
        exact = (1 - w) * self._decode(lo) + w * self._decode(hi) if w else self._decode(lo)
        return exact, extra, own, exact + prefill_s * self.prefill_factor

    def _decode(self, decodes: int) -> float:
        """A pure decode step of ``decodes`` sequences of the sample's mean context."""
        return float(self._decode_table()[decodes - 1])

    def _decode_table(self) -> np.ndarray:
        """Pure decode step times for batches 1 .. ``max_num_seqs`` (one table per solve)."""
        if self._decode_s is None:
            cm, seqs = self.timer.cost_model, np.arange(1, self.config.max_num_seqs + 1, dtype=np.float64)
            attention = cm.decode_attention_kernel_s(
                *cm.decode_attention_work(seqs, np.rint(seqs * self.context))
            )
            self._decode_s = (
                cm.iteration_times_without_attention(seqs, seqs) + cm.attention_layers_scale * attention
            )
        return self._decode_s

    def point(self, d: float, kv_tokens: int) -> _Point:
        config, owner = self.config, self.owner
        t_dec, extra, own, t = self.state(d)
        lam = d / (self.mean_steps * t)
        ttft_i = t + own + (t - t_dec)  # a residual step, the prompt's own steps, other prefills beside it
        both, latency = self.slo_shares(d, lam, t_dec, t, extra, own, ttft_i)
        ttft = float(ttft_i.sum()) / len(ttft_i)
        in_system = d + lam * ttft
        headroom = in_system + owner.headroom_z * math.sqrt(in_system)
        violated = None
        if both < owner.attainment:
            window = "tpot" if math.isfinite(owner.slo.tpot_s) else "e2e"  # what the decode window missed
            violated = "ttft" if latency < owner.attainment else window
        elif headroom > config.max_num_seqs:
            violated = "max_seqs"
        elif headroom * (self.context + config.block_size / 2) > kv_tokens:
            violated = "kv"
        elif d + lam * t * self.mean_prompt > config.max_num_batched_tokens:
            violated = "token_budget"
        return _Point(lam, t, ttft, d, violated)

    def slo_shares(
        self,
        d: float,
        lam: float,
        t_dec: float,
        t: float,
        extra: np.ndarray,
        own: np.ndarray,
        ttft_i: np.ndarray,
    ) -> tuple[float, float]:
        """(expected share of requests meeting every target, share meeting TTFT and E2E) at rate ``lam``.

        Prefill work queues at an engine as in an M/G/1 queue whose jobs are the prompts' prefill times at this
        mix (the mixed step's mean prefill time, spread as the prompts' own): busy a share ``rho`` of the time, a
        request that waits waits ``W`` ~ exponential with the Pollaczek-Khinchine mean. Its TTFT holds when
        ``ttft_i + W`` meets the target; its TPOT and E2E hold when its decode window, a busy period of prefill
        work that starts with its own prefill steps, its other decode steps and its wait (arrivals queued behind it
        while it waits or prefills land in its window), absorbs no more than the room the targets leave: the TPOT
        target's above the decode steps, the E2E target's after the TTFT, the decode steps and the wait
        (``planner.window``).
        """
        slo = self.owner.slo
        kappa = d / self.mean_steps
        n = len(extra)
        mean_dp = max(float(extra.sum()) / n, 1e-9)
        # each prompt's prefill time, scaled to ``state``'s prefill time per prefill (never below dP's mean)
        jumps = extra * ((t - t_dec) / kappa / mean_dp)
        rho = min(lam * float(jumps.sum()) / n, 0.99)
        wait = max(lam * float(jumps @ jumps) / n / (2 * (1 - rho)) / max(rho, 1e-9), 1e-9)
        target = slo.ttft_target(self.prompts)
        decode_s = self.steps * t_dec
        slack = target - ttft_i  # the wait each request's TTFT (and E2E) target leaves
        if slo.e2e_s is not None:
            slack = np.minimum(slack, slo.e2e_s - ttft_i - decode_s)
        fits = slack >= 0
        no_wait_ok = fits.astype(np.float64)
        wait_ok = np.where(fits, -np.expm1(-np.maximum(slack, 0.0) / wait), 0.0)
        start = own + np.maximum(self.steps - 1, 0) * t_dec
        # the prefill work a window may absorb: what the TPOT target leaves above the decode steps, and what the
        # E2E target leaves after the TTFT, the decode steps and (after a wait) the wait
        room = np.full((2, len(start)), np.inf)
        if math.isfinite(slo.tpot_s):
            room[:] = np.maximum(slo.tpot_s - t_dec, 0.0) * self.steps
        if slo.e2e_s is not None:
            left = slo.e2e_s - ttft_i - decode_s
            room = np.minimum(room, np.maximum(np.stack((left, left - wait)), 0.0))
        decoding = (self.steps > 0) & np.isfinite(room[0])  # no target on the window: every one meets it
        tpot_ok = np.ones((2, len(start)))  # without a wait, after one
        if decoding.any():
            starts = np.concatenate((start[decoding], start[decoding] + wait))
            tpot_ok[:, decoding] = window_share(lam, starts, jumps, room[:, decoding].ravel()).reshape(2, -1)
        both = (1 - rho) * no_wait_ok * tpot_ok[0] + rho * wait_ok * tpot_ok[1]
        latency = (1 - rho) * no_wait_ok + rho * wait_ok
        return float(both.sum()) / len(both), float(latency.sum()) / len(latency)

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
            f[0] <= slo.ttft_target(p) and (o <= 1 or f[1] <= slo.tpot_s)
            for f, p, o in zip(floors, self.prompts.tolist(), self.outputs.tolist(), strict=True)
        ]
        if np.mean(meets) < self.owner.attainment:
            return Capacity(0.0, "slo", tpot0, ttft0)
        kv_tokens = cm.kv_capacity_tokens // self.config.pp
        # every constraint tightens with the decode batch: bisect (geometrically) for the largest feasible one,
        # below the bound the necessary conditions set; first probe just under that bound, then halve down from
        # it (mu usually sits within a factor of 4 of it; a bisection from an idle replica would spend its first
        # probes where all is met)
        bound, bound_limit = self._batch_bound(kv_tokens)
        if bound < _MIN_BATCH:
            return Capacity(0.0, bound_limit, tpot0, ttft0)
        low, high = _MIN_BATCH, bound
        best: _Point | None = None
        limit = bound_limit
        near_bound = bound / (1 + 2 * _BATCH_TOLERANCE)  # mu is often set by the bound's own constraint
        for probe_at in (near_bound, *(bound / 2**h for h in range(1, _HALVINGS + 1))):
            if probe_at <= _MIN_BATCH:
                break
            probe = self.point(probe_at, kv_tokens)
            if not probe.violated:
                low, best = probe.batch, probe
                break
            high, limit = probe.batch, probe.violated
        low, high, best, limit = self._bisect(low, high, best, limit, kv_tokens)
        if best is None or high == bound:  # never feasible, or never infeasible: look at the end itself
            end = self.point(low if best is None else high, kv_tokens)
            if best is None and end.violated:
                return self._below_floor(kv_tokens, end.violated, tpot0, ttft0)
            if not end.violated:
                best = end
            else:
                limit = end.violated
        return self._capacity(best, limit)

    def _below_floor(self, kv_tokens: int, violated: str, tpot0: float, ttft0: float) -> Capacity:
        """Nothing is feasible at the floor: bisect (geometrically) between ``_TINY_BATCH`` and ``_MIN_BATCH``
        for the largest feasible decode batch; mu 0 (limit ``violated``) if none is."""
        tiny = self.point(_TINY_BATCH, kv_tokens)
        if tiny.violated:
            return Capacity(0.0, violated, tpot0, ttft0)
        _, _, best, limit = self._bisect(tiny.batch, _MIN_BATCH, tiny, violated, kv_tokens)
        return self._capacity(best, limit)

    def _bisect(
        self, low: float, high: float, best: _Point | None, limit: str, kv_tokens: int
    ) -> tuple[float, float, _Point | None, str]:
        """Geometric bisection of the decode batch between ``low`` (feasible: ``best``'s, or the floor) and
        ``high`` (infeasible, for ``limit``) to ``_BATCH_TOLERANCE``: the narrowed bracket, its best point and
        limit."""
        while high > low * (1 + _BATCH_TOLERANCE):
            mid = self.point(math.sqrt(low * high), kv_tokens)
            if mid.violated:
                high, limit = mid.batch, mid.violated
            else:
                low, best = mid.batch, mid
        return low, high, best, limit

    def _batch_bound(self, kv_tokens: int) -> tuple[float, str]:
        """A decode batch no feasible one exceeds, from conditions every point must meet, and the constraint
        that sets it (``batch`` when none is tighter than ``max_num_seqs``): the sequences in the system, at
        least ``d``, with their headroom must fit ``max_num_seqs`` and the KV cache; and a decode step alone must
        fit the TPOT target when enough of the requests decode for TPOT to decide the attainment."""
        z, config = self.owner.headroom_z, self.config
        bounds = [(float(config.max_num_seqs), "batch")]

        def within(n: float) -> float:  # the largest d with d + z sqrt(d) <= n
            return (math.sqrt(z * z / 4 + n) - z / 2) ** 2 if n > 0 else 0.0

        bounds.append((within(config.max_num_seqs), "max_seqs"))
        bounds.append((within(kv_tokens / (self.context + config.block_size / 2)), "kv"))
        if np.mean(self.steps > 0) > 1 - self.owner.attainment:
            table = self._decode_table()
            above = np.flatnonzero(table > self.owner.slo.tpot_s)
            if len(above):
                k = int(above[0])  # batch k + 1 is the first over the target; interpolate as ``state`` does
                if k == 0:
                    bounds.append((1.0, "tpot"))
                else:
                    lo_t, hi_t = table[k - 1], table[k]
                    bounds.append((k + (self.owner.slo.tpot_s - lo_t) / (hi_t - lo_t), "tpot"))
        bound, name = min(bounds)
        return bound, ("batch" if bound >= config.max_num_seqs else name)

    def _capacity(self, p: _Point, limit: str) -> Capacity:
        return Capacity(p.lam * self.config.pp, limit, p.step_s, p.ttft_s, p.batch)


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
