"""P/D pools in the planner: GPU split, phase capacities against the simulator, placement, and the dynamo baseline."""

from __future__ import annotations

import numpy as np
import pytest

from oserve.errors import InfeasibleError
from oserve.planner.capacity import CapacityModel
from oserve.planner.disagg import (
    decode_capacity,
    pool_candidates,
    pool_deployment,
    prefill_capacity,
    split_gpus,
)
from oserve.planner.dynamo import dynamo_deployment, dynamo_sizing
from oserve.planner.slo import Slo
from oserve.planner.validate import _poisson_trace
from oserve.sim import simulate
from oserve.spec import ReplicaConfig, get_gpu, get_model, parse_cluster

MODEL = get_model("llama-3.1-8b")
CLUSTER = parse_cluster("1x8xH100")
H100 = get_gpu("H100")


@pytest.mark.parametrize(
    ("gpus", "tps", "demand", "expected"),
    [
        (8, (1, 1), (3.0, 1.0), (6, 2)),  # 6/3 = 2/1: both phases at the same scale
        (8, (1, 1), (1.0, 3.0), (2, 6)),
        (8, (2, 2), (1.0, 1.0), (2, 2)),
        (8, (4, 2), (1.0, 1.0), (1, 2)),  # 4 + 2*2: every GPU used
        (16, (4, 4), (1.0, 3.0), (1, 3)),
    ],
)
def test_split_gpus(gpus, tps, demand, expected):
    assert split_gpus(gpus, *tps, *demand) == expected


def test_split_gpus_needs_one_of_each():
    with pytest.raises(InfeasibleError):
        split_gpus(8, 4, 8, 1.0, 1.0)


def test_phase_capacities_move_with_their_own_target():
    prompts = np.full(50, 2000)
    outputs = np.full(50, 200)
    p1 = ReplicaConfig(H100, role="prefill")
    d1 = ReplicaConfig(H100, role="decode")
    loose = CapacityModel(MODEL, Slo(4.0, 0.1))
    tight_ttft = CapacityModel(MODEL, Slo(0.5, 0.1))
    tight_tpot = CapacityModel(MODEL, Slo(4.0, 0.012))
    assert prefill_capacity(tight_ttft, p1, prompts).rate_rps < prefill_capacity(loose, p1, prompts).rate_rps
    assert (
        decode_capacity(tight_tpot, d1, prompts, outputs).rate_rps
        < decode_capacity(loose, d1, prompts, outputs).rate_rps
    )
    # the decode side is not affected by the TTFT target, nor the prefill side by the TPOT target
    assert decode_capacity(tight_ttft, d1, prompts, outputs) == decode_capacity(loose, d1, prompts, outputs)
    assert prefill_capacity(tight_tpot, p1, prompts) == prefill_capacity(loose, p1, prompts)
    cap = decode_capacity(tight_tpot, d1, prompts, outputs)
    assert cap.limit == "tpot" and cap.step_s <= 0.012
    assert cap.rate_rps == pytest.approx(
        cap.batch / (199 * cap.step_s)
    )  # Little's law, 199 decode steps each


def test_pool_capacity_against_the_simulator():
    slo = Slo(2.0, 0.03)
    prompts = np.full(64, 1500)
    outputs = np.full(64, 150)
    best = pool_candidates(MODEL, CLUSTER, prompts, outputs, CapacityModel(MODEL, slo))[0]
    dep = pool_deployment(MODEL, CLUSTER, [(best.prefill, best.n_prefill), (best.decode, best.n_decode)])
    att = {}
    for scale in (0.6, 2.0):
        trace = _poisson_trace(prompts, outputs, scale * best.rate_rps, 1500, 0)
        res = simulate(trace, dep, MODEL, CLUSTER, router="least-tokens", slo=slo.to_dict())
        assert res.summary["completed"] == len(trace)
        att[scale] = res.summary["slo_attainment"]
    assert att[0.6] >= 0.9 > att[2.0]


def test_pool_deployment_places_both_roles():
    p = ReplicaConfig(H100, tp=2, role="prefill")
    d = ReplicaConfig(H100, tp=1, role="decode")
    dep = pool_deployment(MODEL, CLUSTER, [(p, 2), (d, 4)])
    dep.validate(CLUSTER)
    assert [r.name for r in dep.replicas] == ["p0", "p1", "d0", "d1", "d2", "d3"]
    assert [r.config.role for r in dep.replicas] == ["prefill"] * 2 + ["decode"] * 4
    assert dep.num_gpus == 8


def _gpus(sizing):
    return sizing.n_prefill * sizing.prefill.tp, sizing.n_decode * sizing.decode.tp


def test_dynamo_gives_a_prefill_heavy_load_more_prefill_gpus():
    slo = Slo(2.0, 0.05)
    two = parse_cluster("2x8xH100")
    heavy_p = dynamo_sizing(MODEL, two, 6000, 20, slo)
    heavy_d = dynamo_sizing(MODEL, two, 200, 1000, slo)
    (pp, pd), (dp, dd) = _gpus(heavy_p), _gpus(heavy_d)
    assert pp > pd and dd > dp
    assert pp > dp
    assert pp + pd <= 16 and dp + dd <= 16
    assert heavy_p.prefill_gpu_share > 0.5 > heavy_d.prefill_gpu_share


def test_dynamo_takes_the_prefill_tp_within_ttft():
    capm = CapacityModel(MODEL, Slo(1.0, 0.05))
    tp1 = capm.unloaded(ReplicaConfig(H100), 16000, 1)[0]
    target = tp1 * 0.7  # TP 1 misses it: a wider prefill replica is taken
    sizing = dynamo_sizing(MODEL, CLUSTER, 16000, 100, Slo(target, 0.05))
    assert sizing.prefill.tp > 1
    assert capm.unloaded(sizing.prefill, 16000, 1)[0] <= target


def test_dynamo_deployment_runs_every_request():
    prompts = np.full(32, 1000)
    outputs = np.full(32, 100)
    dep, sizing = dynamo_deployment(MODEL, CLUSTER, prompts, outputs, Slo(2.0, 0.05))
    assert sizing.n_prefill * sizing.prefill.tp + sizing.n_decode * sizing.decode.tp == 8
    assert dep.num_gpus == 8 and dep.disaggregated
    trace = _poisson_trace(prompts, outputs, 20.0, 300, 1)
    res = simulate(trace, dep, MODEL, CLUSTER, router="least-tokens")
    assert res.summary["completed"] == 300


def test_pool_options_are_whole_cluster_pools_and_a_typed_hybrid():
    from oserve.planner.disagg_plan import pool_options
    from oserve.trace import Trace

    rng = np.random.default_rng(0)
    n = 400
    # two kinds: short prompts with long outputs (decode-heavy) and long prompts with short outputs
    kind = rng.random(n) < 0.5
    prompts = np.where(kind, 200, 6000)
    outputs = np.where(kind, 600, 8)
    trace = Trace.from_arrays(np.sort(rng.uniform(0, 20, n)), prompts, outputs, name="two-kinds")
    options = pool_options(trace, MODEL, CLUSTER, Slo(2.0, 0.02), top=2)
    assert [o.kind for o in options][:2] == ["pool", "pool"]
    for o in options:
        o.deployment.validate(CLUSTER)
        assert o.deployment.disaggregated and o.deployment.num_gpus <= 8
    hybrid = [o for o in options if o.kind == "hybrid"]
    if hybrid:  # each type goes to one side only
        dep = hybrid[0].deployment
        roles = {r.name: r.config.role for r in dep.replicas}
        for row in dep.weights.values():
            assert len({roles[name] for name in row}) == 1


def test_dynamo_is_a_simulate_policy():
    from oserve.adapt.registry import POLICIES, SimContext

    trace = _poisson_trace(np.full(16, 3000), np.full(16, 20), 10.0, 100, 0)
    ctx = SimContext(trace, MODEL, CLUSTER, None, None, {"ttft_s": 2.0, "tpot_s": 0.05}, lambda _m: None)
    run = POLICIES["dynamo"](ctx)
    assert run.deployment.disaggregated and run.router == "least-tokens"
    prefill = sum(r.config.num_gpus for r in run.deployment.replicas if r.config.role == "prefill")
    assert prefill > 8 - prefill  # 3000 prompt tokens to 20 output tokens: prefill-heavy
    assert "oserve-disagg" in POLICIES
