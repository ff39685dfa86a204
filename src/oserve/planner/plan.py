"""``plan``: the deployment (replicas, GPUs, routing weights) that sustains the most load within the SLO.

capacity mu per (type, config) -> exact MILP over replica counts (``method="milp"``), or the flow-guided
refinement from the best homogeneous deployment (``"refine"``); ``"auto"`` solves the MILP under a time limit
and keeps the better of it and the refinement when the limit cuts it short. Idle GPUs left over are filled with
whatever raises alpha most (or serves the mix best per GPU). Baselines, scored by the same LP: the best
homogeneous deployment (one TP/PP shape, as many replicas as the cluster holds) and vLLM's default shape.

Each type is priced at its own target (``type_slos``, from the SLO classes of its requests, else ``slo``); a type
no config serves within it is planned best-effort at a relaxed target and reported (``planner.best_effort``),
never refused. Only requests beyond every config's ``max_model_len`` are left out (``unheld_types``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from oserve.errors import ConfigError, InfeasibleError
from oserve.perf import Calibration
from oserve.planner.baselines import nearest_shape, vllm_default_deployment
from oserve.planner.best_effort import BestEffort, relax_unservable
from oserve.planner.capacity import Capacity, CapacityModel
from oserve.planner.demand import TypeDemand
from oserve.planner.flow import FlowResult, max_load_scale
from oserve.planner.latency import latency_matrix, min_latency
from oserve.planner.lp import describe_mip
from oserve.planner.milp import optimal_counts
from oserve.planner.placement import PackingRows, candidate_configs, packing_rows, place
from oserve.planner.refine import refine
from oserve.planner.slo import Slo
from oserve.spec import Cluster, Deployment, ModelSpec, Replica, ReplicaConfig
from oserve.spec.grid import RequestGrid
from oserve.trace import TypeGrid

__all__ = ["METHODS", "SPILL", "Plan", "config_columns", "plan", "replica_counts", "routing_weights"]

METHODS = ("auto", "milp", "refine")


@dataclass(frozen=True, slots=True)
class Plan:
    """The planner's answer with what it was computed from (for reports, ``--json`` and the simulator)."""

    deployment: Deployment
    alpha: float
    method: str
    solve_seconds: float
    baseline: Deployment
    baseline_alpha: float
    vllm_default_alpha: float
    slo: Slo
    demands: tuple[TypeDemand, ...]
    configs: tuple[ReplicaConfig, ...]
    mu_rps: np.ndarray  # types x configs
    limits: tuple[tuple[str, ...], ...]  # what bounds each mu
    flow: FlowResult  # of the chosen deployment, per config
    counts: np.ndarray  # replicas per config
    notes: tuple[str, ...] = field(default_factory=tuple)
    latency_s: np.ndarray | None = None  # types x configs unloaded E2E (when latency mode ran)
    packing: PackingRows | None = None
    unheld_types: tuple[str, ...] = ()  # types no config holds (``_unheld``), planned at rate 0
    best_effort: tuple[BestEffort, ...] = ()  # types planned at a relaxed target (``planner.best_effort``)
    type_slos: Mapping[str, Slo] = field(default_factory=dict)  # per-type targets other than ``slo``

    @property
    def gain(self) -> float:
        return self.alpha / self.baseline_alpha if self.baseline_alpha > 0 else float("inf")

    def to_dict(self) -> dict[str, Any]:
        names = [d.name for d in self.demands]
        return {
            "alpha": self.alpha,
            "baseline_alpha": self.baseline_alpha,
            "vllm_default_alpha": self.vllm_default_alpha,
            "gain": self.gain,
            "method": self.method,
            "solve_seconds": self.solve_seconds,
            "slo": self.slo.to_dict(),
            "baseline": self.baseline.note,
            "replicas": [
                {
                    "name": r.name,
                    "gpu": r.config.gpu.name,
                    "tp": r.config.tp,
                    "pp": r.config.pp,
                    "gpus": list(r.gpu_ids),
                    "weights": {
                        t: row[r.name] for t, row in self.deployment.weights.items() if r.name in row
                    },
                }
                for r in self.deployment.replicas
            ],
            "types": [d.to_dict() for d in self.demands],
            "capacity_rps": {
                c.label: {n: float(self.mu_rps[k, j]) for k, n in enumerate(names)}
                for j, c in enumerate(self.configs)
            },
            "limiting_types": dict(self.flow.limiting_types(names, top=len(names))),
            "type_slos": {t: s.to_dict() for t, s in self.type_slos.items()},
            "best_effort": [b.to_dict() for b in self.best_effort],
            "unheld_types": list(self.unheld_types),
            "notes": list(self.notes),
        }


def _unheld(demands: Sequence[TypeDemand], limits: list[list[str]]) -> list[int]:
    """Types no candidate config can hold (their long requests exceed every ``max_model_len``): planned at
    rate 0 and reported; vLLM rejects such requests wherever they go."""
    return [k for k, d in enumerate(demands) if d.rate_rps > 0 and all(lim == "context" for lim in limits[k])]


def _fill(counts, rates, mu, configs: list[ReplicaConfig], packing: PackingRows, cap: float) -> np.ndarray:
    """Put idle GPUs to work: the config that raises alpha most, else the one serving the mix best per GPU."""
    counts = counts.copy()
    mix = rates / rates.sum()
    per_gpu = (mix @ mu) / np.array([c.num_gpus for c in configs])
    while True:
        options = [j for j in range(len(counts)) if packing.max_count(counts, j) > 0]
        if not options:
            return counts
        base = max_load_scale(rates, mu, counts, cap=cap).alpha

        scores = []
        for j in options:
            trial = counts.copy()
            trial[j] += 1
            scores.append((round(max_load_scale(rates, mu, trial, cap=cap).alpha - base, 9), per_gpu[j], j))
        counts[max(scores)[2]] += 1


def _homogeneous_counts(configs: list[ReplicaConfig], packing: PackingRows) -> list[tuple[str, np.ndarray]]:
    """Each TP/PP shape on every GPU type that takes it, as many replicas as fit, and the nearest shape that fits
    on the other GPU types, so every baseline uses the whole cluster (equal GPU-hours)."""
    by_gpu: dict[str, list[int]] = {}
    for j, c in enumerate(configs):
        by_gpu.setdefault(c.gpu.name, []).append(j)
    out, seen = [], set()
    for tp, pp in dict.fromkeys((c.tp, c.pp) for c in configs):
        counts = np.zeros(len(configs), np.int64)
        label = f"TP{tp}" + (f"PP{pp}" if pp > 1 else "")
        others = []
        for cols in by_gpu.values():
            exact = [j for j in cols if (configs[j].tp, configs[j].pp) == (tp, pp)]
            j = exact[0] if exact else configs.index(nearest_shape((tp, pp), [configs[k] for k in cols]))
            counts[j] = packing.max_count(counts, j)
            if not exact and counts[j] > 0:
                others.append(configs[j].label)
        key = tuple(counts.tolist())
        if counts.sum() > 0 and key not in seen:
            seen.add(key)
            out.append((label + (f" (+ {', '.join(others)})" if others else ""), counts))
    return out


SPILL = 0.1  # share of each type's weight spread over every replica able to serve it


def config_columns(replicas: Sequence[Replica], configs: Sequence[ReplicaConfig]) -> list[int | None]:
    """Each replica's column in ``configs`` (same GPU type, TP and PP), None for a shape not among them."""
    index = {(c.gpu.name, c.tp, c.pp): j for j, c in enumerate(configs)}
    return [index.get((r.config.gpu.name, r.config.tp, r.config.pp)) for r in replicas]


def replica_counts(replicas: Sequence[Replica], configs: Sequence[ReplicaConfig]) -> np.ndarray:
    """Replicas per config of ``configs`` (a shape not among them counts for nothing: the LP cannot price it)."""
    counts = np.zeros(len(configs), np.int64)
    for j in config_columns(replicas, configs):
        if j is not None:
            counts[j] += 1
    return counts


def routing_weights(
    replicas: Sequence[Replica],
    configs: Sequence[ReplicaConfig],
    counts: np.ndarray,
    flow: FlowResult,
    demands: Sequence[TypeDemand],
    mu: np.ndarray,
    spill: float,
) -> dict[str, dict[str, float]]:
    """The LP's shares as per-replica weights of ``replicas`` (whose configs are among ``configs``, ``counts`` of
    each). ``spill`` of each type's weight goes evenly to every replica able to serve it within the SLO (mu > 0),
    so routers that follow live load may use them all."""
    cols = dict(zip((r.name for r in replicas), config_columns(replicas, configs), strict=True))
    weights: dict[str, dict[str, float]] = {}
    for k, d in enumerate(demands):
        if d.rate_rps <= 0:
            continue
        able = [r for r in replicas if cols[r.name] is not None and mu[k, cols[r.name]] > 0]
        row = {}
        for r in able:
            j = cols[r.name]
            share = (1 - spill) * float(flow.shares[k, j] / counts[j]) + spill / len(able)
            if share > 0:
                row[r.name] = share
        if row:
            weights[d.name] = row
    return weights


def _deployment(
    model: str,
    cluster,
    configs,
    counts,
    flow: FlowResult,
    demands,
    grid,
    note: str,
    mu: np.ndarray,
    spill: float,
) -> Deployment:
    """Place the counts and turn the LP's shares into weights (``routing_weights``)."""
    replicas = place(cluster, [(c, int(n)) for c, n in zip(configs, counts, strict=True)])
    weights = routing_weights(replicas, configs, counts, flow, demands, mu, spill)
    return Deployment(model, replicas, weights, RequestGrid.of(grid) if grid is not None else None, note)


def plan(
    model: ModelSpec,
    cluster: Cluster,
    demands: Sequence[TypeDemand],
    slo: Slo,
    *,
    grid: TypeGrid | None = None,
    calibration: Calibration | None = None,
    method: str = "auto",
    template: ReplicaConfig | None = None,
    tps: Sequence[int] = (1, 2, 4, 8),
    pps: Sequence[int] = (1, 2, 4),
    cap: float = 1.0,
    milp_time_limit_s: float = 10.0,
    spill: float = SPILL,
    latency_headroom: float | None = None,
    progress: Callable[[str], None] | None = None,
    type_slos: Mapping[str, Slo] | None = None,
) -> Plan:
    """Plan ``model`` on ``cluster`` for per-type ``demands`` within ``slo`` (``type_slos``: other targets by type
    name); raises ``InfeasibleError`` with the reason when nothing fits. A type no config serves within its target
    is planned best-effort and reported in ``Plan.best_effort``.

    ``latency_headroom`` (e.g. 1.5): when the best alpha clears it, keep alpha >= it and spend the rest of the
    cluster on latency (``planner.latency``): the replicas and routing with the least mean unloaded latency."""
    if method not in METHODS:
        raise ConfigError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    say = progress or (lambda _msg: None)
    start = time.perf_counter()
    demands = tuple(demands)
    rates = np.array([d.rate_rps for d in demands], dtype=np.float64)
    if not demands or not np.any(rates > 0):
        raise InfeasibleError("empty workload: no request type has a positive rate")
    configs, reasons = candidate_configs(
        model, cluster, tps=tps, pps=pps, calibration=calibration, template=template
    )
    if not configs:
        raise InfeasibleError(
            f"{model.name} fits no replica shape on cluster {cluster.name}: " + "; ".join(reasons)
        )
    say(f"capacity of {len(demands)} types x {len(configs)} configs")
    capms: dict[Slo, CapacityModel] = {}

    def capm_of(target: Slo) -> CapacityModel:
        if target not in capms:
            capms[target] = CapacityModel(model, target, calibration)
        return capms[target]

    type_slos = {d.name: type_slos[d.name] for d in demands if type_slos and d.name in type_slos}
    capm = capm_of(slo)
    # a request longer than every config's max_model_len is rejected wherever it goes: each type is priced on the
    # requests some config holds (none: the type is unheld, planned at rate 0 and reported)
    longest = max(capm.timer(c).cost_model.memory.max_model_len for c in configs)
    caps, best_effort = [], []
    for d in demands:
        prompts, outputs = d.lengths
        keep = np.maximum(prompts, 1) + np.maximum(outputs, 1) <= longest
        target = type_slos.get(d.name, slo)
        if not keep.any():
            caps.append([Capacity(0.0, "context")] * len(configs))
            continue
        row = [capm_of(target).capacity(c, prompts[keep], outputs[keep]) for c in configs]
        if d.rate_rps > 0 and not any(c.serves for c in row) and not all(c.limit == "context" for c in row):
            say(f"type {d.name}: nothing serves it within target; planning it best-effort")
            row, effort = relax_unservable(
                d, target, configs, row, (prompts[keep], outputs[keep]), capm_of(target), capm_of
            )
            best_effort.append(effort)
        caps.append(row)
    mu = np.array([[c.rate_rps for c in row] for row in caps], dtype=np.float64)
    limits = [[c.limit for c in row] for row in caps]
    unheld = _unheld(demands, limits)
    hopeless = [
        k for k, d in enumerate(demands) if d.rate_rps > 0 and not np.any(mu[k] > 0) and k not in unheld
    ]
    if unheld and len(unheld) == int(np.count_nonzero(rates > 0)):
        raise InfeasibleError(
            f"no replica config of {model.name} holds the workload's requests: every type exceeds every "
            f"max_model_len (the longest is {longest:,} tokens)"
        )
    if hopeless and len(hopeless) + len(unheld) == int(np.count_nonzero(rates > 0)):
        raise InfeasibleError(
            "no replica config serves any type of the workload, even best-effort: "
            + "; ".join(b.reason for b in best_effort)
        )
    rates = rates.copy()
    rates[unheld + hopeless] = 0.0
    packing = packing_rows(cluster, configs)

    homogeneous = [
        (label, n, max_load_scale(rates, mu, n, cap=cap))
        for label, n in _homogeneous_counts(configs, packing)
    ]
    base_label, base_counts, base_flow = max(homogeneous, key=lambda h: (h[2].alpha, -h[1].sum()))
    notes = [f"{len(configs)} candidate configs; best homogeneous {base_label} (alpha {base_flow.alpha:.3f})"]
    if unheld:
        notes.append(
            "no config holds type(s) "
            + ", ".join(demands[k].name for k in unheld)
            + " (prompt + output over every max_model_len): planned at rate 0, their requests are rejected"
        )
    if best_effort:
        notes.append("best-effort type(s) " + ", ".join(b.type for b in best_effort) + " (see best_effort)")

    say(f"solving ({method})")
    used = method
    counts = base_counts
    if method in ("auto", "milp"):
        exact = optimal_counts(rates, mu, packing, cap=cap, time_limit_s=milp_time_limit_s)
        notes.append(describe_mip(exact.status, exact.solve_seconds, exact.mip_gap))
        if exact.alpha > 0:
            counts, used = exact.counts, "milp"
    if method == "refine" or (method == "auto" and (used != "milp" or exact.status != "optimal")):
        result = refine(rates, mu, configs, packing, base_counts, cap=cap)
        notes.append(f"refinement: {len(result.moves)} moves, {result.evaluations} LPs")
        if method == "refine" or result.flow.alpha > max_load_scale(rates, mu, counts, cap=cap).alpha:
            counts, used = result.counts, "refine"
    counts = _fill(counts, rates, mu, configs, packing, cap)
    flow = max_load_scale(rates, mu, counts, cap=cap)
    latency = None
    if latency_headroom is not None and flow.alpha >= latency_headroom:
        say("latency mode")
        latency = latency_matrix(capm, demands, configs)
        fast = min_latency(rates, mu, latency, packing, headroom=latency_headroom, cap=cap)
        if np.isfinite(fast.mean_latency_s):
            counts = _fill(fast.counts, rates, mu, configs, packing, cap)
            flow = replace(max_load_scale(rates, mu, counts, cap=cap), shares=fast.shares)
            used += "+latency"
            notes.append(
                f"latency mode: alpha >= {latency_headroom:g} kept, mean unloaded E2E {fast.mean_latency_s:.3g} s"
            )
    mix = ", ".join(f"{int(n)} x {c.label}" for c, n in zip(configs, counts, strict=True) if n > 0)
    deployment = _deployment(
        model.name, cluster, configs, counts, flow, demands, grid, f"oserve plan: {mix}", mu, spill
    )
    baseline = _deployment(
        model.name,
        cluster,
        configs,
        base_counts,
        base_flow,
        demands,
        grid,
        f"best homogeneous: {base_label}",
        mu,
        spill,
    )
    default = vllm_default_deployment(model, cluster, calibration)
    default_counts = replica_counts(default.replicas, configs)
    default_alpha = max_load_scale(rates, mu, default_counts, cap=cap).alpha
    return Plan(
        deployment,
        flow.alpha,
        used,
        time.perf_counter() - start,
        baseline,
        base_flow.alpha,
        default_alpha,
        slo,
        demands,
        tuple(configs),
        mu,
        tuple(tuple(row) for row in limits),
        flow,
        counts,
        tuple(notes),
        latency,
        packing,
        tuple(demands[k].name for k in unheld),
        tuple(best_effort),
        type_slos,
    )
