"""Prefill/decode pools as deployment shapes: their capacity at the SLO, their sizing and placement.

A pool of ``n_p`` prefill replicas of one config and ``n_d`` decode replicas of another (``sim.disagg``) serves
``min(n_p * mu_p, n_d * mu_d)`` requests per second of a length mix, where

- ``mu_p`` (``prefill_capacity``): a prefill-only engine is a single server of prompt work, an M/G/1 queue. A
  prompt's own TTFT is its unloaded prefill (``CapacityModel.unloaded``: its chunks' step times); its share of the
  server is that time scaled to a full token budget for prompts shorter than the budget (queued prompts are
  batched up to ``max_num_batched_tokens`` per step), so the load is ``rho = lam * E[w]``. A request waits with
  probability ``rho`` an exponential time of the Pollaczek-Khinchine mean; mu is the largest ``lam`` whose share of
  requests with ``wait + own prefill <= TTFT target`` is at least the attainment. The first token comes from the
  prefill, so the KV copy is not in the TTFT.
- ``mu_d`` (``decode_capacity``): a decode-only engine runs pure decode steps, uninterrupted by prefills (the point
  of disaggregating), so a request's TPOT is the step time at the batch. With ``d`` sequences decoding on average
  (Poisson, so ``d + z sqrt(d)`` at the tail) each at the time-weighted mean context, the step ``T(d)`` at the
  tail batch must stay within the TPOT target, the tail batch within ``max_num_seqs`` and its KV within the cache;
  Little's law gives ``lam = d / (E[O - 1] * T(d))``.

The attainment is split between the phases (each ``sqrt(attainment)``) since a request must meet both. The KV
copy is priced by ``sim.disagg``'s link model only in the simulator (it adds ``copy / (O - 1)`` to a TPOT, well
under 1 % on NVLink and a few % on the network for long prompts). ``benchmarks/disagg.py`` checks pool capacity
against ``planner.validate.simulated_rate`` on the same mix.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from oserve.errors import InfeasibleError, SpecError
from oserve.perf import Calibration
from oserve.planner.capacity import Capacity, CapacityModel
from oserve.planner.placement import candidate_configs
from oserve.spec import Cluster, Deployment, ModelSpec, ReplicaConfig
from oserve.spec.deployment import Replica

__all__ = [
    "PoolShape",
    "best_type_split",
    "decode_capacity",
    "mixed_pool_candidates",
    "pool_candidates",
    "pool_deployment",
    "prefill_capacity",
    "split_gpus",
]

_SAMPLE = 400  # lengths kept of a mix (evenly spaced over the sorted prompts): enough for the tail shares
_Z = 1.65  # the batch's tail over its mean, in standard deviations (as ``CapacityModel.headroom_z``)


@dataclass(frozen=True, slots=True)
class PoolShape:
    """``n_prefill`` x ``prefill`` + ``n_decode`` x ``decode``: its modelled rate on the mix and what limits it."""

    prefill: ReplicaConfig
    n_prefill: int
    decode: ReplicaConfig
    n_decode: int
    rate_rps: float
    limit: str  # "prefill" or "decode": the phase that binds
    mu_prefill: float = 0.0
    mu_decode: float = 0.0
    # on several GPU types: the (config, count) per role and type
    groups: tuple[tuple[ReplicaConfig, int], ...] = ()

    @property
    def layout(self) -> tuple[tuple[ReplicaConfig, int], ...]:
        """The (config, count) groups to place (``pool_deployment``)."""
        return self.groups or ((self.prefill, self.n_prefill), (self.decode, self.n_decode))

    @property
    def num_gpus(self) -> int:
        return sum(c.num_gpus * n for c, n in self.layout)

    @property
    def label(self) -> str:
        if self.groups:
            return " + ".join(f"{n}{c.role[0].upper()} x tp{c.tp} {c.gpu.name}" for c, n in self.groups)
        return f"{self.n_prefill}P x tp{self.prefill.tp} + {self.n_decode}D x tp{self.decode.tp}"


def _sample(prompts: np.ndarray, outputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    prompts = np.maximum(1, np.asarray(prompts, np.int64))
    outputs = np.maximum(1, np.asarray(outputs, np.int64))
    if len(prompts) <= _SAMPLE:
        return prompts, outputs
    pick = np.argsort(prompts, kind="stable")[np.linspace(0, len(prompts) - 1, _SAMPLE).astype(np.int64)]
    return prompts[pick], outputs[pick]


def prefill_capacity(
    capm: CapacityModel, config: ReplicaConfig, prompts: np.ndarray, attainment: float | None = None
) -> Capacity:
    """mu (req/s) of one prefill-only replica on these prompts within the TTFT target (module docstring)."""
    share = math.sqrt(capm.attainment) if attainment is None else attainment
    prompts, _ = _sample(prompts, np.ones(len(prompts), np.int64))
    limit = capm.timer(config).cost_model.memory.max_model_len
    prompts = prompts[prompts < limit]
    if not len(prompts):
        return Capacity(0.0, "context")
    budget = config.max_num_batched_tokens
    alone = np.array([capm.unloaded(config, float(p), 1.0)[0] for p in prompts.tolist()])
    timer = capm.timer(config)
    work = alone.copy()
    for i, p in enumerate(prompts.tolist()):  # queued short prompts share full-budget steps of their kind
        if p < budget:
            k = budget // p
            work[i] = timer.step_time(k * p, k, k * p * (p + 1) / 2, k * p, 0, 0) / k
    room = capm.slo.ttft_target(prompts) - alone
    if np.mean(room > 0) < share:
        return Capacity(0.0, "slo")
    ew, ew2 = float(work.mean()), float((work**2).mean())

    def met(lam: float) -> float:
        rho = lam * ew
        if rho >= 1:
            return 0.0
        wq = lam * ew2 / (2 * (1 - rho))  # mean wait (Pollaczek-Khinchine)
        tail = rho * np.exp(-np.maximum(room, 0) * rho / max(wq, 1e-12))
        return float(np.mean(np.where(room > 0, 1 - tail, 0.0)))

    lo, hi = 0.0, 1.0 / ew
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if met(mid) >= share else (lo, mid)
    return Capacity(lo, "ttft", ttft_s=float(alone.mean()))


def decode_capacity(
    capm: CapacityModel, config: ReplicaConfig, prompts: np.ndarray, outputs: np.ndarray
) -> Capacity:
    """mu (req/s of the whole mix) of one decode-only replica within the TPOT target (module docstring)."""
    prompts, outputs = _sample(prompts, outputs)
    timer = capm.timer(config)
    cm = timer.cost_model
    keep = prompts + outputs <= cm.memory.max_model_len
    prompts, outputs = prompts[keep], outputs[keep]
    steps = (outputs - 1).astype(np.float64)
    if not len(prompts) or steps.sum() <= 0:
        return Capacity(0.0, "context" if not len(prompts) else "batch")
    ctx = float((steps * (prompts + steps / 2)).sum() / steps.sum())  # time-weighted context per sequence
    kv = cm.kv_capacity_tokens
    tpot = capm.slo.tpot_s

    def tail(d: float) -> float:
        return d + _Z * math.sqrt(d)

    def step(d: float) -> float:
        n = max(1, math.ceil(tail(d)))
        return timer.decode_time(n, int(n * ctx))

    def bound(d: float) -> str | None:
        if tail(d) > config.max_num_seqs:
            return "max_seqs"
        if tail(d) * ctx > kv:
            return "kv"
        if step(d) > tpot:
            return "tpot"
        return None

    if bound(0.05) is not None:
        return Capacity(0.0, "slo")
    lo, hi = 0.05, float(config.max_num_seqs)
    if bound(hi) is None:
        lo = hi
    for _ in range(40):
        if hi - lo < 1e-3 * hi:
            break
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if bound(mid) is None else (lo, mid)
    limit = bound(hi) or "batch"
    t = step(lo)
    return Capacity(lo / (float(steps.mean()) * t), limit, step_s=t, batch=lo)


def split_gpus(
    gpus: int, prefill_tp: int, decode_tp: int, prefill_demand: float, decode_demand: float
) -> tuple[int, int]:
    """Replica counts ``(n_p, n_d)``, one of each at least, using at most ``gpus`` GPUs, that maximise
    ``min(n_p / prefill_demand, n_d / decode_demand)`` (the demands in replicas per unit of load); of equals, the
    one using more GPUs. Raises ``InfeasibleError`` when one of each does not fit."""
    if prefill_tp + decode_tp > gpus:
        raise InfeasibleError(
            f"{gpus} GPUs cannot hold a tp{prefill_tp} prefill and a tp{decode_tp} decode replica"
        )
    best = (-1.0, 0, 1, 1)
    for n_p in range(1, (gpus - decode_tp) // prefill_tp + 1):
        n_d = (gpus - n_p * prefill_tp) // decode_tp
        scale = min(n_p / max(prefill_demand, 1e-12), n_d / max(decode_demand, 1e-12))
        used = n_p * prefill_tp + n_d * decode_tp
        if (scale, used) > best[:2]:
            best = (scale, used, n_p, n_d)
    return best[2], best[3]


def pool_candidates(
    model: ModelSpec,
    cluster: Cluster,
    prompts: np.ndarray,
    outputs: np.ndarray,
    capm: CapacityModel,
    *,
    calibration: Calibration | None = None,
    tps: Sequence[int] = (1, 2, 4, 8),
    gpus: int | None = None,
    gpu: str | None = None,
) -> list[PoolShape]:
    """Every (prefill TP, decode TP) pool that fits the model, best first. On one GPU type (or with ``gpus`` or
    ``gpu`` given: ``gpus`` GPUs, default all, of type ``gpu``, default the cluster's first) sized by ``split_gpus`` from the phases' modelled
    capacities; on several types (``mixed_pool_candidates``) each type's GPUs split between the two pools."""
    configs, _ = candidate_configs(model, cluster, tps=tps, pps=(1,), calibration=calibration)
    if gpus is None and gpu is None and len(cluster.gpu_types()) > 1:
        return mixed_pool_candidates(configs, cluster, prompts, outputs, capm)
    gpu = gpu or cluster.gpu_types()[0].name
    configs = [c for c in configs if c.gpu.name == gpu]
    total = gpus if gpus is not None else sum(n.num_gpus for n in cluster.nodes if n.gpu.name == gpu)
    prompts = np.asarray(prompts, np.int64)
    outputs = np.asarray(outputs, np.int64)
    out = []
    for p in configs:
        pc = prefill_capacity(capm, replace(p, role="prefill"), prompts)
        for d in configs:
            dc = decode_capacity(capm, replace(d, role="decode"), prompts, outputs)
            if p.tp + d.tp > total:
                continue
            if not pc.serves or not dc.serves:
                n_p, n_d = split_gpus(total, p.tp, d.tp, 1.0, 1.0)
            else:
                n_p, n_d = split_gpus(total, p.tp, d.tp, 1 / pc.rate_rps, 1 / dc.rate_rps)
            rp, rd = n_p * pc.rate_rps, n_d * dc.rate_rps
            out.append(
                PoolShape(
                    replace(p, role="prefill"),
                    n_p,
                    replace(d, role="decode"),
                    n_d,
                    min(rp, rd),
                    "prefill" if rp <= rd else "decode",
                    pc.rate_rps,
                    dc.rate_rps,
                )
            )
    return sorted(out, key=lambda s: (-s.rate_rps, s.num_gpus, s.prefill.tp, s.decode.tp))


def best_type_split(
    per_type: Sequence[tuple[int, int | None, int | None, float, float]],
) -> tuple[tuple[int, int], ...] | None:
    """Each GPU type's split between a prefill and a decode pool so that the two pools together serve the most
    load: ``per_type`` holds per type ``(GPUs, prefill TP or None, decode TP or None, one prefill replica's
    rate, one decode replica's rate)``; the answer is ``(n_prefill, n_decode)`` per type maximising
    ``min(sum n_p * rate_p, sum n_d * rate_d)``, of equals the one using more GPUs (a type may hold both,
    prefill only or decode only). None when no split has a prefill and a decode replica. Shared by OServe's
    mixed pools and ``dynamo_layout``."""
    options = []
    for total, p_tp, d_tp, _, _ in per_type:
        splits = []
        for n_p in range(total // p_tp + 1 if p_tp else 1):
            n_d = (total - n_p * (p_tp or 0)) // d_tp if d_tp else 0
            splits.append((n_p, n_d, n_p * (p_tp or 0) + n_d * (d_tp or 0)))
        options.append(splits)
    best: tuple | None = None
    for choice in itertools.product(*options):
        if sum(c[0] for c in choice) < 1 or sum(c[1] for c in choice) < 1:
            continue
        p_rate = sum(c[0] * t[3] for c, t in zip(choice, per_type, strict=True))
        d_rate = sum(c[1] * t[4] for c, t in zip(choice, per_type, strict=True))
        key = (min(p_rate, d_rate), sum(c[2] for c in choice))
        if best is None or key > best[0]:
            best = (key, choice)
    return None if best is None else tuple((c[0], c[1]) for c in best[1])


def mixed_pool_candidates(
    configs: Sequence[ReplicaConfig],
    cluster: Cluster,
    prompts: np.ndarray,
    outputs: np.ndarray,
    capm: CapacityModel,
) -> list[PoolShape]:
    """``pool_candidates`` on a cluster of several GPU types: per (prefill TP, decode TP), that TP's config on
    every type where it fits, each type's GPUs split between the pools by ``best_type_split`` on the modelled
    per-replica rates (per-type pools, or prefill on one type and decode on another, whichever serves more);
    best first."""
    prompts = np.asarray(prompts, np.int64)
    outputs = np.asarray(outputs, np.int64)
    types = [g.name for g in cluster.gpu_types()]
    totals = {g: sum(n.num_gpus for n in cluster.nodes if n.gpu.name == g) for g in types}
    by = {(c.gpu.name, c.tp): c for c in configs}
    mu: dict[tuple[str, str, int], float] = {}
    for c in configs:
        mu["prefill", c.gpu.name, c.tp] = prefill_capacity(capm, replace(c, role="prefill"), prompts).rate_rps
        mu["decode", c.gpu.name, c.tp] = decode_capacity(
            capm, replace(c, role="decode"), prompts, outputs
        ).rate_rps
    tps = sorted({c.tp for c in configs})
    out = []
    for p_tp in tps:
        for d_tp in tps:
            per_type = []
            for g in types:
                p = p_tp if (g, p_tp) in by and p_tp <= totals[g] else None
                d = d_tp if (g, d_tp) in by and d_tp <= totals[g] else None
                per_type.append(
                    (totals[g], p, d, mu.get(("prefill", g, p_tp), 0.0), mu.get(("decode", g, d_tp), 0.0))
                )
            if all(t[3] <= 0 for t in per_type) or all(t[4] <= 0 for t in per_type):
                per_type = [(t[0], t[1], t[2], 1.0, 1.0) for t in per_type]  # no rate: split by count
            split = best_type_split(per_type)
            if split is None:
                continue
            groups = [
                (replace(by[g, p_tp], role="prefill"), n_p)
                for g, (n_p, _) in zip(types, split, strict=True)
                if n_p
            ]
            groups += [
                (replace(by[g, d_tp], role="decode"), n_d)
                for g, (_, n_d) in zip(types, split, strict=True)
                if n_d
            ]
            rp = sum(n * mu["prefill", c.gpu.name, c.tp] for c, n in groups if c.role == "prefill")
            rd = sum(n * mu["decode", c.gpu.name, c.tp] for c, n in groups if c.role == "decode")
            out.append(
                PoolShape(
                    groups[0][0],
                    sum(n for c, n in groups if c.role == "prefill"),
                    groups[-1][0],
                    sum(n for c, n in groups if c.role == "decode"),
                    min(rp, rd),
                    "prefill" if rp <= rd else "decode",
                    rp / max(1, sum(n for c, n in groups if c.role == "prefill")),  # mean per replica
                    rd / max(1, sum(n for c, n in groups if c.role == "decode")),
                    tuple(groups),
                )
            )
    return sorted(out, key=lambda s: (-s.rate_rps, -s.num_gpus, s.prefill.tp, s.decode.tp))


def pool_deployment(
    model: ModelSpec,
    cluster: Cluster,
    groups: Sequence[tuple[ReplicaConfig, int]],
    *,
    weights: dict[str, dict[str, float]] | None = None,
    note: str = "",
) -> Deployment:
    """Replicas of each ``(config, count)`` placed on the cluster (the widest TP first, each on the node of its
    GPU type with the most free GPUs, so prefill and decode replicas share nodes where they can), named by role:
    ``p0, p1, ...`` prefill, ``d0, ...`` decode, ``a0, ...`` aggregated. Raises ``SpecError`` when they do not fit."""
    free = {n.index: list(cluster.node_gpu_ids(n.index)) for n in cluster.nodes}
    order = sorted(
        [(c, k) for c, count in groups for k in range(count)], key=lambda ck: (-ck[0].tp, ck[1], ck[0].role)
    )
    prefix = {"prefill": "p", "decode": "d", "aggregated": "a"}
    seen = dict.fromkeys(prefix, 0)
    replicas = []
    for config, _ in order:
        nodes = [
            i
            for i, ids in free.items()
            if len(ids) >= config.tp and cluster.nodes[i].gpu.name == config.gpu.name
        ]
        if not nodes or config.pp != 1:
            raise SpecError(f"cluster {cluster.name} cannot hold the pool: no room for {config.label}")
        node = max(nodes, key=lambda i: (len(free[i]), -i))
        ids, free[node] = free[node][: config.tp], free[node][config.tp :]
        name = f"{prefix[config.role]}{seen[config.role]}"
        seen[config.role] += 1
        replicas.append(Replica(config, tuple(ids), name))
    rank = {"prefill": 0, "decode": 1, "aggregated": 2}
    replicas.sort(key=lambda r: (rank[r.config.role], int(r.name[1:])))
    text = note or " + ".join(f"{n} x {c.label}" for c, n in groups if n)
    return Deployment(model.name, tuple(replicas), weights or {}, note=text)
