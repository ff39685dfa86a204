"""Homogeneous baselines: what a careful vLLM operator would deploy.

``homogeneous_candidates`` lists every (GPU type, TP, PP) shape that fits the model, packed as many times as the
cluster holds; ``best_homogeneous`` scores each with a caller-given evaluation (the simulator on the whole trace,
with hindsight) and keeps the best; ``vllm_default_deployment`` is the smallest TP that fits, data-parallel across
the rest of the GPUs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from oserve.errors import InfeasibleError, SpecError
from oserve.perf import Calibration, CostModel
from oserve.planner.placement import candidate_configs
from oserve.spec import Cluster, Deployment, ModelSpec, ReplicaConfig

__all__ = ["HomogeneousCandidate", "best_homogeneous", "homogeneous_candidates", "vllm_default_deployment"]


@dataclass(frozen=True, slots=True)
class HomogeneousCandidate:
    config: ReplicaConfig
    deployment: Deployment
    score: float | None = None


def homogeneous_candidates(
    model: ModelSpec,
    cluster: Cluster,
    *,
    tps: Iterable[int] = (1, 2, 4, 8),
    pps: Iterable[int] = (1, 2, 4),
    calibration: Calibration | None = None,
) -> list[HomogeneousCandidate]:
    """Every shape that fits the model, packed onto the cluster; raises when none does, saying why."""
    configs, reasons = candidate_configs(model, cluster, tps=tps, pps=pps, calibration=calibration)
    out: list[HomogeneousCandidate] = []
    for config in configs:
        try:
            out.append(HomogeneousCandidate(config, Deployment.homogeneous(model.name, cluster, config)))
        except SpecError as exc:
            reasons.append(f"{config.label}: {exc}")
    if not out:
        raise InfeasibleError(
            f"{model.name} fits no replica shape on cluster {cluster.name}: " + "; ".join(reasons)
        )
    return out


def vllm_default_deployment(
    model: ModelSpec, cluster: Cluster, calibration: Calibration | None = None
) -> Deployment:
    """vLLM's usual choice: the smallest TP (pp 1) that fits with the model's whole context (``vllm serve``
    without ``--max-model-len`` refuses a smaller KV cache), replicated across all GPUs of the first type."""
    fitting = homogeneous_candidates(model, cluster, pps=(1,), calibration=calibration)
    candidates = [
        c
        for c in fitting
        if CostModel(model, c.config, calibration).memory.max_model_len >= model.max_position_embeddings
    ] or fitting
    first = cluster.gpu_types()[0].name
    same = [c for c in candidates if c.config.gpu.name == first] or candidates
    return min(same, key=lambda c: c.config.tp).deployment


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
        scored.append(HomogeneousCandidate(cand.config, cand.deployment, float(evaluate(cand.deployment))))
    best = max(scored, key=lambda c: (c.score, -c.config.num_gpus))
    return best, scored
