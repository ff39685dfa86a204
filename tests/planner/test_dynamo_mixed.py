"""The dynamo baseline on a cluster of two GPU types holds every GPU (equal GPUs with every other policy): its
profiler per GPU type, then each type's GPUs split between the prefill and the decode pool so that the two
serve the most load together by those profiles; on one GPU type it is ``dynamo_sizing``'s pool, as before."""

from __future__ import annotations

import numpy as np
import pytest

from oserve.planner.dynamo import dynamo_deployment, dynamo_layout, dynamo_sizing
from oserve.planner.slo import Slo
from oserve.planner.validate import _poisson_trace
from oserve.sim import simulate
from oserve.spec import get_model, parse_cluster

MODEL = get_model("llama-3.1-8b")
MIXED = parse_cluster("1x4xH100+1x4xA100-80GB")
SLO = Slo(2.0, 0.05)


@pytest.mark.parametrize(("isl", "osl"), [(1000, 300), (16000, 100), (200, 1000)])
def test_mixed_dynamo_holds_every_gpu_of_both_types(isl, osl) -> None:
    prompts, outputs = np.full(48, isl), np.full(48, osl)
    dep, layout = dynamo_deployment(MODEL, MIXED, prompts, outputs, SLO)
    assert dep.disaggregated
    held = {g for r in dep.replicas for g in r.gpu_ids}
    assert held == set(range(MIXED.num_gpus))  # every GPU, each once
    assert {r.config.gpu.name for r in dep.replicas} == {g.name for g in MIXED.gpu_types()}
    for r in dep.replicas:  # each replica on GPUs of its own type
        assert {MIXED.gpu_of(g).name for g in r.gpu_ids} == {r.config.gpu.name}
    assert layout.rate_rps > 0
    trace = _poisson_trace(prompts, outputs, 4.0, 120, 1)
    res = simulate(trace, dep, MODEL, MIXED, router="least-tokens")
    assert res.summary["completed"] == 120


def test_a_prefill_heavy_load_gets_more_prefill_gpus_on_the_mixed_cluster() -> None:
    heavy_p = dynamo_layout(MODEL, MIXED, 6000, 20, SLO)
    heavy_d = dynamo_layout(MODEL, MIXED, 200, 1000, SLO)

    def gpus(layout, role):
        return sum(n * c.tp for c, n in layout.groups if c.role == role)

    assert gpus(heavy_p, "prefill") >= gpus(heavy_p, "decode")  # its decode worker is one A100 TP4 (KV room)
    assert gpus(heavy_d, "decode") > gpus(heavy_d, "prefill")
    assert gpus(heavy_p, "prefill") > gpus(heavy_d, "prefill")


def test_one_gpu_type_is_the_single_pool_sizing() -> None:
    one = parse_cluster("1x8xH100")
    dep, sizing = dynamo_deployment(MODEL, one, np.full(16, 1000), np.full(16, 100), SLO)
    same = dynamo_sizing(MODEL, one, 1000, 100, SLO)
    assert sizing == same
    assert dep.num_gpus == sizing.n_prefill * sizing.prefill.tp + sizing.n_decode * sizing.decode.tp
