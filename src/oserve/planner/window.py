"""Whether a request's decode window meets its TPOT target: a busy period of prefill work (Kendall's identity).

Request ``i`` decodes its ``s_i`` tokens over ``s_i`` steps; each step is a pure decode step plus the prefill
chunks admitted into it. Prompts arriving while ``i`` waits, while its own prefill steps run (first come, first
served: they queue behind it, and a long prompt's chunks span several steps) and while its window is open (up to the
start of its last step) are prefilled inside the window, and each one stretches the window, which lets more arrive:
the window is a *busy period* that starts with the work ``x0`` (its own prefill steps and ``s_i - 1`` decode steps,
plus any wait) and grows by the prefill time of every arrival. Its TPOT meets the target
when the prefill work ``W`` the window absorbs fits the room the target leaves above the decode steps,
``room_i = (tpot - T_dec) * s_i``.

With Poisson arrivals of rate ``r`` and prefill times ``J``, Kendall's identity (the hitting-time theorem) gives the
law of that work exactly: the window ends after ``k`` arrivals with total work in ``dw`` with probability

    x0 / (x0 + w) * P(N(x0 + w) = k) * P(J_1 + ... + J_k in dw),       N(t) ~ Poisson(r t),

so ``P(W <= room) = E[ sum_k x0 / (x0 + S_k) * Pois(k; r (x0 + S_k)) * 1{S_k <= room} ]`` over the partial sums
``S_k`` of the jumps. ``window_share`` evaluates it two ways:

- few arrivals expected (``r (x0 + room) <= 30``, long prompts): the expectation over ``S_k`` with a fixed balanced
  set of draws from the type's own prefill times (deterministic, cached per sample size), so a long prompt landing
  in a short window counts for what it is;
- many (short prompts among long outputs): the jumps are replaced by equal ones matching their mean and variance
  (``c = E[J^2] / E[J]``, arrival rate ``r E[J] / c``) and the sum over ``k`` is closed form.

``tests/planner/test_window.py`` checks both against busy periods played out arrival by arrival.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import gammaln

__all__ = ["window_share"]

_MANY_ARRIVALS = 3.0  # expected arrivals in a window above which the moment-matched sum is used
_DRAWS = 32  # partial-sum draws per arrival count (balanced: every prefill time equally often per position)
_draws_cache: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}


def window_share(
    rate: float, start_work_s: np.ndarray, jumps_s: np.ndarray, room_s: np.ndarray
) -> np.ndarray:
    """P(the busy period started by ``start_work_s[i]`` absorbs at most ``room_s[i]`` of prefill work) per
    request, for Poisson(``rate`` per s) arrivals whose prefill times are drawn uniformly from ``jumps_s``."""
    x0 = np.maximum(np.asarray(start_work_s, dtype=np.float64), 1e-9)
    room = np.maximum(np.asarray(room_s, dtype=np.float64), 0.0)
    jumps = np.maximum(np.asarray(jumps_s, dtype=np.float64), 0.0)
    out = np.empty(len(x0))
    expected = rate * (x0 + room)
    many = expected > _MANY_ARRIVALS
    if many.any():
        mean = max(float(jumps.sum()) / len(jumps), 1e-12)
        size = max(float(jumps @ jumps) / len(jumps) / mean, 1e-12)
        out[many] = _equal_jumps(rate * mean / size, x0[many], size, room[many])
    few = ~many
    if few.any():
        out[few] = _drawn_jumps(rate, x0[few], jumps, room[few], float(expected[few].max()))
    return np.clip(out, 0.0, 1.0)


def _equal_jumps(rate: float, x0: np.ndarray, size: float, room: np.ndarray) -> np.ndarray:
    """Kendall's sum for jumps all of ``size``: sum over n <= room / size of x0 / t_n * Pois(n; rate t_n)."""
    allowed = np.floor(room / size)
    expected = rate * float(np.max(x0 + room))
    top = int(min(float(allowed.max()), expected + 10 * math.sqrt(expected) + 10))
    n = np.arange(top + 1, dtype=np.float64)[None, :]
    t = x0[:, None] + n * size
    m = rate * t
    terms = x0[:, None] / t * np.exp(n * np.log(np.maximum(m, 1e-300)) - m - gammaln(n + 1))
    return np.where(n <= allowed[:, None], terms, 0.0).sum(axis=1)


def _drawn_jumps(
    rate: float, x0: np.ndarray, jumps: np.ndarray, room: np.ndarray, expected: float
) -> np.ndarray:
    """Kendall's sum averaged over balanced draws of the partial sums of ``jumps``."""
    k_max = int(expected + 6 * math.sqrt(expected) + 3)
    picks, log_fact = _draws(len(jumps), k_max)
    sums = np.concatenate((np.zeros((len(picks), 1)), np.cumsum(jumps[picks], axis=1)), axis=1)
    # only counts whose work can still fit some room contribute
    k_fit = int(np.count_nonzero(sums.min(axis=0) <= room.max()))
    sums, log_fact = sums[:, :k_fit], log_fact[:k_fit]
    k = np.arange(k_fit)
    t = x0[:, None, None] + sums[None]
    m = rate * t
    terms = x0[:, None, None] / t * np.exp(k * np.log(m) - m - log_fact)
    return np.where(sums[None] <= room[:, None, None], terms, 0.0).sum(axis=2).mean(axis=1)


def _draws(n: int, k_max: int) -> tuple[np.ndarray, np.ndarray]:
    """(which of the ``n`` jumps each position takes: every one equally often per position, log k!), fixed per
    shape so mu is deterministic."""
    key = (n, k_max)
    cached = _draws_cache.get(key)
    if cached is None:
        rng = np.random.default_rng(0)
        base = np.repeat(np.arange(n), max(1, -(-_DRAWS // n)))
        picks = np.stack([rng.permutation(base) for _ in range(k_max)], axis=1)
        cached = _draws_cache[key] = (picks, gammaln(np.arange(k_max + 1) + 1.0))
    return cached
