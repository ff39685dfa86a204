"""Matching a target deployment to the running one, so that the least weight has to move.

Three steps, each exact for the freedom it uses:

1. Keep: a target replica with the same config on the same GPUs as a current one is the same engine; it keeps
   serving, untouched (the GPU order is taken from the running replica).
2. Rematch (optional): a target replica may move to the GPUs of a current replica of the same config when the rest
   of the target still places around it (``oserve.planner.place`` on the GPUs left), so more replicas are kept.
   Capacity does not change: replicas of one config are interchangeable and routing weights are keyed by name.
3. Repin: a replica that must start may order its GPUs freely (which TP group is which stage, which GPU is which
   rank; vLLM takes ranks in ``CUDA_VISIBLE_DEVICES`` order). The order that leaves the most bytes already in place
   is an assignment problem, solved exactly (``scipy.optimize.linear_sum_assignment``) per stage and per group.

With the GPU sets fixed, every replica of a config needs the same shards, so pairing started replicas with stopped
ones changes nothing; only the GPU order inside a replica and keeping whole replicas do.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

import numpy as np
from scipy.optimize import linear_sum_assignment

from oserve.adapt.shards import ShardRange, gpu_shard, overlap_bytes, replica_shards
from oserve.errors import ConfigError, InfeasibleError, SpecError
from oserve.planner import place
from oserve.spec import Cluster, Deployment, ModelSpec, Replica

__all__ = ["adopt_names", "check_switch", "holdings", "match_replicas", "repin"]


def check_switch(current: Deployment, target: Deployment, model: ModelSpec, cluster: Cluster) -> None:
    """Both deployments serve ``model`` on ``cluster``, and every target shard fits its GPU."""
    names = {model.name, model.hf_id} - {""}
    for label, dep in (("current", current), ("target", target)):
        if dep.model and dep.model not in names:
            raise ConfigError(
                f"the {label} deployment serves {dep.model!r}, but the switch is planned for {model.name!r}; "
                "a switch changes the layout of one model, not the model"
            )
        try:
            dep.validate(cluster)
        except SpecError as exc:
            raise SpecError(f"{label} deployment does not fit cluster {cluster.name}: {exc}") from exc
    if current.model and target.model and current.model != target.model:
        raise ConfigError(f"current deployment serves {current.model!r}, target serves {target.model!r}")
    for r in target.replicas:
        need = max(sum(s.bytes(model) for s in shard) for shard in replica_shards(model, r).values())
        if need > r.config.gpu.memory_bytes:
            raise ConfigError(
                f"target replica {r.name} ({r.config.label}): its largest shard is {need / 1e9:.1f} GB, more than "
                f"a {r.config.gpu.name}'s {r.config.gpu.memory_bytes / 1e9:.0f} GB"
            )


def holdings(model: ModelSpec, deployment: Deployment) -> dict[int, tuple[ShardRange, ...]]:
    """GPU id -> the weight ranges it holds under ``deployment``."""
    out: dict[int, tuple[ShardRange, ...]] = {}
    for r in deployment.replicas:
        out.update(replica_shards(model, r))
    return out


def match_replicas(
    current: Deployment, target: Deployment, cluster: Cluster, *, rematch: bool = True
) -> tuple[Deployment, dict[str, str]]:
    """The target with kept replicas on their running GPU order (moved there when ``rematch`` keeps more), and
    ``{target name: current name}`` of the kept ones."""
    kept: dict[str, str] = {}
    taken: set[str] = set()
    by_name = {r.name: r for r in current.replicas}
    for t in target.replicas:
        for c in current.replicas:
            if c.name not in taken and c.config == t.config and set(c.gpu_ids) == set(t.gpu_ids):
                kept[t.name] = c.name
                taken.add(c.name)
                break
    extra: list[tuple[str, str]] = []
    if rematch:
        for t in target.replicas:
            if t.name in kept:
                continue
            c = next((c for c in current.replicas if c.name not in taken and c.config == t.config), None)
            if c is not None:
                extra.append((t.name, c.name))
                taken.add(c.name)
    for n in range(len(extra), 0, -1):
        placed = _place_around(target, {**kept, **dict(extra[:n])}, by_name, cluster)
        if placed is not None:
            return placed, {**kept, **dict(extra[:n])}
    pinned = {t: by_name[c].gpu_ids for t, c in kept.items()}
    return _with_gpus(target, pinned), kept


def _with_gpus(target: Deployment, gpus: Mapping[str, tuple[int, ...]]) -> Deployment:
    replicas = tuple(replace(r, gpu_ids=gpus[r.name]) if r.name in gpus else r for r in target.replicas)
    return replace(target, replicas=replicas)


def _place_around(
    target: Deployment, kept: Mapping[str, str], current: Mapping[str, Replica], cluster: Cluster
) -> Deployment | None:
    """Kept replicas on their current GPUs and the others where they were, or placed on the GPUs left."""
    pinned = {t: current[c].gpu_ids for t, c in kept.items()}
    used = {g for ids in pinned.values() for g in ids}
    others = [r for r in target.replicas if r.name not in kept]
    clashing = [r for r in others if used & set(r.gpu_ids)]
    for movers in (clashing, others):
        stay = {g for r in others if r not in movers for g in r.gpu_ids}
        free = {
            n.index: [g for g in cluster.node_gpu_ids(n.index) if g not in used and g not in stay]
            for n in cluster.nodes
        }
        try:
            placed = place(cluster, [(r.config, 1) for r in movers], free=free)
        except InfeasibleError:
            continue
        pool: dict[object, list[tuple[int, ...]]] = {}
        for p in placed:
            pool.setdefault(p.config, []).append(p.gpu_ids)
        moved = {r.name: pool[r.config].pop(0) for r in movers}
        return _with_gpus(target, {**pinned, **moved})
    return None


def repin(
    target: Deployment,
    model: ModelSpec,
    held: Mapping[int, Sequence[ShardRange]],
    skip: frozenset[str] = frozenset(),
) -> Deployment:
    """The target with each replica not in ``skip`` ordering its GPUs to keep the most ``held`` bytes in place."""
    replicas = tuple(
        r if r.name in skip else replace(r, gpu_ids=_best_order(model, r, held)) for r in target.replicas
    )
    return replace(target, replicas=replicas)


def _best_order(
    model: ModelSpec, replica: Replica, held: Mapping[int, Sequence[ShardRange]]
) -> tuple[int, ...]:
    cfg = replica.config
    tp, pp = cfg.tp, cfg.pp
    groups = [replica.gpu_ids[s * tp : (s + 1) * tp] for s in range(pp)]
    # Ties keep the given order: identity entries get a bonus below one byte in total.
    bonus = 0.5 / (tp * pp + 1)
    score = np.zeros((pp, pp))
    orders: dict[tuple[int, int], tuple[int, ...]] = {}
    for s in range(pp):
        need = [gpu_shard(model, cfg, s, rank) for rank in range(tp)]
        for k, group in enumerate(groups):
            m = np.array(
                [
                    [
                        overlap_bytes(model, need[rank], held.get(g, ()))
                        + (bonus if (s, rank) == (k, i) else 0.0)
                        for i, g in enumerate(group)
                    ]
                    for rank in range(tp)
                ]
            )
            rows, cols = linear_sum_assignment(m, maximize=True)
            score[s, k] = m[rows, cols].sum() + (bonus if s == k else 0.0)
            orders[s, k] = tuple(group[c] for c in cols)
    stages, picks = linear_sum_assignment(score, maximize=True)
    return tuple(g for s, k in zip(stages, picks, strict=True) for g in orders[s, k])


def adopt_names(target: Deployment, kept: Mapping[str, str]) -> tuple[Deployment, dict[str, str]]:
    """Kept replicas take their running names (the simulator and runtime keep a replica by name, config and GPUs);
    a started replica whose name a kept one now uses takes a name the kept ones gave up. Routing rows follow.
    Returns the renamed target and ``{original name: final name}``."""
    final = dict(kept)
    claimed = set(kept.values())
    freed = [t for t, c in kept.items() if t != c and t not in claimed]
    for r in target.replicas:
        if r.name in final:
            continue
        final[r.name] = r.name if r.name not in claimed else freed.pop(0)
        claimed.add(final[r.name])
    if all(k == v for k, v in final.items()):
        return target, final
    replicas = tuple(replace(r, name=final[r.name]) for r in target.replicas)
    weights = {t: {final[n]: w for n, w in row.items()} for t, row in target.weights.items()}
    return replace(target, replicas=replicas, weights=weights), final
