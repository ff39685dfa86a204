"""Clusters of GPU nodes: the compact spelling (``2x8xH100+1x4xL40S``) and the YAML form."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from oserve.errors import SpecError
from oserve.files import read_structured
from oserve.spec.gpu import GpuSpec, get_gpu

__all__ = ["Cluster", "GpuSlot", "Node", "parse_cluster"]

LinkKind = Literal["nvlink", "pcie"]

# Per-node network bandwidth (GB/s) when the spec does not say: 8x400 Gb/s InfiniBand on H100/H200 nodes
# (DGX H100), 8x200 Gb/s on A100 (DGX A100), one 100 Gb/s NIC on PCIe boxes.
_DEFAULT_NETWORK_GB_PER_S = {"h100": 400.0, "a100": 200.0}


@dataclass(frozen=True, slots=True)
class Node:
    """One machine: ``num_gpus`` GPUs of one type, linked by NVLink or PCIe inside, a NIC outside."""

    index: int
    gpu: GpuSpec
    num_gpus: int
    intra_link: LinkKind
    intra_gb_per_s: float  # per-GPU unidirectional bandwidth inside the node
    network_gb_per_s: float  # node's total inter-node bandwidth
    host_memory_gib: float = 1024.0
    disk_gb_per_s: float = 2.0  # local NVMe read bandwidth, for weight loading


@dataclass(frozen=True, slots=True)
class GpuSlot:
    """A concrete GPU: global id (index into ``Cluster.gpus``), its node and local index."""

    gpu_id: int
    node: int
    local_index: int


@dataclass(frozen=True, slots=True)
class Cluster:
    nodes: tuple[Node, ...]
    name: str = ""
    gpus: tuple[GpuSlot, ...] = field(init=False)

    def __post_init__(self) -> None:
        slots: list[GpuSlot] = []
        for node in self.nodes:
            slots.extend(GpuSlot(len(slots), node.index, i) for i in range(node.num_gpus))
        object.__setattr__(self, "gpus", tuple(slots))
        if not self.name:
            object.__setattr__(self, "name", self.compact())

    @property
    def num_gpus(self) -> int:
        return len(self.gpus)

    def gpu_types(self) -> list[GpuSpec]:
        seen: dict[str, GpuSpec] = {}
        for node in self.nodes:
            seen.setdefault(node.gpu.name, node.gpu)
        return list(seen.values())

    def gpu_of(self, gpu_id: int) -> GpuSpec:
        return self.nodes[self.gpus[gpu_id].node].gpu

    def node_gpu_ids(self, node: int) -> list[int]:
        return [slot.gpu_id for slot in self.gpus if slot.node == node]

    def compact(self) -> str:
        """The compact spelling, grouping runs of identical nodes: ``2x8xH100-SXM-80GB``."""
        parts: list[str] = []
        run: list[Node] = []
        for node in self.nodes:
            if run and (node.gpu.name, node.num_gpus) != (run[0].gpu.name, run[0].num_gpus):
                parts.append(f"{len(run)}x{run[0].num_gpus}x{run[0].gpu.name}")
                run = []
            run.append(node)
        if run:
            parts.append(f"{len(run)}x{run[0].num_gpus}x{run[0].gpu.name}")
        return "+".join(parts)

    def total_price_per_hour(self) -> float:
        return sum(node.gpu.price_per_hour * node.num_gpus for node in self.nodes)


def _make_node(
    index: int,
    gpu: GpuSpec,
    count: int,
    link: LinkKind | None = None,
    intra_gb_per_s: float | None = None,
    network_gb_per_s: float | None = None,
    host_memory_gib: float | None = None,
    disk_gb_per_s: float | None = None,
) -> Node:
    link = link or ("nvlink" if gpu.has_nvlink else "pcie")
    if link == "nvlink" and not gpu.has_nvlink:
        raise SpecError(f"node {index}: {gpu.name} has no NVLink; use intra_link: pcie")
    bw = intra_gb_per_s or (gpu.nvlink_gb_per_s if link == "nvlink" else gpu.pcie_gb_per_s)
    net = network_gb_per_s or _DEFAULT_NETWORK_GB_PER_S.get(gpu.calibration_key, 12.5)
    node = Node(index, gpu, count, link, bw, net)
    if host_memory_gib is not None:
        node = replace(node, host_memory_gib=host_memory_gib)
    if disk_gb_per_s is not None:
        node = replace(node, disk_gb_per_s=disk_gb_per_s)
    return node


_TERM = re.compile(r"^(?:(\d+)x)?(?:(\d+)x)?([A-Za-z][A-Za-z0-9\-_]*)$")
#: bounds on a cluster's size: far above any real cluster, low enough that a typo fails at once instead of
#: building a billion nodes (``999999999x8xH100`` used to hang)
MAX_NODES = 4096
MAX_GPUS_PER_NODE = 64


def _parse_compact(text: str) -> Cluster:
    nodes: list[Node] = []
    for term in text.replace(" ", "").split("+"):
        match = _TERM.match(term)
        if not match:
            raise SpecError(
                f"malformed cluster term {term!r} in {text!r}: expected NODESxGPUSxTYPE "
                "(e.g. 2x8xH100), GPUSxTYPE (one node) or TYPE, joined by '+'"
            )
        first, second, gpu_name = match.groups()
        if second is not None:
            num_nodes, per_node = int(first), int(second)
        elif first is not None:
            num_nodes, per_node = 1, int(first)
        else:
            num_nodes, per_node = 1, 1
        if num_nodes < 1 or per_node < 1:
            raise SpecError(f"cluster term {term!r}: node and GPU counts must be at least 1")
        if num_nodes + len(nodes) > MAX_NODES or per_node > MAX_GPUS_PER_NODE:
            raise SpecError(
                f"cluster term {term!r}: at most {MAX_NODES} nodes in all and {MAX_GPUS_PER_NODE} GPUs per node"
            )
        gpu = get_gpu(gpu_name)
        nodes.extend(_make_node(len(nodes), gpu, per_node) for _ in range(num_nodes))
    return Cluster(tuple(nodes))


class _NodeModel(BaseModel):
    model_config = ConfigDict(extra="forbid")
    gpu: str
    count: int = Field(8, ge=1, le=64, description="GPUs in each node")
    num_nodes: int = Field(
        1, ge=1, le=MAX_NODES, description="how many identical nodes this entry stands for"
    )
    intra_link: LinkKind | None = None
    intra_gb_per_s: float | None = Field(None, gt=0)
    network_gb_per_s: float | None = Field(None, gt=0)
    host_memory_gib: float | None = Field(None, gt=0)
    disk_gb_per_s: float | None = Field(None, gt=0)
    price_per_hour: float | None = Field(None, ge=0, description="override the catalogue price per GPU-hour")

    @field_validator("gpu")
    @classmethod
    def _known_gpu(cls, value: str) -> str:
        get_gpu(value)
        return value


class _ClusterModel(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = ""
    nodes: list[_NodeModel] = Field(min_length=1)
    network_gb_per_s: float | None = Field(None, gt=0, description="default inter-node bandwidth per node")


def _from_mapping(data: dict[str, Any], source: str) -> Cluster:
    try:
        model = _ClusterModel.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise SpecError(f"{source}: invalid cluster: {problems}") from exc
    except SpecError as exc:
        raise SpecError(f"{source}: {exc}") from exc
    if sum(entry.num_nodes for entry in model.nodes) > MAX_NODES:
        raise SpecError(f"{source}: invalid cluster: at most {MAX_NODES} nodes in all")
    nodes: list[Node] = []
    for entry in model.nodes:
        gpu = get_gpu(entry.gpu)
        if entry.price_per_hour is not None:
            gpu = replace(gpu, price_per_hour=entry.price_per_hour)
        for _ in range(entry.num_nodes):
            nodes.append(
                _make_node(
                    len(nodes),
                    gpu,
                    entry.count,
                    entry.intra_link,
                    entry.intra_gb_per_s,
                    entry.network_gb_per_s or model.network_gb_per_s,
                    entry.host_memory_gib,
                    entry.disk_gb_per_s,
                )
            )
    return Cluster(tuple(nodes), name=model.name)


def parse_cluster(spec: str | Path | dict[str, Any] | Cluster) -> Cluster:
    """A cluster from its compact spelling, a YAML file path, or an already parsed mapping."""
    if isinstance(spec, Cluster):
        return spec
    if isinstance(spec, dict):
        return _from_mapping(spec, "cluster")
    text = str(spec).strip()
    if not text:
        raise SpecError("empty cluster spec; expected e.g. 2x8xH100 or a YAML file")
    if text.endswith((".yaml", ".yml")) or Path(text).is_file():
        path = Path(text)
        data = read_structured(path, what="cluster file", error=SpecError)
        if not isinstance(data, dict):
            raise SpecError(f"{path}: expected a mapping with a 'nodes' list")
        return _from_mapping(data, str(path))
    return _parse_compact(text)
