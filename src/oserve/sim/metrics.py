"""What a simulation produces: per-request records, per-replica figures, switches, and a summary.

Latencies in seconds: TTFT = first token - arrival; TPOT = (finish - first token) / (output tokens - 1), for
requests with more than one output token; E2E = finish - arrival; normalised latency = E2E / output tokens.
``prefix_hit_rate`` is the prompt tokens served from the prefix cache at
each request's first admission over the completed requests' prompt tokens (0 for a trace without block hashes).
Goodput counts completed requests meeting every SLO given; dropped requests (more KV than the replica holds) and
rejected ones (prompt + output over the replica's ``max_model_len``, which vLLM answers with HTTP 400, never
served) count against SLO attainment.

Default SLOs are fixed, not derived: TTFT 2 s and TPOT 0.2 s, the interactive chat targets the serving papers use
for 70B-class models (DistServe, OServe); pass ``slo`` to ``simulate`` or ``summarize`` for others.

SLO classes (``planner.slo_classes``): with ``class_slos`` (class name -> ``slo`` mapping) and a ``slo_class``
column in the records (``with_classes`` adds it), each request is scored against its own class's targets (a
class not in the mapping: ``slo``; a metric a class leaves out: no target), and the summary adds attainment per
class (``slo_attainment_by_class``, ``requests_by_class``) beside the overall. ``slo_attainment_by_type`` is
always there.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from oserve.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from oserve.sim.cluster import _Sim

__all__ = ["DEFAULT_SLO", "SimResult", "build_result", "summarize", "with_classes"]

DEFAULT_SLO: dict[str, float] = {"ttft_s": 2.0, "tpot_s": 0.2}
_SLO_KEYS = ("ttft_s", "tpot_s", "e2e_s", "ttft_per_token_s")


@dataclass(frozen=True, slots=True)
class SimResult:
    """``records``: one row per request; ``replicas``: one row per replica the run had (its config, GPU ids and
    times: GPUs held from ``alloc_s``, serving from ``ready_s``, stopped by a switch at ``stop_s``, GPUs released
    at ``release_s``; inf / NaN when it never happened); ``switches``: what each switch did; ``migrations``: one
    row per live migration of a running request (``sim.migration``); ``summary``: the figures (see
    :func:`summarize`)."""

    records: pd.DataFrame
    replicas: pd.DataFrame
    summary: dict[str, Any]
    switches: list[dict[str, Any]] = field(default_factory=list)
    migrations: pd.DataFrame | None = None

    def write_records(self, path: str | Path) -> Path:
        """Per-request records as CSV, or Parquet when the name ends in ``.parquet``."""
        path = Path(path)
        if path.suffix == ".parquet":
            self.records.to_parquet(path, index=False)
        else:
            self.records.to_csv(path, index=False)
        return path

    def write_summary(self, path: str | Path) -> Path:
        """The summary, per-replica table and switches as JSON."""
        path = Path(path)
        data = {
            "summary": self.summary,
            "replicas": self.replicas.to_dict(orient="records"),
            "switches": self.switches,
        }
        path.write_text(json.dumps(data, indent=2, default=_json_default))
        return path


def _json_default(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def _pct(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q)) if len(values) else math.nan


def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if len(values) else math.nan


def _check_slo(slo: Mapping[str, float]) -> dict[str, float]:
    unknown = set(slo) - set(_SLO_KEYS)
    if unknown:
        raise ConfigError(f"unknown SLO keys {sorted(unknown)}; use {', '.join(_SLO_KEYS)}")
    return dict(slo)


def _targets(
    records: pd.DataFrame, slo: dict[str, float], class_slos: Mapping[str, Mapping[str, float]] | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per request (TTFT base, TTFT per token, TPOT, E2E) targets in seconds, inf for no target."""
    n = len(records)

    def column(target: Mapping[str, float], key: str) -> float:
        return float(target.get(key, 0.0 if key == "ttft_per_token_s" else math.inf))

    keys = ("ttft_s", "ttft_per_token_s", "tpot_s", "e2e_s")
    out = [np.full(n, column(slo, k)) for k in keys]
    if class_slos and "slo_class" in records:
        names = records["slo_class"].to_numpy()
        for name, target in class_slos.items():
            hit = names == name
            if hit.any():
                target = _check_slo(target)
                for arr, k in zip(out, keys, strict=True):
                    arr[hit] = column(target, k)
    return out[0], out[1], out[2], out[3]


def _shares(
    ok: np.ndarray, counted: np.ndarray, labels: np.ndarray
) -> tuple[dict[str, float], dict[str, int]]:
    attained, sizes = {}, {}
    for label in sorted(set(labels[counted].tolist()), key=str):
        mask = counted & (labels == label)
        sizes[str(label)] = int(mask.sum())
        attained[str(label)] = int(ok[mask].sum()) / int(mask.sum())
    return attained, sizes


def summarize(
    records: pd.DataFrame,
    span_s: float,
    *,
    slo: dict[str, float] | None = None,
    class_slos: Mapping[str, Mapping[str, float]] | None = None,
    offered_s: float | None = None,
) -> dict[str, Any]:
    """Latency percentiles and means, throughput, goodput and SLO attainment of ``records`` over ``span_s``
    (overall, per type and, with ``class_slos``, per class). Throughput is over ``span_s`` (the run, to its last
    completion); goodput over ``offered_s`` where given (the trace's span of arrivals, the same for every policy
    on a trace, so goodputs compare as the requests they met: over the run's own span a policy whose last
    request finished later lost up to 1% of goodput for nothing), else over ``span_s``."""
    slo = _check_slo(DEFAULT_SLO if slo is None else slo)
    rejected = records["rejected"].to_numpy() if "rejected" in records else np.zeros(len(records), bool)
    dropped = records["dropped"].to_numpy().astype(bool)
    finished = ~dropped & ~rejected & records["finish_s"].notna().to_numpy()
    done = records[finished]
    arrival = done["arrival_s"].to_numpy()
    first = done["first_token_s"].to_numpy()
    finish = done["finish_s"].to_numpy()
    out_tokens = np.maximum(done["output_tokens"].to_numpy(), 1)
    ttft = first - arrival
    e2e = finish - arrival
    multi = out_tokens > 1
    tpot_all = np.where(multi, (finish - first) / np.maximum(out_tokens - 1, 1), 0.0)
    tpot = tpot_all[multi]
    ttft_base, per_token, tpot_target, e2e_target = (a[finished] for a in _targets(records, slo, class_slos))
    # length-aware TTFT: base plus seconds per prompt token (planner.Slo.ttft_target)
    ok = ttft <= ttft_base + per_token * done["prompt_tokens"].to_numpy()
    ok &= tpot_all <= tpot_target
    ok &= e2e <= e2e_target
    ok_all = np.zeros(len(records), bool)
    ok_all[finished] = ok
    counted = finished | dropped | rejected
    by_type = _shares(ok_all, counted, records["type_name"].to_numpy())[0] if "type_name" in records else {}
    by_class: dict[str, float] = {}
    class_sizes: dict[str, int] = {}
    if class_slos and "slo_class" in records:
        by_class, class_sizes = _shares(ok_all, counted, records["slo_class"].to_numpy())
    n_dropped = int(records["dropped"].sum())
    span = span_s if span_s > 0 else math.nan
    offered = offered_s if offered_s is not None and offered_s > 0 else span
    n_rejected = int(rejected.sum())
    total = len(done) + n_dropped + n_rejected
    return {
        "requests": len(records),
        "completed": len(done),
        "dropped": n_dropped,
        "rejected": n_rejected,
        # prefix-cache hit tokens at first admission over the prompt tokens of the completed requests
        "prefix_hit_rate": float(done["cached_tokens"].sum()) / max(int(done["prompt_tokens"].sum()), 1)
        if "cached_tokens" in done
        else 0.0,
        "preemptions": int(records["preemptions"].sum()),
        "rerouted": int((records["rerouted"] > 0).sum()),
        "span_s": span_s,
        "offered_s": offered,
        "ttft_p50": _pct(ttft, 50),
        "ttft_p90": _pct(ttft, 90),
        "ttft_p99": _pct(ttft, 99),
        "ttft_mean": _mean(ttft),
        "tpot_p50": _pct(tpot, 50),
        "tpot_p90": _pct(tpot, 90),
        "tpot_p99": _pct(tpot, 99),
        "tpot_mean": _mean(tpot),
        "e2e_p50": _pct(e2e, 50),
        "e2e_p90": _pct(e2e, 90),
        "e2e_p99": _pct(e2e, 99),
        "e2e_mean": _mean(e2e),
        "normalized_latency_mean": _mean(e2e / out_tokens),
        "throughput_rps": len(done) / span,
        "tokens_per_s": float(done["prompt_tokens"].sum() + done["output_tokens"].sum()) / span,
        "output_tokens_per_s": float(done["output_tokens"].sum()) / span,
        "goodput_rps": int(ok.sum()) / offered,
        "slo_attainment": int(ok.sum()) / total if total else math.nan,
        "slo_attainment_by_type": by_type,
        **(
            {
                "slo_attainment_by_class": by_class,
                "requests_by_class": class_sizes,
                "class_slos": dict(class_slos),
            }
            if class_slos
            else {}
        ),
        "slo": slo,
    }


def with_classes(
    result: SimResult,
    classes: np.ndarray,
    class_slos: Mapping[str, Mapping[str, float]],
    slo: dict[str, float],
) -> SimResult:
    """``result`` scored per class: records get ``slo_class`` (one name per request, in request order) and the
    summary's attainment figures are recomputed against each request's class (``slo`` for the default)."""
    records = result.records.assign(slo_class=np.asarray(classes, dtype=object)[result.records["request_id"]])
    scored = summarize(
        records,
        float(result.summary["span_s"]),
        slo=slo,
        class_slos=class_slos,
        offered_s=result.summary.get("offered_s"),
    )
    keep = ("goodput_rps", "slo_attainment", "slo_attainment_by_type", "slo_attainment_by_class",
            "requests_by_class", "class_slos", "slo")  # fmt: skip
    summary = {**result.summary, **{k: scored[k] for k in keep if k in scored}}
    return SimResult(records, result.replicas, summary, result.switches, result.migrations)


def build_result(sim: _Sim, slo: dict[str, float] | None) -> SimResult:
    trace = sim.trace
    names = sim.grid.names
    types = np.asarray(sim.types, dtype=np.int64)
    replica_idx = np.asarray(sim.replica_of, dtype=np.int64)
    replica_names = np.array([r.name for r in sim.replicas] + [""], dtype=object)
    records = pd.DataFrame(
        {
            "request_id": np.arange(len(trace), dtype=np.int64),
            "arrival_s": trace.arrival_s,
            "type": types,
            "type_name": np.array(names, dtype=object)[types] if len(types) else np.array([], dtype=object),
            "replica": replica_names[replica_idx],
            "first_token_s": np.asarray(sim.req.first_token_s, dtype=np.float64),
            "finish_s": np.asarray(sim.req.finish_s, dtype=np.float64),
            "prompt_tokens": trace.prompt_tokens,
            "output_tokens": trace.output_tokens,
            "preemptions": np.asarray(sim.req.preemptions, dtype=np.int64),
            "rerouted": np.asarray(sim.rerouted, dtype=np.int64),
            "migrations": np.asarray(sim.migrated, dtype=np.int64),
            "dropped": sim.dropped,
            "rejected": sim.rejected,
            "cached_tokens": np.maximum(np.asarray(sim.req.cached, dtype=np.int64), 0),
        }
    )
    span = sim.span_s()
    rows = []
    for r in sim.replicas:
        c = r.spec.config
        end = span if math.isnan(r.release_s) else r.release_s
        held = max(0.0, end - r.alloc_s) if r.ready_s != math.inf or not math.isnan(r.release_s) else 0.0
        busy = sum(sim.engines[e].busy_s for e in r.engines) / c.pp
        serving = max(0.0, end - r.ready_s) if r.ready_s != math.inf else 0.0
        rows.append(
            {
                "replica": r.name,
                "config": c.label,
                "gpus": c.num_gpus,
                "gpu_ids": r.spec.gpu_ids,
                "alloc_s": r.alloc_s,
                "ready_s": r.ready_s,
                "stop_s": r.stop_s,
                "release_s": r.release_s,
                "gpu_seconds": c.num_gpus * held,
                "busy_s": busy,
                "utilisation": busy / serving if serving > 0 else 0.0,
                "steps": sum(sim.engines[e].steps for e in r.engines),
            }
        )
    replicas = pd.DataFrame(rows)
    summary = summarize(records, span, slo=slo, offered_s=trace.duration_s)
    longest = max(sim.max_len, default=0)
    summary["unholdable"] = int(
        np.count_nonzero(np.asarray(sim.req.goal) > longest)
    )  # no replica the run had
    summary["oracle_lengths"] = (
        sim.oracle
    )  # typed and routed by the true output lengths (else the gateway's view)
    summary["switches"] = len(sim.switches)
    summary["reroutes"] = sim.reroutes
    moves = pd.DataFrame(
        [
            {
                "request_id": m.rid,
                "src": sim.replicas[sim.engine_replica[m.src]].name,
                "dst": sim.replicas[sim.engine_replica[m.dst]].name,
                "start_s": m.start_s,
                "stop_s": m.stop_s,
                "done_s": m.done_s,
                "kv_tokens": m.kv_tokens,
                "outcome": m.outcome or "copying",
            }
            for m in sim.moves
        ],
        columns=["request_id", "src", "dst", "start_s", "stop_s", "done_s", "kv_tokens", "outcome"],
    )
    summary["migrations"] = sim.waiting_moves + int((moves["outcome"] != "aborted").sum())
    summary["migrations_running"] = int(moves["outcome"].isin(["moved", "queued"]).sum())
    summary["gpu_seconds"] = float(replicas["gpu_seconds"].sum())
    summary["utilisation"] = dict(zip(replicas["replica"], replicas["utilisation"].round(4), strict=True))
    return SimResult(records, replicas, summary, list(sim.switches), moves)
