"""OServe's own P/D pool candidates on a cluster of two GPU types hold every GPU of both types (each type's GPUs
split between the pools, as ``dynamo_layout`` splits them); on one GPU type they are the single-type sizing."""

from __future__ import annotations

import numpy as np
import pytest

from oserve.adapt.scenarios import build_scenario
from oserve.planner.capacity import CapacityModel
from oserve.planner.disagg import best_type_split, pool_candidates, pool_deployment, split_gpus
from oserve.planner.disagg_plan import pool_options
from oserve.planner.slo import Slo
from oserve.planner.validate import _poisson_trace
from oserve.sim import simulate
from oserve.spec import get_model, parse_cluster

MODEL = get_model("llama-3.1-8b")
MIXED = parse_cluster("1x4xH100+1x4xA100-80GB")
SLO = Slo(2.0, 0.05)


def _mix(isl: int, osl: int, n: int = 200, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(isl // 2, isl * 2, n), rng.integers(max(2, osl // 2), osl * 2, n)


@pytest.mark.parametrize(("isl", "osl"), [(1500, 150), (300, 600)])
def test_mixed_pool_candidates_hold_every_gpu(isl, osl) -> None:
    prompts, outputs = _mix(isl, osl)
    capm = CapacityModel(MODEL, SLO)
    shapes = pool_candidates(MODEL, MIXED, prompts, outputs, capm)
    assert shapes
    best = shapes[0]
    dep = pool_deployment(MODEL, MIXED, best.layout)
    assert {g for r in dep.replicas for g in r.gpu_ids} == set(range(MIXED.num_gpus))
    assert {r.config.gpu.name for r in dep.replicas} == {g.name for g in MIXED.gpu_types()}
    for r in dep.replicas:  # each replica on GPUs of its own type
        assert {MIXED.gpu_of(g).name for g in r.gpu_ids} == {r.config.gpu.name}
    # on every GPU it models at least the pool on the first type's GPUs alone (what it was before)
    first = pool_candidates(MODEL, MIXED, prompts, outputs, capm, gpus=4)[0]
    assert best.rate_rps > first.rate_rps
    assert [s.rate_rps for s in shapes] == sorted((s.rate_rps for s in shapes), reverse=True)
    trace = _poisson_trace(prompts, outputs, 4.0, 120, 1)
    res = simulate(trace, dep, MODEL, MIXED, router="allowed-least-load")
    assert res.summary["completed"] == 120


def test_mixed_pool_options_hold_every_gpu() -> None:
    prompts, outputs = _mix(1500, 150)
    trace = _poisson_trace(prompts, outputs, 6.0, 300, 2)
    options = [o for o in pool_options(trace, MODEL, MIXED, SLO) if o.kind == "pool"]
    assert options
    for opt in options:
        assert opt.deployment.disaggregated
        assert opt.deployment.num_gpus == MIXED.num_gpus


@pytest.mark.parametrize(
    ("gpus", "tps", "rates"),
    [(8, (1, 1), (1.0, 3.0)), (8, (1, 1), (3.0, 1.0)), (8, (4, 2), (1.0, 1.0)), (16, (4, 4), (3.0, 1.0))],
)
def test_the_shared_split_on_one_type_is_split_gpus(gpus, tps, rates) -> None:
    ((n_p, n_d),) = best_type_split([(gpus, *tps, *rates)])
    assert (n_p, n_d) == split_gpus(gpus, *tps, 1 / rates[0], 1 / rates[1])


def test_one_gpu_type_keeps_the_single_type_pools() -> None:
    one = parse_cluster("1x8xH100")
    prompts, outputs = _mix(1500, 150)
    shapes = pool_candidates(MODEL, one, prompts, outputs, CapacityModel(MODEL, SLO))
    assert shapes and all(not s.groups for s in shapes)
    for s in shapes:  # sized by split_gpus on the phases' capacities, as before
        assert (s.n_prefill, s.n_decode) == split_gpus(
            8, s.prefill.tp, s.decode.tp, 1 / s.mu_prefill, 1 / s.mu_decode
        )
        assert s.layout == ((s.prefill, s.n_prefill), (s.decode, s.n_decode))


def test_mixed_hybrid_holds_every_gpu_and_sends_each_type_to_one_side(shared_traces) -> None:
    trace = build_scenario("code", shared_traces, MODEL, MIXED, SLO, load=0.9, minutes=4)
    hybrids = [o for o in pool_options(trace, MODEL, MIXED, SLO) if o.kind == "hybrid"]
    assert len(hybrids) == 1
    dep = hybrids[0].deployment
    assert {g for r in dep.replicas for g in r.gpu_ids} == set(range(MIXED.num_gpus))
    pool_types = {r.config.gpu.name for r in dep.replicas if r.config.role != "aggregated"}
    agg_types = {r.config.gpu.name for r in dep.replicas if r.config.role == "aggregated"}
    assert len(pool_types) == 1 and agg_types and not pool_types & agg_types  # the pool on one type
    role = {r.name: r.config.role for r in dep.replicas}
    sides = {name: {role[r] for r in w} for name, w in dep.weights.items()}
    assert sides and all(len(s) == 1 for s in sides.values())
    assert {r for s in sides.values() for r in s} == {"prefill", "aggregated"}
