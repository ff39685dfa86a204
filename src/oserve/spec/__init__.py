"""Specs: model architectures, GPU types, clusters and replica shapes."""

from oserve.spec.cluster import Cluster, GpuSlot, Node, parse_cluster
from oserve.spec.deployment import Deployment, Replica
from oserve.spec.gpu import GpuSpec, get_gpu, list_gpus
from oserve.spec.grid import RequestGrid
from oserve.spec.model import ModelSpec, get_model, list_models
from oserve.spec.replica import ReplicaConfig
from oserve.spec.router import DEFAULT_ROUTER, RouterSpec

__all__ = [
    "DEFAULT_ROUTER",
    "Cluster",
    "Deployment",
    "GpuSlot",
    "GpuSpec",
    "ModelSpec",
    "Node",
    "Replica",
    "ReplicaConfig",
    "RequestGrid",
    "RouterSpec",
    "get_gpu",
    "get_model",
    "list_gpus",
    "list_models",
    "parse_cluster",
]
