"""The switch planner: no-op, NVLink and NIC moves, bytes conservation, links never oversubscribed, restarts, errors."""

from __future__ import annotations

import json
from collections import defaultdict

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from factories import make_model, make_replica
from oserve.adapt import COLD_RESTART_S, SwitchPlan, naive_reload_plan, plan_switch
from oserve.adapt.shards import ShardRange, replica_shards
from oserve.errors import ConfigError, InfeasibleError, SpecError
from oserve.planner import place
from oserve.spec import Deployment, ModelSpec, Replica, get_model, parse_cluster

LLAMA70 = get_model("llama-2-70b")
NODE = parse_cluster("1x8xH100")
TWO = parse_cluster("2x8xH100")


def deployment(model: ModelSpec, cluster, shapes: list[tuple[int, int, int]]) -> Deployment:
    """``[(tp, pp, count), ...]`` placed as the planner places them."""
    return Deployment(model.name, place(cluster, [(make_replica(tp=tp, pp=pp), n) for tp, pp, n in shapes]))


def assert_exact_cover(pieces: list[ShardRange], need: tuple[ShardRange, ...], model: ModelSpec) -> None:
    """``pieces`` tile ``need``: each inside it, no two overlapping, and together as many bytes."""
    assert all(any(p.intersect(n) == p for n in need) for p in pieces)
    by_tensor: dict[str, list[ShardRange]] = defaultdict(list)
    for p in pieces:
        by_tensor[p.tensor].append(p)
    for group in by_tensor.values():
        for i, p in enumerate(group):
            assert all(p.intersect(q) is None for q in group[i + 1 :]), f"{p} arrives twice"
    assert sum(p.bytes(model) for p in pieces) == sum(n.bytes(model) for n in need)


def assert_consistent(plan: SwitchPlan, model: ModelSpec, cluster) -> None:
    """Every needed byte arrives exactly once; rates integrate to bytes; no link over its bandwidth; times ordered."""
    started = {s.name: s for s in plan.started}
    stopped = {g for r in plan.current.replicas if r.name in plan.stopped for g in r.gpu_ids}
    release = {g: plan.drain_s if g in stopped else 0.0 for s in plan.started for g in s.gpu_ids}
    by_dst: dict[int, list] = defaultdict(list)
    for t in plan.transfers:
        by_dst[t.dst_gpu].append(t)
        assert t.nbytes == sum(r.bytes(model) for r in t.ranges) > 0
        assert t.start_s >= release[t.dst_gpu] - 1e-12
        if t.link == "local":
            assert t.src_gpu == t.dst_gpu and t.start_s == t.end_s
            continue
        moved = sum((b - a) * rate for a, b, rate in t.segments)
        assert moved == pytest.approx(t.nbytes, rel=1e-6)  # times near 0.5 s carry ~1e-16 s of rounding
        assert t.segments[0][0] == t.start_s and t.segments[-1][1] == t.end_s
    for r in plan.target.replicas:
        if r.name not in started:
            continue
        for gpu, need in replica_shards(model, r).items():
            assert_exact_cover([p for t in by_dst.pop(gpu, []) for p in t.ranges], need, model)
        s = started[r.name]
        assert s.ready_s >= s.weights_ready_s >= s.release_s
    assert not by_dst, f"transfers into GPUs no started replica uses: {sorted(by_dst)}"
    events: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for t in plan.transfers:
        for res in t.resources:
            for a, b, rate in t.segments:
                events[res] += [(a, rate), (b, -rate)]
    for res, evs in events.items():
        level, cap = 0.0, plan.link_gb_per_s[res] * 1e9
        for _, delta in sorted(evs, key=lambda e: (e[0], e[1])):
            level += delta
            assert level <= cap * (1 + 1e-9), (
                f"{res} oversubscribed: {level / 1e9:.3f} GB/s > {cap / 1e9} GB/s"
            )
    assert plan.duration_s >= max([s.ready_s for s in plan.started], default=0.0)
    assert plan.capacity_lost_gpu_s >= 0


def test_no_op_switch_costs_nothing_and_keeps_everything() -> None:
    dep = deployment(LLAMA70, TWO, [(4, 1, 2), (2, 1, 4)])
    for plan in (plan_switch(dep, dep, LLAMA70, TWO), naive_reload_plan(dep, dep, LLAMA70, TWO)):
        assert plan.kept == tuple(r.name for r in dep.replicas)
        assert plan.stopped == () and plan.started == () and plan.transfers == ()
        assert plan.duration_s == 0 and plan.capacity_lost_gpu_s == 0 and plan.restarts == 0
        assert plan.target == dep


def test_tp8_to_two_tp4_moves_over_nvlink_and_beats_a_disk_reload() -> None:
    cur, tgt = deployment(LLAMA70, NODE, [(8, 1, 1)]), deployment(LLAMA70, NODE, [(4, 1, 2)])
    plan = plan_switch(cur, tgt, LLAMA70, NODE)
    naive = naive_reload_plan(cur, tgt, LLAMA70, NODE)
    assert_consistent(plan, LLAMA70, NODE)
    assert_consistent(naive, LLAMA70, NODE)
    links = plan.bytes_by_link()
    assert links["nvlink"] > 0.8 * plan.moved_bytes
    assert "network" not in links and "disk" not in links
    # a quarter of each TP4 replica is already in place once its ranks are ordered well
    assert links["local"] == pytest.approx(LLAMA70.weight_bytes / 2, rel=0.01)
    assert plan.transfer_s < 0.2 < 100 < naive.transfer_s
    assert naive.bytes_by_link() == {"disk": naive.moved_bytes}
    assert plan.duration_s == pytest.approx(plan.transfer_s + COLD_RESTART_S)
    assert plan.duration_s < naive.duration_s and plan.restarts == naive.restarts == 2
    assert plan.stopped == ("r0",) and plan.kept == ()
    assert plan.capacity_lost_gpu_s == pytest.approx(sum(8 / 2 * s.ready_s for s in plan.started))


def test_tp4_to_tp8_reuses_everything_in_place() -> None:
    cur, tgt = deployment(LLAMA70, NODE, [(2, 1, 4)]), deployment(LLAMA70, NODE, [(8, 1, 1)])
    plan = plan_switch(cur, tgt, LLAMA70, NODE, restart_s=0.0)
    assert plan.moved_bytes == 0 and plan.duration_s == 0
    # TP8 holds the norms on every rank: a little more than the model, all of it already in place
    assert (
        plan.bytes_by_link() == {"local": sum(s.needed_bytes for s in plan.started)}
        and plan.started[0].needed_bytes > LLAMA70.weight_bytes
    )


def test_cross_node_moves_use_the_nic() -> None:
    cur, tgt = deployment(LLAMA70, TWO, [(8, 1, 1)]), deployment(LLAMA70, TWO, [(8, 1, 2)])
    plan = plan_switch(cur, tgt, LLAMA70, TWO, host_cache=False)
    assert_consistent(plan, LLAMA70, TWO)
    assert plan.kept == ("r0",) and [s.gpu_ids for s in plan.started] == [tuple(range(8, 16))]
    assert plan.bytes_by_link()["network"] > 0.99 * LLAMA70.weight_bytes
    assert all(t.src_gpu in range(8) for t in plan.transfers if t.link == "network")
    # the node's 400 GB/s NIC is the bottleneck (8 GPUs x 64 GB/s PCIe would take 512)
    assert plan.transfer_s == pytest.approx(LLAMA70.weight_bytes / 400e9, rel=0.02)
    assert plan.capacity_lost_gpu_s == 0  # GPUs 8-15 served nothing before


def test_host_cache_adds_a_second_path_to_each_gpu() -> None:
    cur, tgt = deployment(LLAMA70, TWO, [(8, 1, 1)]), deployment(LLAMA70, TWO, [(8, 1, 2)])
    with_host = plan_switch(cur, tgt, LLAMA70, TWO)
    without = plan_switch(cur, tgt, LLAMA70, TWO, host_cache=False)
    assert with_host.bytes_by_link()["host"] > 0
    assert with_host.transfer_s < without.transfer_s


def test_restarts_are_counted_and_priced_per_replica() -> None:
    cur, tgt = deployment(LLAMA70, TWO, [(4, 1, 4)]), deployment(LLAMA70, TWO, [(4, 1, 2), (2, 1, 4)])
    plan = plan_switch(cur, tgt, LLAMA70, TWO, restart_s={"r2": 50.0, "r3": 0.1})
    assert_consistent(plan, LLAMA70, TWO)
    assert plan.restarts == 4 and len(plan.kept) == 2 and len(plan.stopped) == 2
    restarts = {s.name: s.restart_s for s in plan.started}
    assert restarts == {"r2": 50.0, "r3": 0.1, "r4": COLD_RESTART_S, "r5": COLD_RESTART_S}
    assert plan.ready_s("r2") == pytest.approx(plan.started[0].weights_ready_s + 50.0)
    assert plan.duration_s == max(s.ready_s for s in plan.started)
    assert all(plan.ready_s(k) == 0 for k in plan.kept)


def test_drain_delays_what_the_stopped_gpus_receive() -> None:
    cur = deployment(LLAMA70, NODE, [(4, 1, 1)])  # GPUs 0-3; 4-7 idle
    tgt = deployment(LLAMA70, NODE, [(2, 1, 4)])
    plan = plan_switch(cur, tgt, LLAMA70, NODE, drain_s=5.0, restart_s=1.0)
    assert_consistent(plan, LLAMA70, NODE)
    for t in plan.transfers:
        assert (t.start_s >= 5.0) if t.dst_gpu < 4 else (t.start_s < 5.0 or t.link == "local")
    by_gpus = {s.gpu_ids[0] // 2: s for s in plan.started}
    assert by_gpus[0].release_s == 5.0 and by_gpus[3].release_s == 0.0
    # GPUs 0-3 served before: out of service from the decision until their new replicas serve
    assert plan.capacity_lost_gpu_s == pytest.approx(2 * by_gpus[0].ready_s + 2 * by_gpus[1].ready_s)


def test_a_gpu_short_of_memory_sends_only_what_it_keeps() -> None:
    """TP4 -> 2 x TP2 on the same four GPUs: a TP2 GPU needs 69 GB; the one that keeps nothing of its old 34.5 GB
    would need 103.5 GB to hold both, so it frees its old shard instead of sending it."""
    cur = deployment(LLAMA70, NODE, [(4, 1, 2)])
    tgt = Deployment(
        LLAMA70.name,
        (Replica(make_replica(tp=2), (0, 1), "a"), Replica(make_replica(tp=2), (2, 3), "b"), cur.replicas[1]),
    )
    plan = plan_switch(cur, tgt, LLAMA70, NODE)
    assert_consistent(plan, LLAMA70, NODE)
    old = {g: rs for r in cur.replicas for g, rs in replica_shards(LLAMA70, r).items()}
    new = {g: rs for r in plan.target.replicas for g, rs in replica_shards(LLAMA70, r).items()}
    pressured = [
        g for g in range(4) if not any(a.intersect(b) for a in old[g] for b in new[g] if a.tensor == "mlp")
    ]
    assert len(pressured) == 2
    for t in plan.transfers:
        if t.link != "local" and t.src_gpu in pressured:
            raise AssertionError(f"GPU {t.src_gpu} sent {t.ranges} it does not keep")


def test_errors_are_clear() -> None:
    cur = deployment(LLAMA70, NODE, [(8, 1, 1)])
    other = Deployment("llama-2-7b", cur.replicas)
    with pytest.raises(ConfigError, match="serves 'llama-2-7b'"):
        plan_switch(cur, other, LLAMA70, NODE)
    with pytest.raises(ConfigError, match="planned for"):
        plan_switch(cur, cur, get_model("llama-2-13b"), NODE)
    with pytest.raises(SpecError, match="current deployment does not fit cluster"):
        plan_switch(deployment(LLAMA70, TWO, [(8, 1, 2)]), cur, LLAMA70, NODE)
    a100 = Deployment(LLAMA70.name, (Replica(make_replica("a100", tp=8), tuple(range(8)), "r0"),))
    with pytest.raises(SpecError, match=r"target deployment does not fit.*not a A100"):
        plan_switch(cur, a100, LLAMA70, NODE)
    with pytest.raises(ConfigError, match="largest shard"):
        plan_switch(cur, deployment(LLAMA70, NODE, [(1, 1, 1)]), LLAMA70, NODE)
    with pytest.raises(ConfigError, match="unknown target replicas"):
        plan_switch(cur, cur, LLAMA70, NODE, restart_s={"nope": 1.0})
    with pytest.raises(ConfigError, match="drain_s"):
        plan_switch(cur, cur, LLAMA70, NODE, drain_s=-1.0)
    small_host = parse_cluster({"nodes": [{"gpu": "h100", "count": 8, "host_memory_gib": 64}]})
    tgt = deployment(LLAMA70, small_host, [(4, 1, 2)])
    with pytest.raises(ConfigError, match="host memory"):
        naive_reload_plan(cur, tgt, LLAMA70, small_host, source="host")
    assert "no host copy" in plan_switch(cur, tgt, LLAMA70, small_host).notes[0]


def test_plan_serialises_and_reads() -> None:
    cur, tgt = deployment(LLAMA70, NODE, [(8, 1, 1)]), deployment(LLAMA70, NODE, [(4, 1, 2)])
    plan = plan_switch(cur, tgt, LLAMA70, NODE)
    data = json.loads(json.dumps(plan.to_dict()))
    assert data["duration_s"] == plan.duration_s and len(data["transfers"]) == len(plan.transfers)
    assert data["started"][0]["ready_s"] == plan.started[0].ready_s
    text = plan.describe()
    assert "nvlink" in text and "ready" in text and "stopped : r0" in text


TINY = make_model(
    num_layers=4,
    num_heads=8,
    num_kv_heads=2,
    head_dim=32,
    hidden_size=256,
    intermediate_size=96,
    vocab_size=64,
)
SHAPES = [(tp, pp) for tp in (1, 2, 4) for pp in (1, 2)]


def _random_deployment(data, cluster) -> Deployment:
    """A few replicas placed as the planner would, then GPUs shuffled inside each node (TP stays in a node)."""
    shapes = data.draw(st.lists(st.sampled_from(SHAPES), min_size=1, max_size=4))
    try:
        replicas = place(cluster, [(make_replica(tp=tp, pp=pp), 1) for tp, pp in shapes])
    except InfeasibleError:
        assume(False)
    mapping: dict[int, int] = {}
    for node in cluster.nodes:
        ids = cluster.node_gpu_ids(node.index)
        mapping.update(zip(ids, data.draw(st.permutations(ids)), strict=True))
    return Deployment(
        TINY.name, tuple(Replica(r.config, tuple(mapping[g] for g in r.gpu_ids), r.name) for r in replicas)
    )


# random shapes that do not fit the cluster are filtered out (assume): on 1x4xL40S most do, by design
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(
    data=st.data(),
    spelling=st.sampled_from(["1x8xH100", "2x4xH100", "1x4xL40S"]),
    host_cache=st.booleans(),
    drain_s=st.sampled_from([0.0, 0.5]),
    chunk_bytes=st.sampled_from([40_000, 150_000, 1 << 30]),
)
def test_random_switches_are_consistent(data, spelling, host_cache, drain_s, chunk_bytes) -> None:
    cluster = parse_cluster(spelling)
    cur, tgt = _random_deployment(data, cluster), _random_deployment(data, cluster)
    plan = plan_switch(
        cur, tgt, TINY, cluster, host_cache=host_cache, drain_s=drain_s, chunk_bytes=chunk_bytes
    )
    assert_consistent(plan, TINY, cluster)
    naive = naive_reload_plan(cur, tgt, TINY, cluster, drain_s=drain_s, chunk_bytes=chunk_bytes)
    assert_consistent(naive, TINY, cluster)
    assert set(plan.kept) == set(naive.kept) and plan.restarts == naive.restarts
    assert plan.transfer_s <= naive.transfer_s + 1e-9
    assert {t.link for t in naive.transfers} <= {"disk"}
    assert len(plan.kept) + len(plan.stopped) == len(cur.replicas)
    assert len(plan.kept) + plan.restarts == len(tgt.replicas)
