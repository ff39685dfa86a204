"""Disaggregated prefill/decode in the simulator: the KV link's time, FIFO per link, decode-side reservation,
records with both replicas, nothing lost, and mixed aggregated + pool routing."""

from __future__ import annotations

import math

import numpy as np
import pytest

from factories import make_model, make_trace
from oserve.errors import ConfigError, SpecError
from oserve.perf.calibration import builtin_calibration
from oserve.sim import ScheduledPolicy, simulate
from oserve.sim.disagg import _DisaggSim, kv_link, kv_transfer_bytes
from oserve.spec import Deployment, ReplicaConfig, get_gpu, parse_cluster
from oserve.spec.deployment import Replica
from oserve.trace import Trace
from oserve.trace.classify import TypeGrid

# two nodes of 4 H100s; round figures so the expectations are hand arithmetic: NVLink 400 GB/s per GPU,
# the node's NICs 200 GB/s in all (50 GB/s per GPU)
CLUSTER = parse_cluster(
    {
        "nodes": [
            {"gpu": "H100", "count": 4, "num_nodes": 2, "intra_gb_per_s": 400.0, "network_gb_per_s": 200.0}
        ]
    }
)
H100 = get_gpu("H100")
CALIB = builtin_calibration().for_gpu(H100)
MODEL = make_model()  # 2 layers, 2 KV heads of 64: 2 * 2 * 128 * 2 bytes = 1024 KV bytes per token at TP 1


def _pd(p_ids, d_ids, *, p_tp=1, d_tp=1, d_seqs=256, agg_ids=None):
    reps = [Replica(ReplicaConfig(H100, tp=p_tp, role="prefill"), tuple(p_ids), "p0")]
    reps.append(Replica(ReplicaConfig(H100, tp=d_tp, role="decode", max_num_seqs=d_seqs), tuple(d_ids), "d0"))
    if agg_ids is not None:
        reps.append(Replica(ReplicaConfig(H100, tp=1), tuple(agg_ids), "a0"))
    return Deployment(MODEL.name, tuple(reps))


def _trace(arrivals, prompts, outputs):
    return Trace.from_arrays(np.array(arrivals, float), np.array(prompts), np.array(outputs), name="t")


def test_kv_bytes_per_token_at_tp():
    p1 = ReplicaConfig(H100, tp=1, role="prefill")
    d2 = ReplicaConfig(H100, tp=2, role="decode")
    assert kv_transfer_bytes(MODEL, p1, d2, 1000) == 1000 * 1024  # the TP-1 side carries all heads
    p2 = ReplicaConfig(H100, tp=2, role="prefill")
    assert kv_transfer_bytes(MODEL, p2, d2, 1000) == 1000 * 512  # one KV head per GPU at TP 2


def test_transfer_time_nvlink_vs_network():
    dep = _pd((0,), (1,))
    link = kv_link(dep.replicas[0], dep.replicas[1], CLUSTER)
    assert link.kind == "nvlink" and link.bandwidth_gb_per_s == 400.0
    assert link.transfer_s(1_024_000) == pytest.approx(1_024_000 / 400e9 + CALIB.p2p_intra[0])
    far = _pd((0, 1), (4, 5), p_tp=2, d_tp=2)
    link = kv_link(far.replicas[0], far.replicas[1], CLUSTER)
    assert link.kind == "network" and link.bandwidth_gb_per_s == 2 * 50.0  # two GPUs' NIC shares
    assert link.transfer_s(1_024_000) == pytest.approx(1_024_000 / 100e9 + CALIB.p2p_inter[0])


# slow links (1 GB/s per GPU both ways) so a copy outlasts the next prefill step
SLOW = parse_cluster(
    {"nodes": [{"gpu": "H100", "count": 4, "num_nodes": 2, "intra_gb_per_s": 1.0, "network_gb_per_s": 4.0}]}
)


@pytest.mark.parametrize(("d_ids", "alpha"), [((1,), CALIB.p2p_intra[0]), ((4,), CALIB.p2p_inter[0])])
def test_simulated_transfers_are_fifo_on_one_link(d_ids, alpha):
    # two prompts prefilled one after the other: the second copy waits for the first on the link
    res = simulate(_trace([0.0, 0.0], [4000, 4000], [20, 20]), _pd((0,), d_ids), MODEL, SLOW)
    rec = res.records
    expected = alpha + 4000 * 1024 / 1e9
    assert rec["transfer_s"].tolist() == pytest.approx([expected, expected])
    t1, t2 = rec["first_token_s"].tolist()  # the first token comes from the prefill, before any copy
    assert t2 - t1 < expected
    assert rec["transfer_wait_s"].iloc[0] == 0.0
    assert t2 + rec["transfer_wait_s"].iloc[1] == pytest.approx(t1 + expected)  # starts when the first ends


def test_transfer_waits_for_a_decode_slot():
    # the decode replica runs one sequence: the second request's copy starts only when the first finishes
    res = simulate(_trace([0.0, 0.0], [1000, 1000], [50, 50]), _pd((0,), (1,), d_seqs=1), MODEL, CLUSTER)
    rec = res.records.sort_values("transfer_wait_s")
    first_finish = rec["finish_s"].iloc[0]
    second_start = rec["first_token_s"].iloc[1] + rec["transfer_wait_s"].iloc[1]
    assert second_start == pytest.approx(first_finish)
    assert res.summary["completed"] == 2


class _Probe(_DisaggSim):
    """Records the decode engine's free blocks when each copy lands (before it is adopted)."""

    seen: list[int]

    def landed_kv(self, rid: int) -> None:
        self.seen.append(self.engines[1].free_blocks)
        super().landed_kv(rid)


def test_decode_replica_reserves_kv_before_the_transfer():
    trace = _trace([0.0], [1000], [10])
    sim = _Probe(
        trace, _pd((0,), (1,)), MODEL, CLUSTER, TypeGrid.for_types(trace, 1), "weighted", None, 0, True
    )
    sim.seen = []
    total = sim.engines[1].total_blocks
    sim.run()
    assert sim.seen == [total - math.ceil(1000 / 16)]  # held during the copy: 63 blocks of 16 tokens
    assert sim.engines[1].free_blocks == total  # and freed when it finished
    assert sim.engines[0].free_blocks == sim.engines[0].total_blocks  # the prefill side unpinned


def test_records_carry_both_replicas_and_nothing_is_lost():
    dep = Deployment(
        MODEL.name,
        (
            Replica(ReplicaConfig(H100, tp=1, role="prefill"), (0,), "p0"),
            Replica(ReplicaConfig(H100, tp=1, role="prefill"), (1,), "p1"),
            Replica(ReplicaConfig(H100, tp=2, role="decode"), (2, 3), "d0"),
            Replica(ReplicaConfig(H100, tp=1, role="decode"), (4,), "d1"),
        ),
    )
    trace = make_trace(400, rate_rps=40.0, prompt_mean_tokens=800, output_mean_tokens=60)
    res = simulate(trace, dep, MODEL, CLUSTER, router="round-robin")
    rec = res.records
    s = res.summary
    assert s["completed"] + s["dropped"] + s["rejected"] == len(trace) and s["completed"] == len(trace)
    assert rec["finish_s"].notna().all()
    assert set(rec["prefill_replica"]) == {"p0", "p1"}
    multi = rec["output_tokens"] > 1
    assert set(rec.loc[multi, "decode_replica"]) == {"d0", "d1"}
    assert (rec.loc[~multi, "decode_replica"] == "").all()  # one token: done at the prefill, no copy
    assert (rec["finish_s"] >= rec["first_token_s"]).all()
    assert s["kv_transfers"] == int(multi.sum())
    assert set(res.replicas["role"]) == {"prefill", "decode"}


def test_types_go_to_aggregated_replicas_or_the_pool_by_weight():
    trace = make_trace(200, rate_rps=20.0, prompt_mean_tokens=800, output_mean_tokens=60)
    grid = TypeGrid.for_types(trace, 2)
    short, long_ = grid.names
    dep = Deployment(
        MODEL.name,
        _pd((0,), (1,), agg_ids=(2,)).replicas,
        weights={short: {"a0": 1.0}, long_: {"p0": 1.0}},
    )
    res = simulate(trace, dep, MODEL, CLUSTER, grid=grid)
    rec = res.records
    assert set(rec.loc[rec["type_name"] == short, "replica"]) == {"a0"}
    assert (rec.loc[rec["type_name"] == short, "decode_replica"] == "").all()
    assert set(rec.loc[rec["type_name"] == long_, "prefill_replica"]) == {"p0"}
    assert res.summary["completed"] + res.summary["rejected"] == len(trace)  # a prompt over 8192 is refused


def test_pool_needs_both_roles_and_a_static_policy():
    with pytest.raises(SpecError, match="both prefill and decode"):
        Deployment(MODEL.name, (Replica(ReplicaConfig(H100, role="prefill"), (0,), "p0"),))
    with pytest.raises(ConfigError, match="static"):
        simulate(_trace([0.0], [10], [2]), _pd((0,), (1,)), MODEL, CLUSTER, policy=ScheduledPolicy([]))


def test_pd_deployment_file_round_trips(tmp_path):
    dep = _pd((0, 1), (4, 5), p_tp=2, d_tp=2, agg_ids=(2,))
    for name in ("d.yaml", "d.json"):
        dep.save(tmp_path / name)
        back = Deployment.load(tmp_path / name)
        assert back == dep
        assert [r.config.role for r in back.replicas] == ["prefill", "decode", "aggregated"]
        assert back.disaggregated
    assert (
        "role"
        not in Deployment.homogeneous(MODEL.name, CLUSTER, ReplicaConfig(H100)).to_dict()["replicas"][0]
    )


def test_simulate_cli_runs_a_pd_deployment_file(tmp_path):
    import json

    from oserve.cli.main import main

    rng = np.random.default_rng(3)
    n = 200
    trace = Trace.from_arrays(
        np.sort(rng.uniform(0, 30, n)), rng.integers(50, 2000, n), rng.integers(2, 200, n)
    )
    trace.to_csv(tmp_path / "t.csv")
    dep = Deployment(
        "llama-3-8b",
        (
            Replica(ReplicaConfig(H100, tp=1, role="prefill"), (0,), "p0"),
            Replica(ReplicaConfig(H100, tp=2, role="decode"), (1, 2), "d0"),
        ),
    )
    dep.save(tmp_path / "pd.yaml")
    out = tmp_path / "s.json"
    args = ["simulate", "-t", str(tmp_path / "t.csv"), "-m", "llama-3-8b", "-c", "1x4xH100"]
    assert main([*args, "--deployment", str(tmp_path / "pd.yaml"), "--json", str(out)]) == 0
    summary = json.loads(out.read_text())["policies"]["static"]
    assert summary["disaggregated"] and summary["completed"] == n
    assert summary["kv_transfers"] == int((trace.output_tokens > 1).sum())
