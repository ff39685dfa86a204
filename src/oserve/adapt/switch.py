"""The switch planner: from the running deployment to a target one, moving weights over the fastest links.

``plan_switch`` matches the target to the running replicas (``adapt.match``: keep identical ones, keep more by
re-placing same-config replicas, order GPUs to reuse resident bytes), finds for every byte a started replica needs
the source that delivers it earliest (``adapt.transfers``: its own GPU, a peer over NVLink or PCIe, another node over
the network, host memory, or disk) on links that are never oversubscribed (``adapt.links``), and prices the engine
restarts and the drain. ``naive_reload_plan`` is the baseline: every started replica reloads its shards from disk
(or from host memory). ``price_switch`` is the one the controller calls, by where its weights come from (``links``:
``plan_switch``; ``disk``: the reload from disk, what the ``vllm-reload`` baseline pays). docs/switch.md explains the
model and how to read a plan.

Timeline (seconds after the decision): replicas that stop take no new requests at 0 and drain until ``drain_s``; a
GPU receives once its old replica has drained (a GPU no replica used receives at once); a started replica restarts
its engine when the last byte for its GPUs has arrived and is ready ``restart_s`` later.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Literal

from oserve.adapt.match import adopt_names, check_switch, holdings, match_replicas, repin
from oserve.adapt.shards import replica_shards, shard_bytes
from oserve.adapt.switch_plan import StartedReplica, SwitchPlan
from oserve.adapt.transfers import Need, schedule_moves
from oserve.errors import ConfigError
from oserve.spec import Cluster, Deployment, ModelSpec

__all__ = [
    "CHUNK_BYTES",
    "COLD_RESTART_S",
    "SWITCH_WEIGHTS",
    "WAKE_RESTART_S",
    "SwitchWeights",
    "naive_reload_plan",
    "plan_switch",
    "price_switch",
]

# Engine start beyond moving weights (allocator, NCCL, memory profiling, CUDA graphs, kernel JIT): vLLM's own
# figure for a cold reload is 30-100+ s including weights (blog.vllm.ai/2025/10/26/sleep-mode.html); the weights
# are planned here, so the default takes the low end for the rest.
COLD_RESTART_S = 30.0
# Waking a sleeping engine (``--enable-sleep-mode``, ``/wake_up``) takes 0.1-0.4 s for small models, weights
# included (vLLM sleep-mode posts, Oct 2025); the weights' copy back from host memory is planned here, so the
# fixed part is the low end.
WAKE_RESTART_S = 0.1
# Transfers are cut into parts of at most 1 GiB, so one GPU's shard can come from several sources at once.
CHUNK_BYTES = 1 << 30
#: where a switch's weights come from: ``links`` (the fastest source per byte: peer GPUs over NVLink or PCIe,
#: other nodes over the network, host memory, disk) or ``disk`` (every started engine reads its shards from its
#: node's disk, as ``vllm serve`` does on a restart)
SwitchWeights = Literal["links", "disk"]
SWITCH_WEIGHTS: tuple[SwitchWeights, ...] = ("links", "disk")


def plan_switch(
    current: Deployment,
    target: Deployment,
    model: ModelSpec,
    cluster: Cluster,
    *,
    restart_s: float | Mapping[str, float] = COLD_RESTART_S,
    drain_s: float = 0.0,
    host_cache: bool = True,
    rematch: bool = True,
    chunk_bytes: int = CHUNK_BYTES,
) -> SwitchPlan:
    """Plan the switch from ``current`` to ``target``: the matched target, every transfer, ready times.

    ``restart_s``: engine start per started replica, beyond its weights (a number, or per target replica name,
    others ``COLD_RESTART_S``; ``WAKE_RESTART_S`` to wake a sleeping standby engine). ``drain_s``: how long
    stopping replicas finish their running requests (0: re-route them at once). ``host_cache``: each node keeps a
    copy of the weights in host memory (where it fits) to read over PCIe. ``rematch``: target replicas may move to
    the GPUs of a running same-config replica to keep it serving.
    """
    return _plan(
        current,
        target,
        model,
        cluster,
        method="transfer",
        from_gpus=True,
        from_host=host_cache,
        from_disk=True,
        restart_s=restart_s,
        drain_s=drain_s,
        rematch=rematch,
        chunk_bytes=chunk_bytes,
    )


def naive_reload_plan(
    current: Deployment,
    target: Deployment,
    model: ModelSpec,
    cluster: Cluster,
    *,
    source: Literal["disk", "host"] = "disk",
    restart_s: float | Mapping[str, float] = COLD_RESTART_S,
    drain_s: float = 0.0,
    rematch: bool = True,
    chunk_bytes: int = CHUNK_BYTES,
) -> SwitchPlan:
    """The baseline: the same replicas kept and started, but every started replica loads all its shards from
    its node's disk (``source="host"``: from host memory, e.g. the page cache); nothing reused or copied."""
    if source not in ("disk", "host"):
        raise ConfigError(f"naive reload source must be 'disk' or 'host', got {source!r}")
    return _plan(
        current,
        target,
        model,
        cluster,
        method=f"reload from {source}",
        from_gpus=False,
        from_host=source == "host",
        from_disk=source == "disk",
        restart_s=restart_s,
        drain_s=drain_s,
        rematch=rematch,
        chunk_bytes=chunk_bytes,
    )


def price_switch(
    current: Deployment,
    target: Deployment,
    model: ModelSpec,
    cluster: Cluster,
    *,
    weights: SwitchWeights = "links",
    restart_s: float | Mapping[str, float] = COLD_RESTART_S,
    drain_s: float = 0.0,
) -> SwitchPlan:
    """The switch plan the controller prices a switch by: ``plan_switch`` when weights move over the fastest
    links, ``naive_reload_plan`` from disk when every started engine reloads (``weights="disk"``)."""
    if weights == "links":
        return plan_switch(current, target, model, cluster, restart_s=restart_s, drain_s=drain_s)
    if weights == "disk":
        return naive_reload_plan(
            current, target, model, cluster, source="disk", restart_s=restart_s, drain_s=drain_s
        )
    raise ConfigError(f"switch weights come from {' or '.join(SWITCH_WEIGHTS)}, got {weights!r}")


def _plan(
    current: Deployment,
    target: Deployment,
    model: ModelSpec,
    cluster: Cluster,
    *,
    method: str,
    from_gpus: bool,
    from_host: bool,
    from_disk: bool,
    restart_s: float | Mapping[str, float],
    drain_s: float,
    rematch: bool,
    chunk_bytes: int,
) -> SwitchPlan:
    if not (math.isfinite(drain_s) and drain_s >= 0):
        raise ConfigError(f"drain_s must be a finite number >= 0, got {drain_s}")
    if chunk_bytes < 1:
        raise ConfigError(f"chunk_bytes must be positive, got {chunk_bytes}")
    check_switch(current, target, model, cluster)
    restarts = _restart_times(restart_s, target)
    notes: list[str] = []
    host_nodes: frozenset[int] = frozenset()
    if from_host:
        host_nodes = frozenset(
            n.index for n in cluster.nodes if n.host_memory_gib * 1024**3 >= model.weight_bytes
        )
        short = sorted({n.index for n in cluster.nodes} - host_nodes)
        if short:
            notes.append(
                f"host memory of node(s) {short} cannot hold the {model.weight_bytes / 1e9:.0f} GB of weights: "
                "no host copy there"
            )

    # match: keep identical replicas (more with rematch), order started replicas' GPUs to reuse resident bytes
    matched, kept = match_replicas(current, target, cluster, rematch=rematch)
    held = holdings(model, current)
    if from_gpus:
        matched = repin(matched, model, held, skip=frozenset(kept))
    final, names = adopt_names(matched, kept)
    original = {v: k for k, v in names.items()}
    kept_current = set(kept.values())
    stopped = [r for r in current.replicas if r.name not in kept_current]
    stopped_gpus = {g: r.name for r in stopped for g in r.gpu_ids}
    started = [r for r in final.replicas if r.name not in kept_current]

    # move: every byte a started replica's GPU needs, from the source that delivers it earliest
    release = {g: drain_s if g in stopped_gpus else 0.0 for r in started for g in r.gpu_ids}
    needs = [
        Need(gpu, ranges, release[gpu], r.name)
        for r in started
        for gpu, ranges in replica_shards(model, r).items()
    ]
    if not (from_gpus or from_disk):
        lacking = sorted({cluster.gpus[n.gpu].node for n in needs} - host_nodes)
        if lacking:
            raise ConfigError(f"cannot reload from host memory on node(s) {lacking}: {'; '.join(notes)}")
    moves = schedule_moves(
        model,
        cluster,
        held,
        needs,
        from_gpus=from_gpus,
        host_nodes=host_nodes,
        from_disk=from_disk,
        reuse_local=from_gpus,
        chunk_bytes=chunk_bytes,
    )
    if moves.short_of_memory:
        notes.append(
            f"GPU(s) {list(moves.short_of_memory)} cannot hold their old and new shards at once: they keep what "
            "they reuse and free the rest instead of sending it"
        )

    # restart: each started replica when its last byte is in, plus its engine start
    out: list[StartedReplica] = []
    for r in started:
        gpus = set(r.gpu_ids)
        mine = [t for t in moves.transfers if t.dst_gpu in gpus]
        weights_ready = max([release[g] for g in gpus] + [t.end_s for t in mine])
        out.append(
            StartedReplica(
                name=r.name,
                label=r.config.label,
                gpu_ids=r.gpu_ids,
                replaces=tuple(sorted({stopped_gpus[g] for g in gpus if g in stopped_gpus})),
                release_s=max(release[g] for g in gpus),
                weights_ready_s=weights_ready,
                restart_s=restarts[original[r.name]],
                needed_bytes=sum(shard_bytes(model, s) for s in replica_shards(model, r).values()),
                local_bytes=sum(t.nbytes for t in mine if t.link == "local"),
            )
        )
    duration = max([s.ready_s for s in out] + [drain_s if stopped else 0.0])
    ready_of = {g: s.ready_s for s in out for g in s.gpu_ids}
    return SwitchPlan(
        method=method,
        current=current,
        target=final,
        kept=tuple(kept[t.name] for t in matched.replicas if t.name in kept),
        stopped=tuple(r.name for r in stopped),
        started=tuple(out),
        transfers=moves.transfers,
        drain_s=drain_s,
        duration_s=duration,
        capacity_lost_gpu_s=sum(ready_of.get(g, duration) for g in stopped_gpus),
        link_gb_per_s=moves.link_gb_per_s,
        notes=tuple(notes),
    )


def _restart_times(restart_s: float | Mapping[str, float], target: Deployment) -> dict[str, float]:
    names = [r.name for r in target.replicas]
    if isinstance(restart_s, Mapping):
        unknown = sorted(set(restart_s) - set(names))
        if unknown:
            raise ConfigError(f"restart_s names unknown target replicas {unknown}; replicas: {names}")
        out = {n: float(restart_s.get(n, COLD_RESTART_S)) for n in names}
    else:
        out = dict.fromkeys(names, float(restart_s))
    bad = {n: v for n, v in out.items() if not (math.isfinite(v) and v >= 0)}
    if bad:
        raise ConfigError(f"restart_s must be finite and >= 0, got {bad}")
    return out
