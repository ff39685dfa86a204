"""Planner: choose the deployment (replicas and routing weights) for a model, cluster and workload.

capacity mu per (request type, replica config) from a steady-state model of continuous batching
(``CapacityModel``) -> flow LP over fixed replicas (``max_load_scale``: the load scale alpha, routing shares,
duals) -> replica counts by the exact MILP (``optimal_counts``) or the flow-guided refinement (``refine``) ->
concrete GPUs (``place``) -> ``Deployment``. ``plan`` runs the whole chain; baselines are the best homogeneous
deployment and vLLM's default shape; ``isolated_plan`` puts the long-prompt types on replicas of their own.
"""

from oserve.planner.baselines import (
    HomogeneousCandidate,
    best_homogeneous,
    homogeneous_candidates,
    vllm_default_deployment,
)
from oserve.planner.best_effort import BestEffort
from oserve.planner.capacity import Capacity, CapacityModel
from oserve.planner.demand import TypeDemand, demands_from_trace, demands_from_workload, parse_rates
from oserve.planner.flow import FlowResult, max_load_scale
from oserve.planner.isolate import Isolated, isolated_plan, long_types, simulated_best_isolation
from oserve.planner.milp import MilpResult, optimal_counts
from oserve.planner.placement import PackingRows, candidate_configs, packing_rows, place
from oserve.planner.plan import METHODS, SPILL, Plan, config_columns, plan, replica_counts, routing_weights
from oserve.planner.refine import RefineResult, refine
from oserve.planner.search import simulated_best_homogeneous
from oserve.planner.slo import DEFAULT_SLO_SCALE, Slo, default_slo, parse_slo_targets
from oserve.planner.slo_classes import SloClass, SloClasses, parse_slo_classes, type_slos
from oserve.planner.verify import Verified, simulated_best_plan

__all__ = [
    "DEFAULT_SLO_SCALE",
    "METHODS",
    "SPILL",
    "BestEffort",
    "Capacity",
    "CapacityModel",
    "FlowResult",
    "HomogeneousCandidate",
    "Isolated",
    "MilpResult",
    "PackingRows",
    "Plan",
    "RefineResult",
    "Slo",
    "SloClass",
    "SloClasses",
    "TypeDemand",
    "Verified",
    "best_homogeneous",
    "candidate_configs",
    "config_columns",
    "default_slo",
    "demands_from_trace",
    "demands_from_workload",
    "homogeneous_candidates",
    "isolated_plan",
    "long_types",
    "max_load_scale",
    "optimal_counts",
    "packing_rows",
    "parse_rates",
    "parse_slo_classes",
    "parse_slo_targets",
    "place",
    "plan",
    "refine",
    "replica_counts",
    "routing_weights",
    "simulated_best_homogeneous",
    "simulated_best_isolation",
    "simulated_best_plan",
    "type_slos",
    "vllm_default_deployment",
]
