"""Pure transformations: each returns a new ``Trace`` and is deterministic for a seed.

Used to build benchmark workloads from real traces: windows, rate scaling, concatenation, blending two
services, alternating phases between them (temporal shifts), and clipping lengths to a model's context.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np

from oserve.errors import ConfigError
from oserve.trace.core import Trace

__all__ = ["alternate", "blend", "clip_lengths", "concat", "scale_rate", "truncate", "window"]

Seed = int | np.random.Generator | np.random.SeedSequence


def _rng(seed: Seed) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def window(trace: Trace, start_s: float, end_s: float | None = None) -> Trace:
    """Requests arriving in ``[start_s, end_s)``, re-timed so the window starts at 0.

    The first request keeps its offset from the window start; ``duration_s`` is the window length
    (clipped to the trace). An ``end_s`` at or past the trace's end (or ``None``) includes the last request.
    """
    end = trace.duration_s if end_s is None else float(end_s)
    if start_s < 0 or end < start_s:
        raise ConfigError(f"window [{start_s}, {end}) is empty or negative")
    lo = int(np.searchsorted(trace.arrival_s, start_s, side="left"))
    side: Literal["left", "right"] = "right" if end >= trace.duration_s else "left"
    hi = int(np.searchsorted(trace.arrival_s, end, side=side))
    idx = np.arange(lo, hi)
    span = max(0.0, min(end, trace.duration_s) - start_s)
    return trace.take(idx, arrival_s=trace.arrival_s[lo:hi] - start_s, duration_s=span)


def truncate(trace: Trace, *, max_requests: int | None = None, max_duration_s: float | None = None) -> Trace:
    """The first ``max_requests`` requests and/or the first ``max_duration_s`` seconds.

    Cut by count, the span ends at the next (dropped) request's arrival, so the rate stays unbiased.
    """
    out = trace if max_duration_s is None else window(trace, 0.0, max_duration_s)
    if max_requests is not None:
        if max_requests < 0:
            raise ConfigError(f"max_requests must be >= 0, got {max_requests}")
        if max_requests < len(out):
            span = float(out.arrival_s[max_requests])
            out = out.take(np.arange(max_requests), duration_s=span)
    return out


def _reflect(t: np.ndarray, duration_s: float) -> np.ndarray:
    """Fold times back into ``[0, duration_s]`` (reflection keeps the density flat near the edges)."""
    if duration_s <= 0:
        return np.zeros_like(t)
    t = np.abs(t)
    return np.clip(duration_s - np.abs(duration_s - t), 0.0, duration_s)


_DEFAULT_JITTER_S = 30.0


def scale_rate(
    trace: Trace,
    factor: float,
    *,
    seed: Seed = 0,
    method: Literal["resample", "compress"] = "resample",
    jitter_s: float | None = None,
) -> Trace:
    """Scale the arrival rate by ``factor``; the (prompt, output) joint distribution is kept either way.

    ``resample`` (default) keeps the time span and its rate profile: below 1 it thins (each request kept
    with probability ``factor``); above 1 it superposes the original with ``floor(factor) - 1`` full and
    one thinned copy whose arrivals are jittered uniformly by +-``jitter_s``, reflected at the trace's ends.
    The default jitter, 30 s (at most a quarter of the span), keeps the rate profile at minute scale while the
    copies arrive independently: a jitter of about one inter-arrival time would land the k copies of every
    request (same lengths) within a second of each other — k-fold bursts of identical prompts no real
    population of users sends. Each copy's prefix block ids (``hash_ids``) are fresh (offset past the
    original's): a copy shares prefixes among its own requests, never with the original. ``compress`` divides
    arrival times (and the span) by ``factor``: exact inter-arrival structure, shorter trace.
    """
    if not math.isfinite(factor) or factor <= 0:
        raise ConfigError(f"rate scale factor must be > 0, got {factor}")
    if method == "compress":
        return trace.take(
            np.arange(len(trace)), arrival_s=trace.arrival_s / factor, duration_s=trace.duration_s / factor
        )
    if method != "resample":
        raise ConfigError(f"unknown rate scaling method {method!r}; known: resample, compress")
    rng = _rng(seed)
    n = len(trace)
    if factor < 1:
        return trace.take(np.flatnonzero(rng.random(n) < factor))
    jitter = min(_DEFAULT_JITTER_S, trace.duration_s / 4) if jitter_s is None else float(jitter_s)
    whole, frac = int(factor), factor - int(factor)
    index = [np.arange(n)]
    times = [trace.arrival_s]
    copies = [np.arange(n)] * (whole - 1)
    if frac > 0:
        copies.append(np.flatnonzero(rng.random(n) < frac))
    for idx in copies:
        index.append(idx)
        times.append(
            _reflect(trace.arrival_s[idx] + rng.uniform(-jitter, jitter, len(idx)), trace.duration_s)
        )
    return _stacked(trace, index, times)


def _stacked(trace: Trace, index: Sequence[np.ndarray], times: Sequence[np.ndarray]) -> Trace:
    """The original's rows ``index[0]`` and each copy's rows ``index[k]`` at ``times[k]``, sorted by arrival. Each
    copy's prefix block ids (``hash_ids``, Mooncake's) are offset past the original's and every earlier copy's: a
    copy is other users, sharing prefixes among its own requests as the original's do, never with the original
    (whose blocks a replica may still cache: prefix hits no second population of users would get)."""
    rows = np.concatenate(index)
    extras = {k: v[rows] for k, v in trace.extras.items()}
    ids = trace.extras.get("hash_ids")
    if ids is not None and len(index) > 1:
        stride = 1 + max((int(np.max(x)) for x in ids if x is not None and len(x)), default=-1)
        copy = np.concatenate([np.full(len(i), k, dtype=np.int64) for k, i in enumerate(index)])
        fresh = np.empty(len(rows), dtype=object)
        for j, (r, k) in enumerate(zip(rows.tolist(), copy.tolist(), strict=True)):
            x = ids[r]
            fresh[j] = x if k == 0 or x is None or not len(x) else np.asarray(x, dtype=np.int64) + k * stride
        extras["hash_ids"] = fresh
    return Trace.from_arrays(
        np.concatenate(times),
        trace.prompt_tokens[rows],
        trace.output_tokens[rows],
        duration_s=trace.duration_s,
        name=trace.name,
        source=trace.source,
        extras=extras,
        report=trace.report,
    )


def _merge(parts: Sequence[tuple[Trace, np.ndarray, np.ndarray]], duration_s: float, name: str) -> Trace:
    """Stack (trace, row index, new arrivals) parts into one trace; keeps extra columns all parts have."""
    keys = set.intersection(*(set(t.extras) for t, _, _ in parts)) if parts else set()
    extras = {k: np.concatenate([t.extras[k][i] for t, i, _ in parts]) for k in sorted(keys)}
    first = parts[0][0]
    return Trace.from_arrays(
        np.concatenate([a for _, _, a in parts]),
        np.concatenate([t.prompt_tokens[i] for t, i, _ in parts]),
        np.concatenate([t.output_tokens[i] for t, i, _ in parts]),
        duration_s=duration_s,
        name=name,
        source=first.source if len(parts) == 1 else "",
        extras=extras,
    )


def _need(traces: Sequence[Trace]) -> None:
    if not traces:
        raise ConfigError("need at least one trace")


def concat(traces: Sequence[Trace], *, gap_s: float = 0.0, name: str | None = None) -> Trace:
    """Play traces back to back: each starts ``gap_s`` after the previous one's span ends."""
    _need(traces)
    parts, offset = [], 0.0
    for t in traces:
        parts.append((t, np.arange(len(t)), t.arrival_s + offset))
        offset += t.duration_s + gap_s
    return _merge(parts, offset - gap_s, name or "+".join(t.name for t in traces))


def blend(
    traces: Sequence[Trace],
    *,
    weights: Sequence[float] | None = None,
    rates_rps: Sequence[float] | None = None,
    seed: Seed = 0,
    name: str | None = None,
) -> Trace:
    """Superpose traces over their common span (the shortest one's), each rate-scaled first.

    ``weights`` scale each trace's own rate (1.0 keeps it); ``rates_rps`` set each one's target rate
    instead. Scaling uses :func:`scale_rate` (resample) with independent child seeds.
    """
    _need(traces)
    if weights is not None and rates_rps is not None:
        raise ConfigError("give weights or rates_rps, not both")
    factors = list(weights) if weights is not None else [1.0] * len(traces)
    if rates_rps is not None:
        factors = [r / t.rate_rps if t.rate_rps > 0 else 0.0 for r, t in zip(rates_rps, traces, strict=True)]
    if len(factors) != len(traces) or any(f < 0 for f in factors):
        raise ConfigError(f"need one non-negative weight per trace, got {factors}")
    span = min(t.duration_s for t in traces)
    seeds = np.random.SeedSequence(seed if isinstance(seed, int) else _rng(seed).integers(2**63))
    parts = []
    for t, f, child in zip(traces, factors, seeds.spawn(len(traces)), strict=True):
        if f == 0:
            continue
        scaled = scale_rate(window(t, 0.0, span), f, seed=np.random.default_rng(child))
        parts.append((scaled, np.arange(len(scaled)), scaled.arrival_s))
    if not parts:
        raise ConfigError("every blend weight is zero")
    return _merge(parts, span, name or "|".join(t.name for t in traces))


def alternate(
    traces: Sequence[Trace], *, phase_s: float, duration_s: float | None = None, name: str | None = None
) -> Trace:
    """Alternate ``phase_s``-long slices: phase i comes from ``traces[i % len(traces)]``.

    Phase i covers ``[i * phase_s, (i + 1) * phase_s)`` and takes the same time range of its source
    (wrapping around a source shorter than the output). ``duration_s`` defaults to the shortest trace.
    """
    _need(traces)
    if phase_s <= 0:
        raise ConfigError(f"phase_s must be > 0, got {phase_s}")
    total = min(t.duration_s for t in traces) if duration_s is None else float(duration_s)
    parts = []
    for i in range(math.ceil(total / phase_s)):
        src = traces[i % len(traces)]
        start = i * phase_s
        length = min(phase_s, total - start)
        if src.duration_s <= 0:
            continue
        s0 = start % src.duration_s
        done = 0.0
        while length - done > 1e-9:  # one pass unless the slice wraps around the source's end
            seg = min(length - done, src.duration_s - s0)
            lo = np.searchsorted(src.arrival_s, s0, side="left")
            hi = np.searchsorted(src.arrival_s, s0 + seg, side="left")
            idx = np.arange(lo, hi)
            parts.append((src, idx, src.arrival_s[lo:hi] - s0 + start + done))
            done += seg
            s0 = 0.0
    if not parts:
        raise ConfigError("alternate produced no phases")
    return _merge(parts, total, name or "/".join(t.name for t in traces))


def clip_lengths(
    trace: Trace,
    *,
    max_model_len: int | None = None,
    max_prompt_tokens: int | None = None,
    max_output_tokens: int | None = None,
    drop: bool = False,
) -> Trace:
    """Fit requests to limits, by clipping (default) or dropping those over them.

    With ``max_model_len`` (prompt + output context), clipping keeps at most ``max_model_len - 1`` prompt
    tokens, leaving room for at least one output token; ``drop=True`` removes requests that do not fit, as a server
    rejecting them would.
    """
    prompt, output = trace.prompt_tokens, trace.output_tokens
    if drop:
        keep = np.ones(len(trace), dtype=bool)
        if max_prompt_tokens is not None:
            keep &= prompt <= max_prompt_tokens
        if max_output_tokens is not None:
            keep &= output <= max_output_tokens
        if max_model_len is not None:
            keep &= prompt + output <= max_model_len
        return trace.take(np.flatnonzero(keep))
    if max_prompt_tokens is not None:
        prompt = np.minimum(prompt, max_prompt_tokens)
    if max_output_tokens is not None:
        output = np.minimum(output, max_output_tokens)
    if max_model_len is not None:
        if max_model_len < 2:
            raise ConfigError(f"max_model_len must be >= 2, got {max_model_len}")
        prompt = np.minimum(prompt, max_model_len - 1)
        output = np.minimum(output, max_model_len - prompt)
    return Trace.from_arrays(
        trace.arrival_s,
        prompt,
        output,
        duration_s=trace.duration_s,
        name=trace.name,
        source=trace.source,
        extras=dict(trace.extras),
        report=trace.report,
        sort=False,
    )
