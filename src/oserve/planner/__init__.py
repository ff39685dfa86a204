"""Planner: choose the deployment (replicas and routing weights) for a model, cluster and workload.

So far: the homogeneous baselines (every fitting TP/PP shape packed onto the cluster, the vLLM default shape,
and the best homogeneous deployment chosen by an evaluation callback, e.g. simulating each on the trace).
"""

from oserve.planner.baselines import (
    HomogeneousCandidate,
    best_homogeneous,
    homogeneous_candidates,
    vllm_default_deployment,
)
from oserve.planner.search import simulated_best_homogeneous

__all__ = [
    "HomogeneousCandidate",
    "best_homogeneous",
    "homogeneous_candidates",
    "simulated_best_homogeneous",
    "vllm_default_deployment",
]
