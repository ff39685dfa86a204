"""The cluster simulator: queueing against theory, routers, switches, drops, determinism, the real trace."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from factories import make_model, make_replica, make_trace
from oserve.perf import BatchStats, CostModel
from oserve.routing import ROUTERS
from oserve.sim import ScheduledPolicy, SwitchSchedule, simulate
from oserve.spec import Deployment, Replica, get_model, parse_cluster
from oserve.trace import Trace, TypeGrid, load_trace

CLUSTER = parse_cluster("1x8xH100")


def _deployment(count: int = 2) -> Deployment:
    return Deployment.homogeneous("tiny", CLUSTER, make_replica(), count)


def _burst_trace(n: int = 400, seed: int = 1) -> Trace:
    return make_trace(n, rate_rps=200.0, seed=seed, prompt_mean_tokens=300, output_mean_tokens=60)


def test_queueing_at_low_load_matches_md1() -> None:
    """Identical one-token requests (one prefill each, chunking off) are an M/D/1 queue at low load."""
    model, replica = make_model(), make_replica()
    service = CostModel(model, replica).iteration_time(BatchStats.of(prefill=[(200, 0)]))
    rho = 0.3
    rng = np.random.default_rng(7)
    n = 20_000
    arrival = np.cumsum(rng.exponential(service / rho, n))
    trace = Trace.from_arrays(arrival, np.full(n, 200), np.full(n, 1))
    dep = Deployment.homogeneous("tiny", CLUSTER, replica, 1)
    res = simulate(trace, dep, model, CLUSTER, router="round-robin", chunked_prefill=False)
    e2e = (res.records["finish_s"] - res.records["arrival_s"]).mean()
    predicted = service + rho * service / (2 * (1 - rho))  # Pollaczek-Khinchine, deterministic service
    assert e2e == pytest.approx(predicted, rel=0.15)
    assert res.summary["utilisation"]["r0"] == pytest.approx(rho, rel=0.1)


@pytest.mark.parametrize("router", sorted(ROUTERS))
def test_every_router_serves_everything(router: str) -> None:
    trace = _burst_trace()
    grid = TypeGrid((300,), ())
    names = grid.names
    dep = Deployment("tiny", _deployment(3).replicas, {names[0]: {"r0": 1.0}, names[1]: {"r1": 1, "r2": 1}})
    res = simulate(trace, dep, make_model(), CLUSTER, router=router, grid=grid)
    rec = res.records
    assert res.summary["completed"] == len(trace) and res.summary["dropped"] == 0
    assert set(rec["replica"]) == {"r0", "r1", "r2"}
    if router == "weighted" or router == "jsq":
        assert set(rec.loc[rec["type"] == 0, "replica"]) == {"r0"}
        assert set(rec.loc[rec["type"] == 1, "replica"]) == {"r1", "r2"}
    if router == "round-robin":
        assert list(rec["replica"][:6]) == ["r0", "r1", "r2"] * 2


def test_request_over_max_model_len_is_rejected_with_a_record() -> None:
    model = get_model("Llama-2-70b-hf")
    replica = make_replica(tp=4, gpu_memory_utilization=0.47)
    cm = CostModel(model, replica)
    capacity, max_len = cm.kv_capacity_tokens, cm.memory.max_model_len
    assert 0 < capacity < 9000 and max_len == min(model.max_position_embeddings, capacity)
    # fits exactly; over the context by its prompt; over it by prompt + max output
    trace = Trace.from_arrays([0.0, 0.1, 0.2, 0.3], [100, 9000, 200, max_len - 10], [10, 10, max_len, 10])
    dep = Deployment.homogeneous("Llama-2-70b-hf", parse_cluster("1x8xH100"), replica, 1)
    res = simulate(trace, dep, model, router="round-robin")
    assert res.records["rejected"].tolist() == [False, True, True, False]
    assert res.records["finish_s"].isna().tolist() == [False, True, True, False]
    assert not res.records["dropped"].any()
    s = res.summary
    assert s["rejected"] == 2 and s["completed"] == 2 and s["unholdable"] == 2
    assert s["slo_attainment"] <= 0.5


def test_preemption_in_a_small_kv_replica_keeps_token_counts() -> None:
    model = get_model("Llama-2-70b-hf")
    replica = make_replica(tp=4, gpu_memory_utilization=0.47)
    n = 60
    trace = Trace.from_arrays(np.zeros(n), np.full(n, 500), np.full(n, 300))
    dep = Deployment.homogeneous("Llama-2-70b-hf", parse_cluster("1x8xH100"), replica, 1)
    res = simulate(trace, dep, model, router="round-robin")
    assert res.summary["preemptions"] > 0 and res.summary["completed"] == n
    tpot = (res.records["finish_s"] - res.records["first_token_s"]) / 299
    assert (tpot > 0).all()


@pytest.mark.parametrize("mode", ["drain", "requeue"])
def test_scheduled_switch_loses_nothing(mode: str) -> None:
    trace = _burst_trace(600)
    old = _deployment(2)
    cfg = make_replica()
    # keep r0; replace r1 (GPU 1) by two replicas, one on r1's GPU and one on a free GPU
    new = Deployment("tiny", (old.replicas[0], Replica(cfg, (1,), "n1"), Replica(cfg, (5,), "n2")))
    at = float(trace.arrival_s[300])
    sched = SwitchSchedule(mode=mode, start_delay_s=0.5, drain_s=5.0)
    res = simulate(
        trace, old, make_model(), CLUSTER, router="least-tokens", policy=ScheduledPolicy([(at, new, sched)])
    )
    rec = res.records
    assert res.summary["completed"] == len(trace) and res.summary["dropped"] == 0
    assert res.summary["switches"] == 1
    assert set(rec.loc[rec["arrival_s"] > at + 2.0, "replica"]) <= {"r0", "n1", "n2"}
    reps = res.replicas.set_index("replica")
    assert reps.loc["n2", "ready_s"] == pytest.approx(at + 0.5)
    assert reps.loc["n1", "ready_s"] >= reps.loc["r1", "release_s"] + 0.5 - 1e-12
    if mode == "requeue":
        assert rec["rerouted"].sum() > 0 and reps.loc["r1", "release_s"] < at + 1.0
    assert res.switches[0]["stopped"] == ["r1"] and res.switches[0]["kept"] == ["r0"]


def test_pipeline_parallel_replica_serves_everything() -> None:
    trace = _burst_trace(200)
    dep = Deployment.homogeneous("tiny", CLUSTER, make_replica(pp=2), 2)
    res = simulate(trace, dep, make_model(), CLUSTER, router="jsq")
    assert res.summary["completed"] == 200 and res.replicas["steps"].min() > 0


def test_same_inputs_same_records(tmp_path) -> None:
    trace = _burst_trace(500, seed=3)
    runs = [
        simulate(trace, _deployment(3), make_model(), CLUSTER, router="least-tokens", seed=5)
        for _ in range(2)
    ]
    pd.testing.assert_frame_equal(runs[0].records, runs[1].records)
    assert runs[0].summary == runs[1].summary
    path = runs[0].write_records(tmp_path / "r.parquet")
    pd.testing.assert_frame_equal(pd.read_parquet(path), runs[0].records)
    runs[0].write_records(tmp_path / "r.csv")
    runs[0].write_summary(tmp_path / "s.json")


def test_real_trace_slice(shared_traces) -> None:
    trace = load_trace(shared_traces / "azure_conv_2023.csv")
    model = get_model("Llama-2-70b-hf")
    cluster = parse_cluster("2x8xH100")
    dep = Deployment.homogeneous("Llama-2-70b-hf", cluster, make_replica(tp=4), 4)
    res = simulate(trace, dep, model, cluster, router="weighted", duration_s=300.0)
    s = res.summary
    # Llama-2's 4,096-token context: vLLM rejects the conversations longer than it (about 7% of them)
    window = trace.take(trace.arrival_s < 300.0)
    over = int(np.count_nonzero(window.prompt_tokens + window.output_tokens > model.max_position_embeddings))
    assert 50 < over < 0.15 * len(window)
    assert s["rejected"] == s["unholdable"] == over and s["dropped"] == 0
    assert s["completed"] == s["requests"] - over > 1000
    assert 0 < s["ttft_p50"] <= s["ttft_p99"] < 5 and 0.01 < s["tpot_p50"] < 0.1
    assert s["gpu_seconds"] == pytest.approx(16 * s["span_s"])
