"""Fleet workload: requests per minute for every region x model x tier, and each (model, tier)'s request lengths.

Two sources:

- ``load_workload_csv``: ``time,region,model,tier,requests,mean_prompt_tokens,mean_output_tokens`` at minute or
  hour grain (``time`` in seconds from the start or an ISO timestamp; an hour row is spread evenly over its
  minutes; lengths are each (model, tier)'s request-weighted means);
- ``builtin_workload``: the built-in scenario. What is **real**: every request length (the joint prompt/output
  pairs of the Azure LLM inference traces 2023, code and conversation services; each model serves one of them),
  and the within-hour burstiness (the trace's own per-minute arrival counts, superposed as independent copies:
  a stream ``K`` times the trace's rate is the mean of ``K`` randomly shifted copies of its minute profile).
  What is **shaped**: the rates over days (a diurnal envelope at each region's local time, trough 0.3 of the peak
  at 02:00 and peak at 14:00, weekends at 0.75 / 0.65), the peak rate per model and region, the NIW share of the
  volume (35 %), and 5 % log-normal noise per hour. See docs/fleet.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from oserve.errors import ConfigError, OServeError, TraceError
from oserve.fleet.spec import FleetSpec
from oserve.spec import get_model
from oserve.trace.samples import demo_traces

__all__ = ["TIERS", "FleetWorkload", "builtin_workload", "load_workload_csv"]

TIERS = ("iw", "niw")
COLUMNS = ("time", "region", "model", "tier", "requests", "mean_prompt_tokens", "mean_output_tokens")
MINUTES_PER_DAY = 24 * 60

#: built-in scenario: IW peak rate (req/s) per model in a region of scale 1, and each model's service
BUILTIN_PEAK_RPS = {"llama-3-8b": 400.0, "codellama-34b": 60.0, "qwen2.5-32b": 50.0, "llama-2-70b": 90.0}
BUILTIN_SERVICE = {
    "llama-3-8b": "conv",
    "codellama-34b": "code",
    "qwen2.5-32b": "code",
    "llama-2-70b": "conv",
}
BUILTIN_REGION_SCALE = {"us-east": 1.0, "us-west": 0.6, "eu-west": 0.8}
NIW_SHARE = 0.35  # NIW requests per IW request over a day
TROUGH, PEAK_HOUR, TROUGH_HOUR = 0.3, 14.0, 2.0
WEEKEND = (0.75, 0.65)  # Saturday, Sunday
HOURLY_NOISE = 0.05
MISS_BUDGET = (
    0.005  # IW share a plan may leave to within-hour bursts (the guard and forecast errors need the rest)
)
FACTORS = np.round(np.arange(1.0, 4.0001, 0.02), 2)


@dataclass(frozen=True, slots=True, eq=False)
class FleetWorkload:
    """``requests[r, m, t, minute]`` (requests in each minute, fluid) and ``lengths[(m, tier)]`` = (prompts,
    outputs) tokens. Minutes before ``eval_start_min`` are history (forecasters learn from them)."""

    regions: tuple[str, ...]
    models: tuple[str, ...]
    requests: np.ndarray  # regions x models x tiers x minutes
    lengths: dict[tuple[int, str], tuple[np.ndarray, np.ndarray]]
    eval_start_min: int
    start_weekday: int = 0  # day of week of minute 0 (0 = Monday), UTC midnight
    source: str = ""
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def minutes(self) -> int:
        return self.requests.shape[-1]

    @property
    def hours(self) -> int:
        return self.minutes // 60

    def hourly_rps(self) -> np.ndarray:
        """Mean req/s per hour: regions x models x tiers x hours."""
        r = self.requests[..., : self.hours * 60]
        return r.reshape(*r.shape[:-1], self.hours, 60).sum(axis=-1) / 3600.0

    def peak_factor(self, upto_min: int | None = None, *, miss_budget: float = MISS_BUDGET) -> np.ndarray:
        """Per region x model: the smallest multiple ``f`` of the hour's mean IW rate such that capacity
        ``f x mean`` would have left at most ``miss_budget`` of the history's IW requests above it, minute by
        minute (the within-hour bursts a plan at hourly grain must absorb)."""
        end = (self.eval_start_min if upto_min is None else upto_min) // 60
        R, M = len(self.regions), len(self.models)
        if end == 0:
            return np.ones((R, M))
        iw = self.requests[:, :, 0, : end * 60].reshape(R, M, end, 60)
        mean = iw.mean(axis=-1, keepdims=True)
        total = np.maximum(iw.sum(axis=(2, 3)), 1e-12)
        out = np.full((R, M), FACTORS[-1])
        for f in FACTORS[::-1]:
            over = np.maximum(iw - f * mean, 0.0).sum(axis=(2, 3)) / total
            out = np.where(over <= miss_budget, f, out)
        return out


def _minute_profile(arrival_s: np.ndarray, duration_s: float) -> np.ndarray:
    """A trace's arrivals per whole minute, normalised to mean 1, tiled to 60 minutes."""
    full = max(1, int(duration_s // 60))
    counts = np.bincount((arrival_s // 60).astype(np.int64), minlength=full)[:full].astype(np.float64)
    profile = counts / counts.mean() if counts.mean() > 0 else np.ones(full)
    return profile[np.arange(60) % full]


def _envelope(local_hour: np.ndarray, weekday: np.ndarray) -> np.ndarray:
    """Diurnal (trough at 02:00, peak at 14:00 local) times weekly (weekend dips) multiplier, peak 1."""
    phase = 2 * math.pi * (local_hour - TROUGH_HOUR) / (2 * (PEAK_HOUR - TROUGH_HOUR))
    daily = TROUGH + (1 - TROUGH) * (1 - np.cos(phase)) / 2
    weekly = np.select([weekday == 5, weekday == 6], list(WEEKEND), 1.0)
    return daily * weekly


def builtin_workload(
    fleet: FleetSpec, *, days: float = 7, history_days: float = 7, seed: int = 0, scale: float = 1.0
) -> FleetWorkload:
    """The built-in scenario (module docstring): ``history_days`` of history, then ``days`` to evaluate."""
    code, conv, note = demo_traces(seed)
    services = {"code": code, "conv": conv}
    profiles = {k: _minute_profile(t.arrival_s, t.duration_s) for k, t in services.items()}
    circulant = {k: np.stack([np.roll(p, s) for s in range(60)]) for k, p in profiles.items()}
    rng = np.random.default_rng(seed)
    minutes = round((days + history_days) * MINUTES_PER_DAY / 60) * 60
    hours = minutes // 60
    t_h = np.arange(minutes) / 60.0
    regions, models = fleet.region_names, fleet.model_names
    out = np.zeros((len(regions), len(models), len(TIERS), minutes))
    lengths: dict[tuple[int, str], tuple[np.ndarray, np.ndarray]] = {}
    for m, name in enumerate(models):
        service = BUILTIN_SERVICE.get(name, ("conv", "code")[m % 2])
        trace = services[service]
        lengths[(m, "iw")] = lengths[(m, "niw")] = (
            np.asarray(trace.prompt_tokens, np.int64),
            np.asarray(trace.output_tokens, np.int64),
        )
        for r, region in enumerate(fleet.regions):
            local = t_h + region.utc_offset_h
            env = _envelope(np.mod(local, 24), np.mod(np.floor(local / 24), 7).astype(np.int64))
            peak = scale * BUILTIN_PEAK_RPS.get(name, 50.0) * BUILTIN_REGION_SCALE.get(region.name, 0.7)
            mean_env = env.mean()
            for t, tier in enumerate(TIERS):
                rate = peak * env * (1.0 if tier == "iw" else NIW_SHARE)
                noise = np.exp(rng.normal(0, HOURLY_NOISE, hours) - HOURLY_NOISE**2 / 2)
                copies = int(np.clip(round(peak * mean_env / trace.rate_rps), 1, 64))
                shifts = rng.multinomial(copies, np.full(60, 1 / 60), size=hours)
                within = (shifts @ circulant[service]) / copies  # hours x 60
                out[r, m, t] = rate * 60.0 * np.repeat(noise, 60) * within.ravel()
    source = (
        f"built-in: {len(regions)} regions x {len(models)} models, {history_days:g} days history + {days:g} "
        f"days; lengths and minute burstiness from {note}; diurnal/weekly envelope shaped"
    )
    return FleetWorkload(
        tuple(regions),
        tuple(models),
        out,
        lengths,
        round(history_days * MINUTES_PER_DAY),
        0,
        source,
    )


def _bad(path: str, line: int, message: str) -> TraceError:
    return TraceError(message, path=path, line=line)


def load_workload_csv(
    path: str | Path, fleet: FleetSpec, *, history_hours: int | None = None, all_history: bool = False
) -> FleetWorkload:
    """A workload CSV (module docstring) for ``fleet``; errors name the file and line. The first
    ``history_hours`` (default: half the span, at most 7 days; ``all_history``: all of it) are history."""
    where = str(path)
    try:
        frame = pd.read_csv(path, skipinitialspace=True)
    except FileNotFoundError as exc:
        raise TraceError("workload file not found", path=where) from exc
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise TraceError(f"cannot read workload CSV: {exc}", path=where) from exc
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise TraceError(f"missing column(s) {missing}; expected {','.join(COLUMNS)}", path=where, line=1)
    if frame.empty:
        raise TraceError("no rows", path=where)
    times = _times(frame["time"], where)
    region_of = {n: i for i, n in enumerate(fleet.region_names)}
    model_of = {n: i for i, n in enumerate(fleet.model_names)}
    rows = len(frame)
    r_idx, m_idx, t_idx = np.empty(rows, np.int64), np.empty(rows, np.int64), np.empty(rows, np.int64)
    numbers = {}
    for col in ("requests", "mean_prompt_tokens", "mean_output_tokens"):
        values = pd.to_numeric(frame[col], errors="coerce").to_numpy(np.float64)
        bad = np.flatnonzero(~np.isfinite(values) | (values < 0))
        if bad.size:
            raise _bad(
                where, int(bad[0]) + 2, f"{col} must be a number >= 0, got {frame[col].iloc[bad[0]]!r}"
            )
        numbers[col] = values
    for i, (region, model, tier) in enumerate(
        zip(frame["region"], frame["model"], frame["tier"], strict=True)
    ):
        if str(region) not in region_of:
            raise _bad(where, i + 2, f"unknown region {region!r}; the fleet has {', '.join(region_of)}")
        try:
            key = get_model(str(model)).name
        except OServeError:
            key = str(model)
        if key not in model_of:
            raise _bad(where, i + 2, f"unknown model {model!r}; the fleet serves {', '.join(model_of)}")
        t = str(tier).strip().lower()
        if t not in TIERS:
            raise _bad(where, i + 2, f"unknown tier {tier!r}; use iw or niw")
        r_idx[i], m_idx[i], t_idx[i] = region_of[str(region)], model_of[key], TIERS.index(t)
    distinct = np.unique(times)
    gaps = np.diff(distinct)
    grain = 3600.0 if gaps.size and np.all(np.mod(gaps, 3600.0) == 0) else 60.0
    if gaps.size and not np.all(np.mod(gaps, 60.0) == 0):
        raise TraceError(
            "times must fall on whole minutes (minute grain) or whole hours (hour grain)", path=where
        )
    start = distinct[0]
    minute = ((times - start) // 60).astype(np.int64)
    span = int(minute.max()) + int(grain // 60)
    span = max(60, math.ceil(span / 60) * 60)
    out = np.zeros((len(fleet.regions), len(fleet.models), len(TIERS), span))
    reqs = numbers["requests"]
    if grain == 3600.0:
        for k in range(60):
            np.add.at(out, (r_idx, m_idx, t_idx, minute + k), reqs / 60.0)
    else:
        np.add.at(out, (r_idx, m_idx, t_idx, minute), reqs)
    lengths = {}
    for m in range(len(fleet.models)):
        for t, tier in enumerate(TIERS):
            sel = (m_idx == m) & (t_idx == t)
            if not (sel.any() and reqs[sel].sum() > 0):
                sel = m_idx == m
            if not (sel.any() and reqs[sel].sum() > 0):
                raise TraceError(f"model {fleet.model_names[m]} has no requests in the file", path=where)
            w = reqs[sel] / reqs[sel].sum()
            p = max(1, round(float(w @ numbers["mean_prompt_tokens"][sel])))
            o = max(1, round(float(w @ numbers["mean_output_tokens"][sel])))
            lengths[(m, tier)] = (np.array([p]), np.array([o]))
    hours = span // 60
    history = min(hours // 2, 7 * 24) if history_hours is None else history_hours
    history = hours if all_history else history
    if not 0 <= history <= hours or (history == hours and not all_history):
        raise ConfigError(f"history of {history} h leaves nothing to evaluate in a {hours} h workload")
    weekday = int(pd.Timestamp(start, unit="s").day_of_week) if start > 1e9 else 0
    return FleetWorkload(
        tuple(fleet.region_names),
        tuple(fleet.model_names),
        out,
        lengths,
        history * 60,
        weekday,
        f"{Path(path).name}: {rows:,} rows at {'hour' if grain == 3600 else 'minute'} grain, {hours} h",
    )


def _times(column: pd.Series, where: str) -> np.ndarray:
    """Seconds (numbers as given; ISO timestamps as seconds since the epoch)."""
    numeric = pd.to_numeric(column, errors="coerce")
    if numeric.notna().all():
        return numeric.to_numpy(np.float64)
    parsed = pd.to_datetime(column, errors="coerce", utc=True)
    bad = np.flatnonzero(parsed.isna().to_numpy())
    if bad.size:
        raise _bad(
            where, int(bad[0]) + 2, f"time {column.iloc[bad[0]]!r} is neither seconds nor an ISO timestamp"
        )
    return (parsed - pd.Timestamp(0, tz="UTC")).dt.total_seconds().to_numpy(np.float64)
