"""Specs: model architectures, GPU types, clusters and replica shapes."""

from oserve.spec.cluster import Cluster, GpuSlot, Node, parse_cluster
from oserve.spec.deployment import Deployment, Replica
from oserve.spec.gpu import GpuSpec, get_gpu, list_gpus
from oserve.spec.model import ModelSpec, get_model, list_models
from oserve.spec.replica import ReplicaConfig

__all__ = [
    "Cluster",
    "Deployment",
    "GpuSlot",
    "GpuSpec",
    "ModelSpec",
    "Node",
    "Replica",
    "ReplicaConfig",
    "get_gpu",
    "get_model",
    "list_gpus",
    "list_models",
    "parse_cluster",
]
