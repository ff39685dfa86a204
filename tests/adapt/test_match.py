"""Matching: keep identical replicas (moving same-config ones when it keeps more), order GPUs to reuse bytes, keep
running names so the simulator keeps the same engines."""

from __future__ import annotations

import pytest

from factories import make_model, make_replica, make_trace
from oserve.adapt import plan_switch
from oserve.adapt.match import adopt_names, holdings, match_replicas, repin
from oserve.planner import place
from oserve.sim import ScheduledPolicy, simulate
from oserve.spec import Deployment, Replica, get_model, parse_cluster

LLAMA70 = get_model("llama-2-70b")
NODE = parse_cluster("1x8xH100")
TP2, TP4 = make_replica(tp=2), make_replica(tp=4)


def _dep(*replicas: tuple[object, tuple[int, ...], str], model: str = LLAMA70.name) -> Deployment:
    return Deployment(model, tuple(Replica(c, g, n) for c, g, n in replicas))


def test_identical_replicas_are_kept_whatever_their_names_and_gpu_order() -> None:
    cur = _dep((TP4, (0, 1, 2, 3), "a"), (TP4, (4, 5, 6, 7), "b"))
    tgt = _dep((TP4, (7, 6, 5, 4), "x"), (TP2, (0, 1), "y"), (TP2, (2, 3), "z"))
    matched, kept = match_replicas(cur, tgt, NODE)
    assert kept == {"x": "b"}
    assert matched.replicas[0].gpu_ids == (4, 5, 6, 7)  # the running order: the same engine


def test_rematch_moves_same_config_replicas_onto_running_ones() -> None:
    cur = _dep((TP2, (0, 1), "a"), (TP2, (2, 3), "b"), (TP4, (4, 5, 6, 7), "c"))
    tgt = Deployment(LLAMA70.name, place(NODE, [(TP4, 1), (TP2, 2)]))  # TP4 on 0-3: clashes with a and b
    assert tgt.replicas[0].gpu_ids == (0, 1, 2, 3)
    _, kept = match_replicas(cur, tgt, NODE, rematch=False)
    assert kept == {}
    plan = plan_switch(cur, tgt, LLAMA70, NODE)
    assert sorted(plan.kept) == ["a", "b", "c"] and plan.duration_s == 0 and plan.transfers == ()
    assert plan_switch(cur, tgt, LLAMA70, NODE, rematch=False).restarts == 3


def test_rematch_gives_up_extra_keeps_that_would_not_place() -> None:
    # keeping the TP2 on GPUs 0-1 would leave node 0 no room for the target's TP4
    cluster = parse_cluster("1x4xH100+1x2xH100")
    cur = _dep((TP2, (0, 1), "a"))
    tgt = _dep((TP4, (0, 1, 2, 3), "x"), (TP2, (4, 5), "y"))
    matched, kept = match_replicas(cur, tgt, cluster)
    assert kept == {} and matched == tgt


def test_repin_orders_ranks_to_reuse_resident_slices() -> None:
    cur = _dep((make_replica(tp=8), tuple(range(8)), "r0"))
    tgt = _dep((TP4, (0, 1, 2, 3), "a"), (TP4, (4, 5, 6, 7), "b"))
    held = holdings(LLAMA70, cur)
    pinned = repin(tgt, LLAMA70, held)
    # TP4 rank 0 needs TP8 ranks 0-1, rank 1 ranks 2-3: GPUs 0 and 2 (or 1 and 3) keep a slice each
    a = pinned.replicas[0].gpu_ids
    assert a[0] in (0, 1) and a[1] in (2, 3)
    assert repin(cur, LLAMA70, held) == cur  # nothing to gain: the given order stays


def test_repin_keeps_a_pipeline_stage_on_the_gpus_holding_its_layers() -> None:
    pp = make_replica(tp=2, pp=2)
    cur = _dep((pp, (0, 1, 2, 3), "r0"))
    swapped = _dep((pp, (2, 3, 0, 1), "r0"))
    assert repin(swapped, LLAMA70, holdings(LLAMA70, cur)) == cur


def test_adopt_names_frees_names_for_started_replicas() -> None:
    tgt = _dep((TP4, (0, 1, 2, 3), "r1"), (TP4, (4, 5, 6, 7), "r0"))
    weights = {"t": {"r0": 0.25, "r1": 0.75}}
    tgt = Deployment(tgt.model, tgt.replicas, weights)
    renamed, names = adopt_names(tgt, {"r1": "r0"})  # target r1 is the running r0
    assert names == {"r1": "r0", "r0": "r1"}
    assert [r.name for r in renamed.replicas] == ["r0", "r1"]
    assert renamed.weights == {"t": {"r1": 0.25, "r0": 0.75}}


def test_the_plan_drives_the_simulator() -> None:
    model, cluster = make_model(), NODE
    tp1 = make_replica()
    cur = _dep((tp1, (0,), "r0"), (tp1, (1,), "r1"), model=model.name)
    tgt = _dep((tp1, (0,), "keep"), (make_replica(tp=2), (1, 2), "wide"), model=model.name)
    plan = plan_switch(cur, tgt, model, cluster, restart_s=2.0, drain_s=1.0)
    assert plan.kept == ("r0",) and plan.stopped == ("r1",) and [s.name for s in plan.started] == ["wide"]
    trace = make_trace(300, rate_rps=50.0, seed=3, prompt_mean_tokens=200, output_mean_tokens=30)
    at = float(trace.arrival_s[100])
    res = simulate(
        trace, cur, model, cluster, router="least-tokens", policy=ScheduledPolicy([(at, *_args(plan))])
    )
    assert res.switches[0]["kept"] == ["r0"] and res.switches[0]["started"] == ["wide"]
    assert res.summary["completed"] == len(trace)
    reps = res.replicas.set_index("replica")
    delay = plan.started[0].ready_s - plan.started[0].release_s
    assert reps.loc["wide", "ready_s"] == pytest.approx(reps.loc["r1", "release_s"] + delay)


def _args(plan):
    switch = plan.to_switch()
    return switch.deployment, switch.schedule
