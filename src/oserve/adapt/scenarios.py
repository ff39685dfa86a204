"""Scenarios for the adaptive policies and the baselines, built only from real traffic: the Azure LLM inference
traces (2023, one hour each of code completion and conversation) and the Mooncake (Kimi, FAST'25) synthetic trace.

- ``conv``: the conversation hour (``azure_conv_2023``), its own arrivals and lengths.
- ``code``: the code-completion hour (``azure_code_2023``): long prompts, short outputs, bursty minutes.
- ``shifting``: alternating ``phase_s`` slices of the code hour and the conversation hour (``alternate``), each
  at the same time offset as in its source: the mix flips between prompt-heavy and output-heavy phases.
- ``ramp``: the conversation hour thinned by a linear ramp: at time t a request is kept with probability
  ``0.25 + 0.75 * t / span``, so the rate climbs from a quarter to the full (scaled) rate.
- ``long``: the conversation hour superposed on the Mooncake synthetic trace (``blend``, each at its own rate:
  3.9 and 5.5 req/s, so about 41 % of requests are Mooncake's, mean prompt 15.3k tokens, p99 66k; about 17 % of
  all requests have prompts of 16k tokens or more). Mooncake spans 1,022 s; it is looped to the conversation
  hour's span (or ``minutes``), each loop's prefix block ids (``hash_ids``) offset so that prefixes are shared
  within a loop as in the trace, never across loops. Conversation requests get block ids of their own (no prefix
  shared: the Azure trace has none). Requests longer than the model's context are dropped (``vllm serve``
  refuses them, whatever the deployment).
- ``two-class``: ``long`` with each request's SLO class in a ``slo_class`` column: the conversation is
  interactive (the default class: the run's own TTFT/TPOT targets), every Mooncake request is ``batch``
  long-document work held to an end-to-end target only. ``SCENARIO_SLO["two-class"]`` is the ``--slo`` spelling
  (``batch:prompt>=16000:e2e=600``: 600 s E2E; live traffic naming no class is batch from 16k prompt tokens).
- ``day``: a shifting day: ``phase_s`` phases alternating the three mixes conv, code and long (``alternate``),
  each scaled apart like ``shifting``'s sources, so every phase loads the cluster alike and the mix moves from
  output-heavy chat to prompt-heavy code to long documents and back.

- ``swing``: a day/night rate swing of the code hour: ``phase_s`` phases alternating the hour thinned to
  ``SWING_LOW`` (0.2) of the scaled rate (night, first) and the hour at the full scaled rate (day), each at its own
  time offset (use phases of 300 s or more: the code hour's 150 s slices alternate quiet and busy by up to 10x).
  The mix stays; only the rate moves, so the best deployment does: at night fewer, wider replicas prefill and
  decode faster, by day the narrow ones carry the load (Llama-3.1-8B on 1x8xH100, 20 minutes, 300 s phases, load
  0.9, each phase kind simulated alone: night p99 E2E 1.23 s on 4 x TP2, 0.74 s on 1 x TP8; by day 1 x TP8 meets
  the SLO for 71 % of requests, 4 x TP2 for 99 %: docs/adapt.md, "Switching headroom").

``PHASES`` names each phased scenario's phase kinds in their order (phase i is kind ``i % len``).

The long scenarios (``long``, ``two-class``, ``day``) need a model holding ``LONG_CONTEXT_TOKENS`` (e.g.
``llama-3.1-8b``, ``llama-3.1-70b``); others raise a ``ConfigError``. Each source is scaled (``scale_rate``:
resample, no synthetic lengths) to ``load`` of its reference rate (``adapt.load_reference``): ``planned`` (the
default here), its p90 minute at the best homogeneous deployment's planned capacity; ``simulated`` (the
headline's), the rate at which the ``static`` baseline keeps 90 % within the SLO in the simulator. A shifting day's
sources are scaled apart, so all phases load the cluster alike and only the mix changes. ``MIXED_CLUSTERS`` names an H100 + A100 cluster per model for the same runs on mixed GPUs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np

from oserve.adapt.load_reference import LOAD_REFERENCES, static_knee
from oserve.errors import ConfigError
from oserve.planner import Slo, demands_from_trace, plan
from oserve.planner.slo_classes import SloClasses, parse_slo_classes
from oserve.spec import Cluster, ModelSpec
from oserve.trace import Trace, alternate, blend, concat, load_trace, scale_rate, window

__all__ = [
    "BLOCK_TOKENS",
    "LONG_CONTEXT_TOKENS",
    "LONG_SCENARIOS",
    "MIXED_CLUSTERS",
    "PHASES",
    "SCENARIOS",
    "SCENARIO_SLO",
    "SWING_LOW",
    "build_scenario",
    "scale_to_load",
    "scenario_slo",
]

SCENARIOS = ("conv", "code", "shifting", "ramp", "long", "two-class", "day", "swing")
#: the phased scenarios' phase kinds, in order: phase i (``[i * phase_s, (i + 1) * phase_s)``) is kind ``i % len``
PHASES: dict[str, tuple[str, ...]] = {
    "shifting": ("code", "conv"),
    "day": ("conv", "code", "long"),
    "swing": ("night", "day"),
}
SWING_LOW = 0.2  # the night phases' share of the day phases' rate (``swing``)
#: the scenarios with Mooncake's long prompts: they need a model of at least ``LONG_CONTEXT_TOKENS`` context
LONG_SCENARIOS = ("long", "two-class", "day")
LONG_CONTEXT_TOKENS = 32_768
#: the ``--slo`` spelling a scenario is scored under (``planner.slo_classes``); absent: the run's single SLO
SCENARIO_SLO: dict[str, str] = {"two-class": "batch:prompt>=16000:e2e=600"}
#: a mixed H100 + A100 cluster per model, as many GPUs as the model's homogeneous headline cluster
MIXED_CLUSTERS: dict[str, str] = {
    "llama-3-8b": "1x4xH100+1x4xA100-80GB",
    "llama-3.1-8b": "1x4xH100+1x4xA100-80GB",
    "llama-2-70b": "1x8xH100+1x8xA100-80GB",
    "llama-3.1-70b": "1x8xH100+1x8xA100-80GB",
}
BLOCK_TOKENS = 512  # tokens per Mooncake prefix block (one ``hash_ids`` entry)
_FILES = {
    "code": "azure_code_2023.csv",
    "conv": "azure_conv_2023.csv",
    "mooncake": "mooncake_synthetic.jsonl",
}


def scenario_slo(name: str) -> str:
    """The ``--slo`` spelling scenario ``name`` is scored under (``auto``: the model's default, one class)."""
    return SCENARIO_SLO.get(name, "auto")


def scale_to_load(
    trace: Trace,
    model: ModelSpec,
    cluster: Cluster,
    slo: Slo,
    load: float,
    *,
    seed: int = 0,
    reference: str = "planned",
    classes: SloClasses | None = None,
    cache_dir: Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> Trace:
    """``trace`` resampled to ``load`` of its reference rate (``adapt.load_reference``): ``planned``, its p90
    minute at ``load`` of the best homogeneous deployment's planned capacity; ``simulated``, ``load`` times the
    rate at which the ``static`` baseline keeps 90 % within the SLO (``classes``: the scenario's, default one
    class of ``slo``)."""
    if reference not in LOAD_REFERENCES:
        raise ConfigError(f"unknown load reference {reference!r}; choose from {', '.join(LOAD_REFERENCES)}")
    demands, grid = demands_from_trace(trace, peak_quantile=0.9)
    factor = plan(model, cluster, demands, slo, grid=grid).baseline_alpha
    if reference == "simulated":
        classes = classes or SloClasses(slo)
        factor = static_knee(
            trace, model, cluster, classes, factor, seed=seed, cache_dir=cache_dir, progress=progress
        ).simulated
    return scale_rate(trace, load * factor, seed=seed)


def _ramp(trace: Trace, seed: int) -> Trace:
    keep = 0.25 + 0.75 * trace.arrival_s / max(trace.duration_s, 1e-9)
    rng = np.random.default_rng(seed)
    return trace.take(np.flatnonzero(rng.random(len(trace)) < keep), name=f"{trace.name}-ramp")


def _with_extras(trace: Trace, **columns: np.ndarray) -> Trace:
    """``trace`` with extra per-request columns added (or replaced)."""
    return Trace.from_arrays(
        trace.arrival_s,
        trace.prompt_tokens,
        trace.output_tokens,
        duration_s=trace.duration_s,
        name=trace.name,
        source=trace.source,
        extras={**trace.extras, **columns},
        report=trace.report,
        sort=False,
    )


def _object_column(values: list[np.ndarray]) -> np.ndarray:
    """One array per request as an object column (never broadcast into 2-D, whatever the lengths)."""
    column = np.empty(len(values), dtype=object)
    for i, v in enumerate(values):
        column[i] = v
    return column


def _own_blocks(trace: Trace, first_id: int) -> Trace:
    """``trace`` with ``hash_ids`` where it has none: every request its own fresh block ids (no shared prefix),
    one per ``BLOCK_TOKENS`` of prompt, numbered from ``first_id``."""
    if "hash_ids" in trace.extras:
        return trace
    counts = -(-trace.prompt_tokens // BLOCK_TOKENS)
    ids = np.arange(first_id, first_id + int(counts.sum()), dtype=np.int64)
    parts = np.split(ids, np.cumsum(counts)[:-1]) if len(trace) else []
    return _with_extras(trace, hash_ids=_object_column(parts))


def _next_block_id(trace: Trace) -> int:
    ids = trace.extras.get("hash_ids")
    if ids is None or not len(ids):
        return 0
    return 1 + max((int(x.max()) for x in ids if len(x)), default=-1)


def _looped(trace: Trace, span_s: float) -> Trace:
    """``trace`` played back to back until ``span_s``; each loop's block ids offset past the previous loop's."""
    loops = max(1, math.ceil(span_s / trace.duration_s))
    stride = _next_block_id(trace)
    parts = []
    for k in range(loops):
        ids = _object_column([x + k * stride for x in trace.extras["hash_ids"]])
        parts.append(_with_extras(trace, hash_ids=ids))
    return window(concat(parts, name=trace.name), 0.0, span_s)


def _check_long_context(name: str, model: ModelSpec) -> None:
    if model.max_position_embeddings < LONG_CONTEXT_TOKENS:
        raise ConfigError(
            f"scenario {name!r} has prompts of up to 128k tokens and needs a model of at least "
            f"{LONG_CONTEXT_TOKENS:,} tokens of context; {model.name} holds {model.max_position_embeddings:,} "
            "(try llama-3.1-8b or llama-3.1-70b)"
        )


def _long_mix(conv: Trace, mooncake: Trace, model: ModelSpec, *, classes: bool) -> Trace:
    """The conversation hour and Mooncake (looped to its span) superposed at their own rates; with ``classes``
    an ``slo_class`` column (Mooncake ``batch``, the conversation unnamed: the default class)."""
    looped = _looped(mooncake, conv.duration_s)
    conv = _own_blocks(conv, _next_block_id(looped))
    if classes:
        conv = _with_extras(conv, slo_class=np.full(len(conv), "", dtype=object))
        looped = _with_extras(looped, slo_class=np.full(len(looped), "batch", dtype=object))
    mixed = blend([conv, looped], name="two-class" if classes else "long")
    fits = mixed.prompt_tokens + mixed.output_tokens <= model.max_position_embeddings
    return mixed.take(np.flatnonzero(fits))


def build_scenario(
    name: str,
    traces: Path,
    model: ModelSpec,
    cluster: Cluster,
    slo: Slo,
    *,
    load: float = 0.75,
    minutes: float | None = None,
    phase_s: float = 600.0,
    seed: int = 0,
    offset_minutes: float = 0.0,
    reference: str = "planned",
    classes: SloClasses | None = None,
    cache_dir: Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> Trace:
    """The scenario ``name`` on ``model``/``cluster`` at ``load`` of its ``reference`` rate (``scale_to_load``,
    the knee scored under ``classes``, default the scenario's own: ``SCENARIO_SLO``, else one class of ``slo``);
    ``minutes`` keeps the first part only, from ``offset_minutes`` into the Azure hours (a later window: traffic a
    run at offset 0 never saw)."""
    if name not in SCENARIOS:
        raise ConfigError(f"unknown scenario {name!r}; choose from {', '.join(SCENARIOS)}")
    if name in LONG_SCENARIOS:
        _check_long_context(name, model)
    keys = ("code", "conv") if name not in LONG_SCENARIOS else ("code", "conv", "mooncake")
    paths = {k: traces / _FILES[k] for k in keys}
    for p in paths.values():
        if not p.is_file():
            raise ConfigError(
                f"trace {p} not found (the scenarios need the Azure 2023 traces, the long ones Mooncake's too)"
            )
    if not 0.0 <= offset_minutes < 1e6:
        raise ConfigError(f"offset must be >= 0 minutes, got {offset_minutes}")
    span = None if minutes is None else minutes * 60.0
    start = offset_minutes * 60.0

    def source(key: str) -> Trace:
        t = load_trace(paths[key])
        if key == "mooncake" or (span is None and start == 0.0):
            return t
        if start >= t.duration_s:
            raise ConfigError(
                f"offset {offset_minutes:g} min is past the end of {paths[key].name} ({t.duration_s / 60:.1f} min)"
            )
        return window(t, start, None if span is None else start + span)

    classes = classes or parse_slo_classes(scenario_slo(name), slo)

    def scaled(t: Trace) -> Trace:
        return scale_to_load(
            t,
            model,
            cluster,
            slo,
            load,
            seed=seed,
            reference=reference,
            classes=classes,
            cache_dir=cache_dir,
            progress=progress,
        )

    if name in ("conv", "code"):
        return scaled(source(name))
    if name == "swing":
        day = scaled(source("code"))
        night = scale_rate(day, SWING_LOW, seed=seed + 1)
        return alternate([night, day], phase_s=phase_s, name="swing")
    if name == "ramp":
        return _ramp(scaled(source("conv")), seed)
    if name in ("long", "two-class"):
        return scaled(_long_mix(source("conv"), source("mooncake"), model, classes=name == "two-class"))
    code, conv = scaled(source("code")), scaled(source("conv"))
    if name == "shifting":
        return alternate([code, conv], phase_s=phase_s, name="shifting")
    # day: conv, code, long phases; every source with block ids (alternate keeps the columns all share)
    long = scaled(_long_mix(source("conv"), source("mooncake"), model, classes=False))
    first = _next_block_id(long)
    conv = _own_blocks(conv, first)
    code = _own_blocks(code, _next_block_id(conv))
    return alternate([conv, code, long], phase_s=phase_s, name="day")
