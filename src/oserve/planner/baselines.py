"""Homogeneous baselines: what a careful vLLM operator would deploy.

``homogeneous_candidates`` lists every TP/PP shape that fits the model, packed as many times as the cluster holds
(on a mixed cluster, one shape per GPU type: every candidate uses every GPU type, so all compare at equal
GPU-hours); ``best_homogeneous`` scores each with a caller-given evaluation (the simulator on the whole trace, with
hindsight) and keeps the best; ``vllm_default_deployment`` is the smallest TP that fits, data-parallel across all
GPUs of every type (``tp_per_node=True``: TP = the GPUs of one node, the other common operator choice).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace

from oserve.errors import InfeasibleError, SpecError
from oserve.perf import Calibration, CostModel
from oserve.planner.placement import candidate_configs
from oserve.spec import Cluster, Deployment, ModelSpec, ReplicaConfig

__all__ = [
    "HomogeneousCandidate",
    "best_homogeneous",
    "homogeneous_candidates",
    "nearest_shape",
    "vllm_default_deployment",
]


@dataclass(frozen=True, slots=True)
class HomogeneousCandidate:
    """One shape on the whole cluster: ``config`` on its GPU type, and on a mixed cluster ``configs`` has the
    shape (or the nearest that fits) on every GPU type, so every candidate uses every GPU it can."""

    config: ReplicaConfig
    deployment: Deployment
    score: float | None = None
    configs: tuple[ReplicaConfig, ...] = ()


def nearest_shape(shape: tuple[int, int], options: Sequence[ReplicaConfig]) -> ReplicaConfig:
    """The fitting config closest to ``(tp, pp)`` in GPUs per replica, the larger on a tie, then the lower pp."""
    gpus = shape[0] * shape[1]
    return min(options, key=lambda c: (abs(c.num_gpus - gpus), -c.num_gpus, c.pp, c.tp))


def _whole_cluster(model: ModelSpec, cluster: Cluster, configs: list[ReplicaConfig]) -> Deployment:
    """As many replicas of each config (one per GPU type) as its GPUs hold, named r0, r1, ..."""
    replicas = []
    for config in configs:
        for r in Deployment.homogeneous(model.name, cluster, config).replicas:
            replicas.append(replace(r, name=f"r{len(replicas)}"))
    note = " + ".join(f"{sum(r.config == c for r in replicas)} x {c.label}" for c in configs)
    return Deployment(model.name, tuple(replicas), note=note)


def homogeneous_candidates(
    model: ModelSpec,
    cluster: Cluster,
    *,
    tps: Iterable[int] = (1, 2, 4, 8),
    pps: Iterable[int] = (1, 2, 4),
    calibration: Calibration | None = None,
) -> list[HomogeneousCandidate]:
    """Every TP/PP shape that fits the model, packed onto the whole cluster: on a mixed cluster the shape on each
    GPU type that takes it and the nearest fitting shape on the others, so every candidate holds every GPU type
    (comparisons at equal GPU-hours). Raises when nothing fits, saying why."""
    configs, reasons = candidate_configs(model, cluster, tps=tps, pps=pps, calibration=calibration)
    fitting: dict[str, list[ReplicaConfig]] = {}
    for config in configs:
        try:
            Deployment.homogeneous(model.name, cluster, config)
        except SpecError as exc:
            reasons.append(f"{config.label}: {exc}")
            continue
        fitting.setdefault(config.gpu.name, []).append(config)
    if not fitting:
        raise InfeasibleError(
            f"{model.name} fits no replica shape on cluster {cluster.name}: " + "; ".join(reasons)
        )
    out: list[HomogeneousCandidate] = []
    seen: set[tuple[ReplicaConfig, ...]] = set()
    shapes = sorted(
        {(c.tp, c.pp) for options in fitting.values() for c in options}, key=lambda t: (t[1], t[0])
    )
    for shape in shapes:
        chosen = []
        for gpu in cluster.gpu_types():
            options = fitting.get(gpu.name, [])
            exact = [c for c in options if (c.tp, c.pp) == shape]
            if exact or options:
                chosen.append(exact[0] if exact else nearest_shape(shape, options))
        lead = next(c for c in chosen if (c.tp, c.pp) == shape)
        if tuple(chosen) in seen:
            continue
        seen.add(tuple(chosen))
        out.append(HomogeneousCandidate(lead, _whole_cluster(model, cluster, chosen), configs=tuple(chosen)))
    return out


def vllm_default_deployment(
    model: ModelSpec,
    cluster: Cluster,
    calibration: Calibration | None = None,
    *,
    tp_per_node: bool = False,
) -> Deployment:
    """vLLM's usual choice: on every GPU type, the smallest TP (pp 1) that fits with the model's whole context
    (``vllm serve`` without ``--max-model-len`` refuses a smaller KV cache; else the smallest that fits at all),
    replicated across all its GPUs. ``tp_per_node``: TP = the GPUs per node of that type instead (one replica
    per node), where the model fits so."""
    tps = (1, 2, 4, 8)
    if tp_per_node:
        tps = tuple(sorted({n.num_gpus for n in cluster.nodes}))
    configs, reasons = candidate_configs(model, cluster, tps=tps, pps=(1,), calibration=calibration)
    chosen = []
    for gpu in cluster.gpu_types():
        options = [c for c in configs if c.gpu.name == gpu.name]
        if tp_per_node:
            per_node = min(n.num_gpus for n in cluster.nodes if n.gpu.name == gpu.name)
            options = [c for c in options if c.tp == per_node]
        full = [
            c
            for c in options
            if CostModel(model, c, calibration).memory.max_model_len >= model.max_position_embeddings
        ]
        if options:
            chosen.append(min(full or options, key=lambda c: c.tp))
    if not chosen:
        raise InfeasibleError(
            f"{model.name} fits no replica shape on cluster {cluster.name}"
            + (" with TP = GPUs per node" if tp_per_node else "")
            + ": "
            + "; ".join(reasons)
        )
    return _whole_cluster(model, cluster, chosen)


def best_homogeneous(
    model: ModelSpec,
    cluster: Cluster,
    evaluate: Callable[[Deployment], float],
    *,
    calibration: Calibration | None = None,
    progress: Callable[[str], None] | None = None,
) -> tuple[HomogeneousCandidate, list[HomogeneousCandidate]]:
    """The candidate with the highest ``evaluate`` score (e.g. goodput from a simulation of the whole trace)."""
    scored = []
    for cand in homogeneous_candidates(model, cluster, calibration=calibration):
        if progress:
            progress(cand.deployment.note)
        scored.append(replace(cand, score=float(evaluate(cand.deployment))))
    best = max(scored, key=lambda c: (c.score, -c.config.num_gpus))
    return best, scored
