"""The ``dynamo`` baseline: prefill/decode disaggregation as NVIDIA Dynamo's SLA planner sizes it.

Dynamo's profiler (``benchmarks/profiler/profile_sla.py``) measures, per TP degree, the prefill's TTFT at the
workload's mean ISL (one request) and the decode's inter-token latency over a sweep of concurrency up to what the
KV cache holds at ISL + OSL; its SLA planner then takes the prefill TP with the highest prefill throughput per GPU
(``ISL / TTFT / TP``) among those within the TTFT target, the decode TP with the highest decode throughput per GPU
(``concurrency / ITL / TP``) among the points within the ITL target, and scales the two worker pools to the load:
``prefill replicas = rate * ISL / prefill throughput per replica``, ``decode replicas = rate * OSL / decode
throughput per replica``. On a fixed cluster, as every baseline here uses every GPU, the GPUs are split in that
ratio (``planner.disagg.split_gpus``). On a cluster of several GPU types (``dynamo_layout``) the profiler runs
per type and each type's GPUs are split between the prefill and the decode pool so that the two serve the most
load together: every GPU is held, as every other policy holds it. Our cost model stands in for the profiled
engine, on the same trace, cluster and SLO as every other policy; Dynamo's corrections from live metrics (its planner's adjustment factors)
need a running system and are not modelled. Routed least outstanding tokens, as Dynamo's KV-unaware router does
without prefix reuse.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from oserve.errors import InfeasibleError
from oserve.perf import Calibration
from oserve.planner.capacity import CapacityModel
from oserve.planner.disagg import best_type_split, pool_deployment, split_gpus
from oserve.planner.placement import candidate_configs
from oserve.planner.slo import Slo
from oserve.spec import Cluster, Deployment, ModelSpec, ReplicaConfig
from oserve.trace import Trace

__all__ = [
    "DYNAMO_ROUTER",
    "DynamoLayout",
    "DynamoSizing",
    "dynamo_deployment",
    "dynamo_layout",
    "dynamo_policy",
    "dynamo_sizing",
]

DYNAMO_ROUTER = "least-tokens"
_CONCURRENCY = np.unique(np.rint(np.geomspace(1, 4096, 60))).astype(np.int64)


@dataclass(frozen=True, slots=True)
class DynamoSizing:
    """The SLA planner's choice: TPs, per-GPU throughputs (tokens/s) and the replica counts on the cluster."""

    prefill: ReplicaConfig
    decode: ReplicaConfig
    n_prefill: int
    n_decode: int
    prefill_tokens_per_gpu_s: float
    decode_tokens_per_gpu_s: float
    isl: float
    osl: float

    @property
    def prefill_gpu_share(self) -> float:
        """The share of the GPUs the load's prefill demand asks for (before rounding to replicas)."""
        p = self.isl / self.prefill_tokens_per_gpu_s
        d = self.osl / self.decode_tokens_per_gpu_s
        return p / (p + d)

    def to_dict(self) -> dict:
        return {
            "prefill": self.prefill.label,
            "decode": self.decode.label,
            "n_prefill": self.n_prefill,
            "n_decode": self.n_decode,
            "prefill_tokens_per_gpu_s": self.prefill_tokens_per_gpu_s,
            "decode_tokens_per_gpu_s": self.decode_tokens_per_gpu_s,
            "isl": self.isl,
            "osl": self.osl,
            "prefill_gpu_share": self.prefill_gpu_share,
        }


def _profile(
    model: ModelSpec,
    cluster: Cluster,
    gpu: str,
    isl: int,
    osl: int,
    slo: Slo,
    capm: CapacityModel,
    calibration: Calibration | None,
    tps: tuple[int, ...],
) -> tuple[list[tuple], list[tuple]]:
    """The profiler's sweep on one GPU type: ``(meets TTFT, prefill tokens/s/GPU, -tp, config)`` per TP and
    ``(meets ITL, decode tokens/s/GPU, -tp, config)`` per TP, best first."""
    configs, reasons = candidate_configs(model, cluster, tps=tps, pps=(1,), calibration=calibration)
    configs = [c for c in configs if c.gpu.name == gpu]
    if not configs:
        raise InfeasibleError(
            f"{model.name} fits no pp-1 shape on {gpu} in {cluster.name}: " + "; ".join(reasons)
        )
    prefill = []
    for c in configs:
        ttft = capm.unloaded(c, isl, 1)[0]
        prefill.append((ttft <= float(slo.ttft_target(isl)), isl / ttft / c.tp, -c.tp, c))
    decode = []
    for c in configs:
        timer = capm.timer(c)
        kv = timer.cost_model.kv_capacity_tokens
        best = (False, 0.0)
        for n in _CONCURRENCY.tolist():
            if n > c.max_num_seqs or n * (isl + osl) > kv:
                break
            itl = timer.decode_time(n, n * (isl + osl // 2))
            point = (itl <= slo.tpot_s, n / itl / c.tp)
            if point > best:
                best = point
        decode.append((*best, -c.tp, c))
    key = lambda x: x[:3]  # noqa: E731
    return sorted(prefill, key=key, reverse=True), sorted(decode, key=key, reverse=True)


def dynamo_sizing(
    model: ModelSpec,
    cluster: Cluster,
    isl: float,
    osl: float,
    slo: Slo,
    *,
    calibration: Calibration | None = None,
    tps: tuple[int, ...] = (1, 2, 4, 8),
    gpus: int | None = None,
    gpu: str | None = None,
) -> DynamoSizing:
    """Dynamo's choice for a workload of mean ``isl`` / ``osl`` tokens on ``gpus`` of GPU type ``gpu`` (default:
    every GPU of the cluster's first type). Raises ``InfeasibleError`` when the model fits no pp-1 shape or one P
    and one D do not fit."""
    gpu = gpu or cluster.gpu_types()[0].name
    total = gpus if gpus is not None else sum(n.num_gpus for n in cluster.nodes if n.gpu.name == gpu)
    capm = CapacityModel(model, slo, calibration)
    isl_i, osl_i = max(1, round(isl)), max(2, round(osl))
    prefill, decode = _profile(model, cluster, gpu, isl_i, osl_i, slo, capm, calibration, tps)
    # the best of each that fit the GPUs together (a cluster too small for the best pair takes the next best)
    pairs = [(p, d) for p in prefill for d in decode if p[3].tp + d[3].tp <= total]
    if not pairs:
        raise InfeasibleError(f"{total} GPUs cannot hold one prefill and one decode replica of {model.name}")
    (_, p_rate, _, p_cfg), (_, d_rate, _, d_cfg) = pairs[0]
    n_p, n_d = split_gpus(total, p_cfg.tp, d_cfg.tp, isl / (p_rate * p_cfg.tp), osl / (d_rate * d_cfg.tp))
    return DynamoSizing(
        replace(p_cfg, role="prefill"),
        replace(d_cfg, role="decode"),
        n_p,
        n_d,
        p_rate,
        d_rate,
        float(isl),
        float(osl),
    )


@dataclass(frozen=True, slots=True)
class DynamoLayout:
    """Dynamo on a cluster of several GPU types (equal GPUs with every other policy): one prefill and one decode
    pool whose workers may be of any type, ``groups`` the (config, count) per role and type, and the load (req/s
    at the mean lengths) the profiles say it sustains."""

    groups: tuple[tuple[ReplicaConfig, int], ...]
    rate_rps: float

    @property
    def label(self) -> str:
        return " + ".join(f"{n}{c.role[0].upper()} {c.gpu.name} tp{c.tp}" for c, n in self.groups if n)

    def to_dict(self) -> dict:
        return {"layout": self.label, "rate_rps": self.rate_rps}


def dynamo_layout(
    model: ModelSpec,
    cluster: Cluster,
    isl: float,
    osl: float,
    slo: Slo,
    *,
    calibration: Calibration | None = None,
    tps: tuple[int, ...] = (1, 2, 4, 8),
) -> DynamoLayout:
    """Dynamo's planner on every GPU type of ``cluster``: its profiler per type (the best prefill TP per GPU
    within TTFT, the best decode TP per GPU within ITL, as ``dynamo_sizing`` picks them), then each type's GPUs
    split between prefill and decode workers so that the whole prefill pool and the whole decode pool sustain
    the most load together (``min`` of the two phases' throughput over the mean ISL / OSL; of equals, the one
    using more GPUs): a type may hold both, prefill only or decode only. Raises ``InfeasibleError`` when no
    layout has a prefill and a decode worker."""
    capm = CapacityModel(model, slo, calibration)
    isl_i, osl_i = max(1, round(isl)), max(2, round(osl))
    # per GPU type: (GPUs, P TP, D TP, P rate, D rate), the rates in req/s at the mean lengths
    per_type, configs = [], []
    for g in cluster.gpu_types():
        total = sum(n.num_gpus for n in cluster.nodes if n.gpu.name == g.name)
        try:
            prefill, decode = _profile(model, cluster, g.name, isl_i, osl_i, slo, capm, calibration, tps)
        except InfeasibleError:
            continue
        p = next((x for x in prefill if x[3].tp <= total), None)
        d = next((x for x in decode if x[3].tp <= total), None)
        if p is None or d is None:
            continue
        per_type.append((total, p[3].tp, d[3].tp, p[3].tp * p[1] / isl, d[3].tp * d[1] / osl))
        configs.append((replace(p[3], role="prefill"), replace(d[3], role="decode")))
    split = best_type_split(per_type)
    if split is None:
        raise InfeasibleError(f"no prefill/decode layout of {model.name} fits {cluster.name}")
    rate = min(
        sum(n_p * t[3] for (n_p, _), t in zip(split, per_type, strict=True)),
        sum(n_d * t[4] for (_, n_d), t in zip(split, per_type, strict=True)),
    )
    groups = [(p_cfg, n_p) for (n_p, _), (p_cfg, _) in zip(split, configs, strict=True)]
    groups += [(d_cfg, n_d) for (_, n_d), (_, d_cfg) in zip(split, configs, strict=True)]
    return DynamoLayout(tuple((c, n) for c, n in groups if n), rate)


def dynamo_deployment(
    model: ModelSpec,
    cluster: Cluster,
    prompts: np.ndarray,
    outputs: np.ndarray,
    slo: Slo,
    *,
    calibration: Calibration | None = None,
) -> tuple[Deployment, DynamoSizing | DynamoLayout]:
    """The pool Dynamo's SLA planner would run for this trace's lengths (means), placed on the cluster: on one
    GPU type ``dynamo_sizing``, on several ``dynamo_layout`` (every GPU held, as every other policy holds)."""
    isl = float(np.mean(np.maximum(prompts, 1))) if len(prompts) else 1.0
    osl = float(np.mean(np.maximum(outputs, 1))) if len(outputs) else 2.0
    if len(cluster.gpu_types()) > 1:
        layout = dynamo_layout(model, cluster, isl, max(osl, 2.0), slo, calibration=calibration)
        return pool_deployment(model, cluster, layout.groups, note=f"dynamo: {layout.label}"), layout
    sizing = dynamo_sizing(model, cluster, isl, max(osl, 2.0), slo, calibration=calibration)
    dep = pool_deployment(
        model,
        cluster,
        [(sizing.prefill, sizing.n_prefill), (sizing.decode, sizing.n_decode)],
        note=f"dynamo: {sizing.n_prefill}P tp{sizing.prefill.tp} + {sizing.n_decode}D tp{sizing.decode.tp}",
    )
    if math.isnan(sizing.prefill_gpu_share):  # pragma: no cover - throughputs are positive
        raise InfeasibleError("dynamo sizing produced no throughput")
    return dep, sizing


def dynamo_policy(trace: Trace, model: ModelSpec, cluster: Cluster, slo: dict[str, float]) -> Deployment:
    """``oserve simulate --policy dynamo``: the pool for the whole trace's mean lengths and the run's SLO."""
    return dynamo_deployment(model, cluster, trace.prompt_tokens, trace.output_tokens, Slo.from_dict(slo))[0]
