"""Which replica shapes a cluster can hold, and where their GPUs go.

A replica of ``tp x pp`` GPUs is ``pp`` TP groups of ``tp`` GPUs, each group inside one node (stages may sit on
different nodes). TP degrees are powers of two, so counts of shapes pack onto a GPU type's nodes exactly when, for
every group size ``s`` (1, 2, 4, ...), the GPUs in groups of ``s`` or more fit in what the nodes hold in
``s``-aligned blocks: ``sum_{tp >= s} count * tp * pp <= sum_nodes floor(node_gpus / s) * s``. The planner's LP and
MILP carry these rows; ``place`` then assigns concrete GPU ids, largest groups first, best-fit by node.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from oserve.errors import InfeasibleError
from oserve.perf import Calibration, CostModel
from oserve.spec import Cluster, ModelSpec, Replica, ReplicaConfig

__all__ = ["PackingRows", "candidate_configs", "packing_rows", "place"]


def candidate_configs(
    model: ModelSpec,
    cluster: Cluster,
    *,
    tps: Iterable[int] = (1, 2, 4, 8),
    pps: Iterable[int] = (1, 2, 4),
    calibration: Calibration | None = None,
    template: ReplicaConfig | None = None,
) -> tuple[list[ReplicaConfig], list[str]]:
    """Every (GPU type, TP, PP) shape the model fits on and the cluster can hold once; and why the others can't.

    ``template`` carries the engine knobs (max_num_seqs, token budget, ...) every candidate shares.
    """
    configs, reasons = [], []
    tps, pps = tuple(tps), tuple(pps)
    for gpu in cluster.gpu_types():
        sizes = [n.num_gpus for n in cluster.nodes if n.gpu.name == gpu.name]
        for pp in pps:
            for tp in tps:
                label = f"{gpu.name} TP{tp}" + (f"PP{pp}" if pp > 1 else "")
                if tp > max(sizes) or sum(s // tp for s in sizes) < pp:
                    continue
                knobs = (
                    {}
                    if template is None
                    else {
                        "max_num_seqs": template.max_num_seqs,
                        "max_num_batched_tokens": template.max_num_batched_tokens,
                        "block_size": template.block_size,
                        "gpu_memory_utilization": template.gpu_memory_utilization,
                        "max_model_len": template.max_model_len,
                    }
                )
                config = ReplicaConfig(gpu, tp=tp, pp=pp, **knobs)
                cm = CostModel(model, config, calibration)
                if not cm.fits:
                    reasons.append(f"{label}: {cm.unfit_reason}")
                    continue
                configs.append(config)
    return configs, reasons


@dataclass(frozen=True, slots=True)
class PackingRows:
    """``coeffs @ counts <= limits``: one row per (GPU type, group size) that matters."""

    coeffs: np.ndarray  # rows x configs, GPUs each replica puts in groups of at least the row's size
    limits: np.ndarray  # rows
    labels: tuple[str, ...]

    def feasible(self, counts: np.ndarray) -> bool:
        return bool(np.all(self.coeffs @ counts <= self.limits + 1e-9))

    def max_count(self, counts: np.ndarray, index: int) -> int:
        """How many more replicas of config ``index`` fit beside ``counts``."""
        col = self.coeffs[:, index]
        room = self.limits - self.coeffs @ counts
        used = col > 0
        if not used.any():
            return 0
        return max(0, int(np.floor(np.min(room[used] / col[used]) + 1e-9)))


def packing_rows(cluster: Cluster, configs: Sequence[ReplicaConfig]) -> PackingRows:
    rows, limits, labels = [], [], []
    for gpu in cluster.gpu_types():
        sizes = [n.num_gpus for n in cluster.nodes if n.gpu.name == gpu.name]
        tps = sorted({c.tp for c in configs if c.gpu.name == gpu.name} | {1})
        for s in tps:
            rows.append([c.num_gpus if c.gpu.name == gpu.name and c.tp >= s else 0 for c in configs])
            limits.append(sum(n // s * s for n in sizes))
            labels.append(f"{gpu.name} GPUs in TP groups >= {s}")
    return PackingRows(
        np.array(rows, dtype=np.float64).reshape(len(rows), len(configs)),
        np.array(limits, float),
        tuple(labels),
    )


def place(
    cluster: Cluster,
    counts: Sequence[tuple[ReplicaConfig, int]],
    *,
    free: Mapping[int, Sequence[int]] | None = None,
) -> tuple[Replica, ...]:
    """Concrete GPU ids for ``count`` replicas of each config: largest TP groups first, best-fit node, a replica's
    stages on one node when they fit. ``free`` limits the GPUs used (node index -> GPU ids; default: all).
    Raises ``InfeasibleError`` when the counts do not fit."""
    avail = {
        n.index: list(cluster.node_gpu_ids(n.index) if free is None else free.get(n.index, ()))
        for n in cluster.nodes
    }
    gpu_of_node = {n.index: n.gpu.name for n in cluster.nodes}
    order = sorted((c for c in counts if c[1] > 0), key=lambda cn: (-cn[0].tp, -cn[0].pp, cn[0].gpu.name))
    replicas: list[Replica] = []
    for config, count in order:
        for _ in range(count):
            ids: list[int] = []
            last = None
            for _stage in range(config.pp):
                fits = [
                    n for n, g in avail.items() if gpu_of_node[n] == config.gpu.name and len(g) >= config.tp
                ]
                if not fits:
                    raise InfeasibleError(
                        f"cluster {cluster.name} cannot place another {config.label} "
                        f"({len(replicas)} replicas placed so far)"
                    )
                node = last if last in fits else min(fits, key=lambda n: (len(avail[n]), n))
                ids.extend(avail[node][: config.tp])
                avail[node] = avail[node][config.tp :]
                last = node
            replicas.append(Replica(config, tuple(ids), f"r{len(replicas)}"))
    return tuple(replicas)
