"""``Deployment``: the one contract between planner, simulator and runtime.

Replicas (a ``ReplicaConfig`` on concrete GPU ids of a ``Cluster``) and routing weights from request type to
replica. A serialisable value: YAML or JSON on disk, diffable, validated against a cluster before use.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from oserve.errors import SpecError
from oserve.files import read_structured
from oserve.spec.cluster import Cluster
from oserve.spec.gpu import get_gpu
from oserve.spec.grid import RequestGrid
from oserve.spec.replica import ROLES, ReplicaConfig
from oserve.spec.router import RouterSpec

__all__ = ["MAX_REPLICAS", "NAME_PATTERN", "Deployment", "Replica"]

#: a replica name: it names log files and metrics labels, so never a path
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
MAX_REPLICAS = 4096
_MAX_TP_PP = 64
_MAX_GPU_ID = 1 << 20
_MAX_TOKENS = 1 << 24


@dataclass(frozen=True, slots=True)
class Replica:
    """One engine replica: its shape and the global GPU ids it runs on (TP groups consecutive, stage by stage)."""

    config: ReplicaConfig
    gpu_ids: tuple[int, ...]
    name: str = ""

    def __post_init__(self) -> None:
        if len(self.gpu_ids) != self.config.num_gpus:
            raise SpecError(
                f"replica {self.name or '?'}: {self.config.label} needs {self.config.num_gpus} GPUs, "
                f"got {len(self.gpu_ids)} ids"
            )
        if len(set(self.gpu_ids)) != len(self.gpu_ids):
            raise SpecError(f"replica {self.name or '?'}: a GPU id appears twice in {list(self.gpu_ids)}")

    def to_dict(self) -> dict[str, Any]:
        c = self.config
        return {
            "name": self.name,
            "gpu": c.gpu.name,
            "tp": c.tp,
            "pp": c.pp,
            "gpus": list(self.gpu_ids),
            "max_num_seqs": c.max_num_seqs,
            "max_num_batched_tokens": c.max_num_batched_tokens,
            "block_size": c.block_size,
            "gpu_memory_utilization": c.gpu_memory_utilization,
            "max_model_len": c.max_model_len,
            "enable_prefix_caching": c.enable_prefix_caching,
            **({"role": c.role} if c.role != "aggregated" else {}),
        }


@dataclass(frozen=True, slots=True)
class Deployment:
    """Replicas and routing weights ``weights[type_name][replica_name] -> share`` (rows sum to 1).

    A type missing from ``weights`` may go to any replica; a replica missing from a type's row never gets it.
    ``type_edges`` is the grid the weights are keyed by (None: not typed); ``router`` the router it was checked
    under (None: whoever serves it chooses, ``DEFAULT_ROUTER`` unless told).
    """

    model: str
    replicas: tuple[Replica, ...]
    weights: dict[str, dict[str, float]] = field(default_factory=dict)
    type_edges: RequestGrid | None = None
    note: str = ""
    router: RouterSpec | None = None

    def __post_init__(self) -> None:
        edges = self.type_edges  # a mapping (older callers) or a TypeGrid becomes the typed value
        if isinstance(edges, dict):
            object.__setattr__(self, "type_edges", RequestGrid.from_dict(edges) if edges else None)
        elif edges is not None and not isinstance(edges, RequestGrid):
            object.__setattr__(self, "type_edges", RequestGrid.of(edges))
        names = [r.name for r in self.replicas]
        if not self.replicas:
            raise SpecError("a deployment needs at least one replica")
        if len(set(names)) != len(names) or any(not n for n in names):
            raise SpecError(f"replica names must be unique and non-empty, got {names}")
        roles = {r.config.role for r in self.replicas}
        if ("prefill" in roles) != ("decode" in roles):
            raise SpecError("a disaggregated pool needs both prefill and decode replicas")
        used: dict[int, str] = {}
        for r in self.replicas:
            for gpu_id in r.gpu_ids:
                if gpu_id in used:
                    raise SpecError(f"GPU {gpu_id} is used by both {used[gpu_id]} and {r.name}")
                used[gpu_id] = r.name
        for type_name, row in self.weights.items():
            unknown = set(row) - set(names)
            if unknown:
                raise SpecError(f"weights for type {type_name!r} name unknown replicas {sorted(unknown)}")
            if any(w < 0 for w in row.values()) or sum(row.values()) <= 0:
                raise SpecError(f"weights for type {type_name!r} must be non-negative and not all zero")

    @property
    def num_gpus(self) -> int:
        return sum(r.config.num_gpus for r in self.replicas)

    @property
    def disaggregated(self) -> bool:
        """Whether the deployment has a prefill/decode pool (``sim.disagg`` simulates it)."""
        return any(r.config.role != "aggregated" for r in self.replicas)

    def describe(self) -> str:
        """Short shape summary, e.g. ``2 x H100-SXM-80GB:tp4 + 4 x H100-SXM-80GB:tp2``."""
        counts: dict[str, int] = {}
        for r in self.replicas:
            counts[r.config.label] = counts.get(r.config.label, 0) + 1
        return " + ".join(f"{n} x {label}" for label, n in counts.items())

    def index_of(self, name: str) -> int:
        for i, r in enumerate(self.replicas):
            if r.name == name:
                return i
        raise SpecError(f"no replica named {name!r}")

    def weight_matrix(self, type_names: list[str]) -> list[list[float]]:
        """Row per type (in ``type_names`` order), column per replica: normalised shares; uniform when unset."""
        out = []
        for t in type_names:
            row = self.weights.get(t)
            if row is None:
                out.append([1.0 / len(self.replicas)] * len(self.replicas))
                continue
            total = sum(row.values())
            out.append([row.get(r.name, 0.0) / total for r in self.replicas])
        return out

    def validate(self, cluster: Cluster) -> None:
        """Check the replicas fit the cluster: ids exist, GPU types match, TP groups inside one node."""
        for r in self.replicas:
            for gpu_id in r.gpu_ids:
                if not 0 <= gpu_id < cluster.num_gpus:
                    raise SpecError(
                        f"replica {r.name}: GPU {gpu_id} not in cluster {cluster.name} "
                        f"({cluster.num_gpus} GPUs)"
                    )
                if cluster.gpu_of(gpu_id).name != r.config.gpu.name:
                    raise SpecError(
                        f"replica {r.name}: GPU {gpu_id} is a {cluster.gpu_of(gpu_id).name}, "
                        f"not a {r.config.gpu.name}"
                    )
            tp = r.config.tp
            for stage in range(r.config.pp):
                group = r.gpu_ids[stage * tp : (stage + 1) * tp]
                nodes = {cluster.gpus[g].node for g in group}
                if len(nodes) > 1:
                    raise SpecError(
                        f"replica {r.name}: TP group {list(group)} spans nodes {sorted(nodes)}; "
                        "tensor parallelism stays inside a node"
                    )

    # -- serialisation --------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "note": self.note,
            "replicas": [r.to_dict() for r in self.replicas],
            "weights": self.weights,
            "type_edges": self.type_edges.to_dict() if self.type_edges is not None else None,
            "router": self.router.to_dict() if self.router is not None else None,
        }

    def save(self, path: Path | str) -> None:
        path = Path(path)
        data = self.to_dict()
        text = json.dumps(data, indent=2) if path.suffix == ".json" else yaml.safe_dump(data, sort_keys=False)
        path.write_text(text)

    @classmethod
    def from_dict(cls, data: Any, source: str = "deployment") -> Deployment:
        """A deployment from its mapping (a file's or an HTTP body's), every field checked: replica names are
        identifiers (``NAME_PATTERN``), integers are integers (``1.9`` is not ``1``), numbers are finite and sizes
        bounded. A ``SpecError`` names ``source`` and the field."""
        if not isinstance(data, dict) or not isinstance(data.get("replicas"), list):
            raise SpecError(f"{source}: expected a mapping with 'model' and a 'replicas' list")
        items = data["replicas"]
        if len(items) > MAX_REPLICAS:
            raise SpecError(f"{source}: replicas: at most {MAX_REPLICAS}, got {len(items)}")
        replicas = []
        for i, item in enumerate(items):
            where = f"{source}: replicas[{i}]"
            if not isinstance(item, dict):
                raise SpecError(f"{where} must be a mapping")
            try:
                replicas.append(_replica(item, i, where))
            except KeyError as exc:
                raise SpecError(f"{where} lacks {exc.args[0]!r}") from None
            except SpecError as exc:
                raise SpecError(f"{where}: {exc}") from None
        model = _text(data.get("model", ""), f"{source}: model")
        note = _text(data.get("note", ""), f"{source}: note", 4096)
        weights = _weights(data.get("weights") or {}, source)
        edges = data.get("type_edges")
        type_edges = (
            RequestGrid.from_dict(edges, f"{source}: type_edges") if edges not in (None, {}) else None
        )
        router = data.get("router")
        router_spec = RouterSpec.from_dict(router, f"{source}: router") if router is not None else None
        try:
            return cls(model, tuple(replicas), weights, type_edges, note, router_spec)
        except SpecError as exc:
            raise SpecError(f"{source}: {exc}") from exc

    @classmethod
    def load(cls, path: Path | str) -> Deployment:
        data = read_structured(path, what="deployment file", error=SpecError)
        return cls.from_dict(data, str(path))

    @classmethod
    def homogeneous(
        cls, model: str, cluster: Cluster, config: ReplicaConfig, count: int | None = None
    ) -> Deployment:
        """``count`` replicas of ``config`` packed onto the cluster's GPUs of that type (as many as fit by default);
        TP groups never straddle a node."""
        replicas: list[Replica] = []
        free = {
            n.index: cluster.node_gpu_ids(n.index) for n in cluster.nodes if n.gpu.name == config.gpu.name
        }
        while count is None or len(replicas) < count:
            ids: list[int] = []
            for _ in range(config.pp):
                node = next((n for n, g in free.items() if len(g) >= config.tp), None)
                if node is None:
                    break
                ids.extend(free[node][: config.tp])
                free[node] = free[node][config.tp :]
            if len(ids) < config.num_gpus:
                break
            replicas.append(Replica(config, tuple(ids), f"r{len(replicas)}"))
        if not replicas or (count is not None and len(replicas) < count):
            raise SpecError(f"cluster {cluster.name} cannot hold {count or 1} replica(s) of {config.label}")
        return cls(model, tuple(replicas), note=f"{len(replicas)} x {config.label}")


# -- checks of a deployment mapping's fields (files and HTTP bodies alike) -------------------------------------
def _int(value: Any, where: str, lo: int, hi: int) -> int:
    """An integer in ``[lo, hi]``: a bool, a float (even ``2.0``) or a string is refused, never rounded."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(f"{where} must be an integer, got {value!r:.40}")
    if not lo <= value <= hi:
        raise SpecError(f"{where} must be in {lo}..{hi}, got {value}")
    return value


def _bool(value: Any, where: str) -> bool:
    """A YAML/JSON boolean; ``1`` or ``"yes"`` is refused."""
    if not isinstance(value, bool):
        raise SpecError(f"{where} must be true or false, got {value!r:.40}")
    return value


def _fraction(value: Any, where: str) -> float:
    """A finite number in ``[0.05, 1]`` (vLLM's memory fraction); a bool or a string is refused."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise SpecError(f"{where} must be a finite number, got {value!r:.40}")
    if not 0.05 <= value <= 1.0:
        raise SpecError(f"{where} must be in [0.05, 1], got {value}")
    return float(value)


def _text(value: Any, where: str, limit: int = 256) -> str:
    if not isinstance(value, str):
        raise SpecError(f"{where} must be a string, got {type(value).__name__}")
    if len(value) > limit:
        raise SpecError(f"{where} is longer than {limit} characters")
    return value


def _name(value: Any, where: str) -> str:
    if not isinstance(value, str) or not NAME_PATTERN.fullmatch(value):
        raise SpecError(
            f"{where} must be 1-64 letters, digits, '_', '.' or '-' starting with a letter or digit "
            f"(never a path), got {value!r:.70}"
        )
    return value


def _replica(item: dict[str, Any], i: int, where: str) -> Replica:
    name = _name(item["name"], "name") if item.get("name") is not None else f"r{i}"
    gpu = get_gpu(_text(item["gpu"], "gpu"))
    gpus = item["gpus"]
    if not isinstance(gpus, list | tuple):
        raise SpecError(f"gpus must be a list of GPU ids, got {type(gpus).__name__}")
    if len(gpus) > _MAX_TP_PP * _MAX_TP_PP:
        raise SpecError(f"gpus: at most {_MAX_TP_PP * _MAX_TP_PP} ids")
    ids = tuple(_int(g, f"gpus[{k}]", 0, _MAX_GPU_ID) for k, g in enumerate(gpus))
    config = ReplicaConfig(
        gpu,
        tp=_int(item.get("tp", 1), "tp", 1, _MAX_TP_PP),
        pp=_int(item.get("pp", 1), "pp", 1, _MAX_TP_PP),
        max_num_seqs=_int(item.get("max_num_seqs", 256), "max_num_seqs", 1, 1 << 20),
        max_num_batched_tokens=_int(
            item.get("max_num_batched_tokens", 8192), "max_num_batched_tokens", 1, _MAX_TOKENS
        ),
        block_size=_int(item.get("block_size", 16), "block_size", 1, 1 << 12),
        gpu_memory_utilization=_fraction(item.get("gpu_memory_utilization", 0.90), "gpu_memory_utilization"),
        max_model_len=(
            _int(item["max_model_len"], "max_model_len", 1, _MAX_TOKENS)
            if item.get("max_model_len") is not None
            else None
        ),
        enable_prefix_caching=_bool(item.get("enable_prefix_caching", True), "enable_prefix_caching"),
        role=_role(item.get("role", "aggregated")),
    )
    return Replica(config, ids, name)


def _role(value: Any) -> Any:
    if value not in ROLES:
        raise SpecError(f"role must be one of {', '.join(ROLES)}, got {value!r:.40}")
    return value


def _weights(weights: Any, source: str) -> dict[str, dict[str, float]]:
    if not isinstance(weights, dict) or not all(isinstance(v, dict) for v in weights.values()):
        raise SpecError(f"{source}: 'weights' must map type -> {{replica: share}}")
    out: dict[str, dict[str, float]] = {}
    for type_name, row in weights.items():
        t = _text(type_name, f"{source}: weights key")
        out[t] = {}
        for replica, share in row.items():
            where = f"{source}: weights[{t!r}][{replica!r:.70}]"
            if isinstance(share, bool) or not isinstance(share, int | float):
                raise SpecError(f"{where}: weights must be numbers, got {share!r:.40}")
            if not math.isfinite(share) or share < 0:
                raise SpecError(f"{where} must be finite and >= 0, got {share}")
            out[t][_text(replica, where)] = float(share)
    return out
