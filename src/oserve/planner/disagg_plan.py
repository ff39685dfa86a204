"""P/D pools beside aggregated shapes in OServe's plan: candidates enumerated, chosen by the simulator check.

Not (yet) inside the MILP: the pool shapes are enumerated and offered to ``simulated_best_plan`` as seeds, so a
pool is chosen only where it beats the aggregated plans in simulation of the same trace. Two kinds:

- whole-cluster pools: the ``top`` (prefill TP, decode TP, ratio) shapes by modelled pool rate
  (``planner.disagg.pool_candidates``);
- a per-type hybrid: each type goes where it is cheaper per GPU by the capacity models (the best aggregated
  config's mu per GPU against the best pool's rate per GPU on that type's lengths); the GPUs are split by the
  types' demand in GPUs on either side, the pool sized on its types' lengths, the rest filled with the aggregated
  config that serves its types best per GPU, and the deployment's weights send each type to its side.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from oserve.errors import InfeasibleError, SpecError
from oserve.perf import Calibration
from oserve.planner.capacity import CapacityModel
from oserve.planner.demand import demands_from_trace
from oserve.planner.disagg import PoolShape, pool_candidates, pool_deployment
from oserve.planner.placement import candidate_configs
from oserve.planner.slo import Slo
from oserve.planner.verify import Verified, simulated_best_plan
from oserve.sim import SimResult, simulate
from oserve.spec import Cluster, Deployment, ModelSpec, ReplicaConfig, RequestGrid
from oserve.trace import Trace

__all__ = ["POOL_ROUTER", "PoolOption", "plan_with_pools", "pool_options", "pools_policy"]

POOL_ROUTER = "allowed-least-load"  # the weights decide the side; least load among the replicas allowed


@dataclass(frozen=True, slots=True)
class PoolOption:
    """A deployment with a P/D pool: ``kind`` ``pool`` (the whole cluster) or ``hybrid`` (pool + aggregated)."""

    label: str
    kind: str
    deployment: Deployment
    modelled_rps: float


def _pool(model: ModelSpec, cluster: Cluster, s: PoolShape, label: str) -> PoolOption:
    dep = pool_deployment(model, cluster, s.layout, note=label)
    return PoolOption(label, "pool", dep, s.rate_rps)


def pool_options(
    trace: Trace,
    model: ModelSpec,
    cluster: Cluster,
    slo: Slo,
    *,
    calibration: Calibration | None = None,
    top: int = 3,
    hybrid: bool = True,
) -> list[PoolOption]:
    """The P/D candidates for ``trace`` (module docstring); empty when no pool fits the cluster."""
    capm = CapacityModel(model, slo, calibration)
    shapes = pool_candidates(
        model, cluster, trace.prompt_tokens, trace.output_tokens, capm, calibration=calibration
    )
    out = [_pool(model, cluster, s, f"pool {s.label}") for s in shapes[:top]]
    if hybrid and shapes:
        several = len(cluster.gpu_types()) > 1
        mixed = (_mixed_hybrid if several else _hybrid)(trace, model, cluster, capm, calibration)
        if mixed is not None:
            out.append(mixed)
    return out


def _hybrid(
    trace: Trace, model: ModelSpec, cluster: Cluster, capm: CapacityModel, calibration: Calibration | None
) -> PoolOption | None:
    demands, grid = demands_from_trace(trace)
    gpu = cluster.gpu_types()[0]
    total = sum(n.num_gpus for n in cluster.nodes if n.gpu.name == gpu.name)
    configs = [
        c
        for c in candidate_configs(model, cluster, pps=(1,), calibration=calibration)[0]
        if c.gpu.name == gpu.name
    ]
    if not configs:
        return None
    rates = np.array([d.rate_rps for d in demands])
    agg_eff, pool_eff = [], []
    for d in demands:
        prompts, outputs = d.lengths
        agg_eff.append(max(capm.capacity(c, prompts, outputs).rate_rps / c.num_gpus for c in configs))
        shapes = pool_candidates(model, cluster, prompts, outputs, capm, calibration=calibration)
        pool_eff.append(shapes[0].rate_rps / shapes[0].num_gpus if shapes else 0.0)
    to_pool = [k for k, d in enumerate(demands) if d.rate_rps > 0 and pool_eff[k] > agg_eff[k] > 0]
    to_agg = [k for k, d in enumerate(demands) if d.rate_rps > 0 and k not in to_pool]
    if not to_pool or not to_agg:
        return None  # one side takes everything: the whole-cluster candidates cover it
    need_pool = sum(rates[k] / pool_eff[k] for k in to_pool)
    need_agg = sum(rates[k] / agg_eff[k] for k in to_agg if agg_eff[k] > 0)
    share = need_pool / (need_pool + need_agg) if need_pool + need_agg > 0 else 0.5

    def lengths(ks: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        ps = [demands[k].lengths for k in ks]
        return np.concatenate([p for p, _ in ps]), np.concatenate([o for _, o in ps])

    ap, ao = lengths(to_agg)
    agg = max(configs, key=lambda c: (capm.capacity(c, ap, ao).rate_rps / c.num_gpus, -c.tp))
    pool_gpus = min(total - agg.num_gpus, max(2, round(total * share)))
    pp, po = lengths(to_pool)
    shapes = pool_candidates(model, cluster, pp, po, capm, calibration=calibration, gpus=pool_gpus)
    if not shapes or pool_gpus < 2:
        return None
    s = shapes[0]
    n_agg = (total - s.num_gpus) // agg.num_gpus
    if n_agg < 1:
        return None
    label = f"hybrid {s.label} + {n_agg}A x tp{agg.tp}"
    dep = _routed(model, cluster, [*s.layout, (agg, n_agg)], demands, to_pool, to_agg, grid, label)
    if dep is None:
        return None
    modelled = s.rate_rps + n_agg * capm.capacity(agg, ap, ao).rate_rps
    return PoolOption(label, "hybrid", dep, modelled)


def _routed(
    model: ModelSpec,
    cluster: Cluster,
    groups: Sequence[tuple[ReplicaConfig, int]],
    demands: Sequence,
    to_pool: Sequence[int],
    to_agg: Sequence[int],
    grid,
    label: str,
) -> Deployment | None:
    """The hybrid's replicas placed, with weights sending each pool type to the prefill replicas and each other
    type to the aggregated ones; None when they do not fit."""
    try:
        dep = pool_deployment(model, cluster, groups)
    except SpecError:
        return None
    names = {
        role: [r.name for r in dep.replicas if r.config.role == role] for role in ("prefill", "aggregated")
    }
    weights = {}
    for k in to_pool:
        weights[demands[k].name] = dict.fromkeys(names["prefill"], 1.0)
    for k in to_agg:
        weights[demands[k].name] = dict.fromkeys(names["aggregated"], 1.0)
    return Deployment(dep.model, dep.replicas, weights, RequestGrid.of(grid), label)


def _mixed_hybrid(
    trace: Trace, model: ModelSpec, cluster: Cluster, capm: CapacityModel, calibration: Calibration | None
) -> PoolOption | None:
    """The hybrid on a cluster of several GPU types: a pool on one type's GPUs, the aggregated replicas on every
    other type's, each type of requests to the side cheaper per GPU for it on the pool's type (across types the
    faster GPU would win every comparison); of the types the pool may take, the one whose layout serves the most
    load relative to each side's demand (the capacity models' ranking)."""
    demands, grid = demands_from_trace(trace)
    configs = candidate_configs(model, cluster, pps=(1,), calibration=calibration)[0]
    totals = {
        g.name: sum(n.num_gpus for n in cluster.nodes if n.gpu.name == g.name) for g in cluster.gpu_types()
    }
    live = [k for k, d in enumerate(demands) if d.rate_rps > 0]
    best: tuple[float, PoolOption] | None = None
    for x in totals:
        others = [c for c in configs if c.gpu.name != x]
        if not others:
            continue
        agg_eff, pool_eff = {}, {}
        for k in live:
            prompts, outputs = demands[k].lengths
            own = [c for c in configs if c.gpu.name == x] or others  # the side is chosen on the pool's type
            agg_eff[k] = max(capm.capacity(c, prompts, outputs).rate_rps / c.num_gpus for c in own)
            shapes = pool_candidates(model, cluster, prompts, outputs, capm, calibration=calibration, gpu=x)
            pool_eff[k] = shapes[0].rate_rps / shapes[0].num_gpus if shapes else 0.0
        to_pool = [k for k in live if pool_eff[k] > agg_eff[k] > 0]
        to_agg = [k for k in live if k not in to_pool]
        if not to_pool or not to_agg:
            continue
        pp, po = (np.concatenate(a) for a in zip(*(demands[k].lengths for k in to_pool), strict=True))
        ap, ao = (np.concatenate(a) for a in zip(*(demands[k].lengths for k in to_agg), strict=True))
        shapes = pool_candidates(model, cluster, pp, po, capm, calibration=calibration, gpu=x)
        if not shapes:
            continue
        groups, agg_rate = list(shapes[0].layout), 0.0
        for y in totals:
            fits = [c for c in others if c.gpu.name == y and c.num_gpus <= totals[y]]
            if y == x or not fits:
                continue
            agg = max(fits, key=lambda c: (capm.capacity(c, ap, ao).rate_rps / c.num_gpus, -c.tp))
            groups.append((agg, totals[y] // agg.num_gpus))
            agg_rate += totals[y] // agg.num_gpus * capm.capacity(agg, ap, ao).rate_rps
        label = f"hybrid {shapes[0].label} {x} + " + " + ".join(
            f"{n}A x tp{c.tp} {c.gpu.name}" for c, n in groups if c.role == "aggregated"
        )
        dep = _routed(model, cluster, groups, demands, to_pool, to_agg, grid, label)
        if dep is None:
            continue
        need = (sum(demands[k].rate_rps for k in to_pool), sum(demands[k].rate_rps for k in to_agg))
        scale = min(shapes[0].rate_rps / need[0], agg_rate / need[1])
        if best is None or scale > best[0]:
            best = (scale, PoolOption(label, "hybrid", dep, shapes[0].rate_rps + agg_rate))
    return None if best is None else best[1]


def plan_with_pools(
    trace: Trace,
    model: ModelSpec,
    cluster: Cluster,
    slo: Slo,
    *,
    calibration: Calibration | None = None,
    top: int = 3,
    progress: Callable[[str], None] | None = None,
    seeds: Sequence[tuple[str, Deployment, str, SimResult]] = (),
    **verify_options,
) -> Verified:
    """``simulated_best_plan`` with the P/D candidates as seeds (beside any given ``seeds``), each simulated on
    ``trace`` under ``POOL_ROUTER``: the plan may be aggregated, a pool, or both. Raises ``InfeasibleError`` like
    ``plan``."""
    say = progress or (lambda _msg: None)
    seeds = list(seeds)
    try:
        options = pool_options(trace, model, cluster, slo, calibration=calibration, top=top)
    except InfeasibleError:
        options = []
    for opt in options:
        say(f"verifying {opt.label}")
        result = simulate(
            trace,
            opt.deployment,
            model,
            cluster,
            router=POOL_ROUTER,
            slo=slo.to_dict(),
            calibration=calibration,
        )
        seeds.append((opt.label, opt.deployment, POOL_ROUTER, result))
    return simulated_best_plan(
        trace, model, cluster, slo, calibration=calibration, seeds=seeds, progress=progress, **verify_options
    )


def pools_policy(
    trace: Trace, model: ModelSpec, cluster: Cluster, slo: dict[str, float]
) -> tuple[Deployment, None, SimResult, str]:
    """``oserve simulate --policy oserve-disagg``: ``plan_with_pools`` for the whole trace at the run's SLO, as
    (deployment, switch policy: static, its simulation, router)."""
    v = plan_with_pools(trace, model, cluster, Slo.from_dict(slo))
    return v.deployment, None, v.result, v.router
