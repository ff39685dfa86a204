"""Llumnix-style migration in the simulator: nothing lost or duplicated, queues evened out, deterministic, the
KV copy charged, and the same records from the chained and the reference loop."""

from __future__ import annotations

from dataclasses import replace
from functools import partial

import numpy as np
import pandas as pd
import pytest

from factories import make_model, make_replica
from oserve.perf import Calibration, CostModel, StackFactors, builtin_calibration
from oserve.routing import Llumnix
from oserve.sim import cluster as sim_cluster
from oserve.sim import simulate
from oserve.spec import Deployment, get_gpu, get_model, parse_cluster
from oserve.trace import Trace

CLUSTER = parse_cluster("1x8xH100")
MODEL = get_model("Llama-2-70b-hf")
SMALL_KV = make_replica(tp=4, gpu_memory_utilization=0.47)  # a KV cache of a few thousand tokens


def _skewed(n: int = 60, seed: int = 5) -> Trace:
    """Every other request is long: round-robin over two replicas puts all the long ones on one."""
    rng = np.random.default_rng(seed)
    out = np.where(np.arange(n) % 2 == 0, 600, 20)
    return Trace.from_arrays(np.sort(rng.uniform(0, 10, n)), rng.integers(200, 700, n), out)


def _stepped() -> Calibration:
    """Today's vLLM with a 1.5 ms floor per step: the tiny test model's kernels alone take microseconds, so
    without it nothing would queue."""
    base = builtin_calibration()
    gpu = get_gpu("h100")
    return base.with_gpu(
        gpu.name, replace(base.for_gpu(gpu), stack=StackFactors(iteration_overhead_s=0.0015))
    )


def _run(trace: Trace, router, replica=SMALL_KV, model=MODEL, capture: list | None = None, calibration=None):
    dep = Deployment.homogeneous(model.name, CLUSTER, replica, 2)
    if capture is None:
        return simulate(trace, dep, model, CLUSTER, router=router, calibration=calibration)
    build = sim_cluster.build_result

    def keep(sim, slo):
        capture.append(sim)
        return build(sim, slo)

    with pytest.MonkeyPatch.context() as m:
        m.setattr(sim_cluster, "build_result", keep)
        return simulate(trace, dep, model, CLUSTER, router=router)


FAST = partial(Llumnix, interval_s=0.25)
SLOW_LINK = partial(Llumnix, interval_s=0.25, link_gb_per_s=0.5)


@pytest.mark.parametrize("router", [FAST, SLOW_LINK])
def test_migration_conserves_requests_and_tokens(router) -> None:
    trace = _skewed()
    sims: list = []
    res = _run(trace, router, capture=sims)
    sim, s, rec = sims[0], res.summary, res.records
    assert s["migrations_running"] > 0 and s["migrations"] > s["migrations_running"]  # waiting ones too
    assert sim.completed == len(trace) == s["completed"] and s["dropped"] == 0  # each finished once
    assert sim.req.generated == trace.output_tokens.tolist()  # every output token sampled, none twice
    assert not sim.moving and not sim.copying and not sim.leaving
    assert (rec["first_token_s"] >= rec["arrival_s"]).all() and (rec["finish_s"] > rec["first_token_s"]).all()
    running_moves = res.migrations["request_id"].value_counts()
    assert (rec.loc[running_moves.index, "migrations"] >= running_moves).all()
    assert rec["migrations"].sum() == s["migrations"]
    assert all(e.free_blocks == e.total_blocks and e.waiting_tokens == 0 for e in sim.engines)


def test_migration_evens_out_queueing_against_round_robin() -> None:
    """Two replicas of at most 8 sequences; every other request is long. Round-robin queues the long ones behind
    each other on one replica; Llumnix dispatches to the freest and moves waiting requests to the other."""
    n = 600
    rng = np.random.default_rng(0)
    trace = Trace.from_arrays(
        np.cumsum(rng.exponential(1 / 50, n)), np.full(n, 200), np.where(np.arange(n) % 2 == 0, 400, 10)
    )
    replica = make_replica(max_num_seqs=8)
    rr = _run(trace, "round-robin", replica, make_model(), calibration=_stepped()).summary
    llumnix = _run(trace, FAST, replica, make_model(), calibration=_stepped()).summary
    assert llumnix["migrations"] > 0
    assert llumnix["ttft_p99"] < 0.3 * rr["ttft_p99"] and llumnix["ttft_mean"] < 0.3 * rr["ttft_mean"]
    assert llumnix["completed"] == rr["completed"] == n


def test_migration_lowers_the_tail_on_a_small_kv_cache() -> None:
    trace = _skewed()
    still = _run(trace, partial(Llumnix, interval_s=1e9)).summary  # dispatch only
    moving = _run(trace, FAST).summary
    assert still["migrations"] == 0 and moving["migrations"] > 0
    # (a moved request can be preempted again at its destination: a few more preemptions, not many)
    assert moving["ttft_p99"] < still["ttft_p99"] and moving["preemptions"] <= 1.1 * still["preemptions"]


def test_same_seed_same_records_and_migrations() -> None:
    trace = _skewed(seed=9)
    a, b = _run(trace, SLOW_LINK), _run(trace, SLOW_LINK)
    pd.testing.assert_frame_equal(a.records, b.records)
    pd.testing.assert_frame_equal(a.migrations, b.migrations)
    assert a.summary == b.summary


def test_kv_copy_time_is_charged() -> None:
    """The bulk copy takes handshake + KV bytes / link bandwidth (decoding goes on at the source meanwhile); the
    request stops at the source's next step boundary, then the tokens decoded during the copy follow."""
    res = _run(_skewed(), SLOW_LINK)
    moved = res.migrations[res.migrations["outcome"] == "moved"]
    assert len(moved)
    bytes_per_token = MODEL.kv_bytes_per_token
    copy_s = 0.01 + moved["kv_tokens"] * bytes_per_token / 0.5e9
    step_s = 0.2  # longer than any step of these batches
    assert (moved["stop_s"] >= moved["start_s"] + copy_s - 1e-9).all()
    assert (moved["stop_s"] < moved["start_s"] + copy_s + step_s).all()
    # tokens decoded during the copy, at one per step, follow in the downtime
    downtime_tokens = (moved["done_s"] - moved["stop_s"]) * 0.5e9 / bytes_per_token
    assert (downtime_tokens >= 1 - 1e-6).all()
    assert (np.abs(downtime_tokens - np.round(downtime_tokens)) < 1e-6).all()
    fast = _run(_skewed(), partial(Llumnix, interval_s=0.25, link_gb_per_s=1e4)).migrations
    fast = fast[fast["outcome"] == "moved"]
    assert (fast["done_s"] - fast["start_s"]).max() < (moved["done_s"] - moved["start_s"]).min()


def test_link_bandwidth_comes_from_the_cluster_spec() -> None:
    """Without ``link_gb_per_s``: two TP4 replicas on one H100 node copy over 4 NVLink ports in parallel."""
    res = _run(_skewed(), FAST)
    m = res.migrations[res.migrations["outcome"] == "moved"].iloc[0]
    nvlink = CLUSTER.nodes[0].intra_gb_per_s * 1e9 * 4
    bulk_s = 0.01 + m["kv_tokens"] * MODEL.kv_bytes_per_token / nvlink
    assert m["stop_s"] >= m["start_s"] + bulk_s - 1e-12
    assert CostModel(MODEL, SMALL_KV).kv_capacity_tokens < 9000


def test_chained_runs_match_the_reference_loop_with_migrations(monkeypatch) -> None:
    trace = _skewed()
    chained = _run(trace, SLOW_LINK)
    monkeypatch.setattr(sim_cluster._Sim, "chain_runs", False)
    reference = _run(trace, SLOW_LINK)
    pd.testing.assert_frame_equal(chained.records, reference.records, check_exact=True)
    pd.testing.assert_frame_equal(chained.migrations, reference.migrations, check_exact=True)
    assert chained.summary["migrations_running"] > 0
