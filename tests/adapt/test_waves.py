"""Matching a target deployment to the running one and ordering the switch into waves (no processes)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from oserve.adapt.switch import plan_switch
from oserve.adapt.waves import Wave, diff_deployments, plan_waves, routing_deployment, staged_switches
from oserve.sim import simulate
from oserve.sim.policy import Switch
from oserve.spec import Deployment, Replica, ReplicaConfig, get_gpu, get_model, parse_cluster
from oserve.trace import Trace, TypeGrid

H100 = get_gpu("H100")
CLUSTER = parse_cluster("1x4xH100")
MODEL = get_model("llama-3-8b")


def dep(*shapes: tuple[str, int, tuple[int, ...]], weights=None) -> Deployment:
    """``("r0", 1, (0,))`` -> a replica r0 of TP1 on GPU 0."""
    replicas = tuple(Replica(ReplicaConfig(H100, tp=tp), gpus, name) for name, tp, gpus in shapes)
    return Deployment(MODEL.name, replicas, weights or {})


TP1X4 = dep(("r0", 1, (0,)), ("r1", 1, (1,)), ("r2", 1, (2,)), ("r3", 1, (3,)))


@pytest.mark.parametrize("planner", [False, True], ids=["match", "switch-planner"])
@pytest.mark.parametrize(
    ("target", "kept", "started", "waves"),
    [
        # identical: nothing to do
        (TP1X4, ("r0", "r1", "r2", "r3"), (), []),
        # two TP1 merge into one TP2: half keeps serving while the other half switches
        (
            dep(("a", 2, (0, 1)), ("r2", 1, (2,)), ("r3", 1, (3,))),
            ("r2", "r3"),
            ("a",),
            [Wave(("r0", "r1"), ("a",))],
        ),
        # all four into two TP2: one wave per pair, never below half the GPUs
        (
            dep(("a", 2, (0, 1)), ("b", 2, (2, 3))),
            (),
            ("a", "b"),
            [Wave(("r0", "r1"), ("a",)), Wave(("r2", "r3"), ("b",))],
        ),
        # one TP4 needs every GPU: an unavoidable gap
        (dep(("big", 4, (0, 1, 2, 3))), (), ("big",), [Wave(("r0", "r1", "r2", "r3"), ("big",), gap=True)]),
        # shrinking: r3 just stops, after the target is routed
        (dep(("r0", 1, (0,)), ("r1", 1, (1,)), ("r2", 1, (2,))), ("r0", "r1", "r2"), (), [Wave(("r3",), ())]),
    ],
    ids=["same", "merge-two", "all-to-tp2", "tp4-gap", "shrink"],
)
def test_diff_and_waves(planner, target, kept, started, waves):
    kw = {"model": MODEL, "cluster": CLUSTER} if planner else {}
    tr = diff_deployments(TP1X4, target, **kw)
    assert set(tr.kept) == set(kept)
    assert set(tr.started) == set(started)
    assert set(tr.stopped) == {"r0", "r1", "r2", "r3"} - set(kept)
    got = plan_waves(tr, TP1X4)
    assert [(set(w.stop), set(w.start), w.gap) for w in got] == [
        (set(w.stop), set(w.start), w.gap) for w in waves
    ]
    assert (tr.estimate_s is not None) == planner


def test_started_replica_on_new_gpus_is_renamed_away_from_a_running_name():
    current = dep(("r0", 1, (0,)), ("r1", 1, (1,)))
    target = dep(("r1", 1, (1,)), ("r0", 2, (2, 3)), weights={"t": {"r0": 1.0, "r1": 1.0}})
    tr = diff_deployments(current, target)
    assert tr.kept == ("r1",)
    (new,) = tr.started
    assert new not in ("r0", "r1") and tr.renamed == {"r0": new}
    assert tr.target.weights == {"t": {new: 1.0, "r1": 1.0}}
    # the new replica starts on free GPUs first; r0 stops last
    assert plan_waves(tr, current) == [Wave((), (new,)), Wave(("r0",), ())]


def test_kept_replica_takes_its_running_name():
    current = dep(("r0", 1, (0,)), ("r1", 1, (1,)))
    target = dep(("x", 1, (1,)), ("y", 1, (0,)), weights={"t": {"x": 1.0}})
    tr = diff_deployments(current, target)
    assert set(tr.kept) == {"r0", "r1"} and not tr.started and not tr.stopped
    assert tr.target.weights == {"t": {"r1": 1.0}}


def test_routing_deployment_keeps_target_shares_among_replicas_up_else_old_ones():
    current = dep(("r0", 1, (0,)), ("r1", 1, (1,)), weights={"short": {"r0": 1.0}, "long": {"r1": 1.0}})
    target = dep(
        ("a", 2, (2, 3)), ("r1", 1, (1,)), weights={"short": {"a": 0.5, "r1": 0.5}, "long": {"a": 1.0}}
    )
    up = [current.replicas[1], target.replicas[0]]
    interim = routing_deployment(target, current, up)
    # short: target row over the replicas up; long: its target replica a is up
    assert interim.weights == {"short": {"a": 0.5, "r1": 0.5}, "long": {"a": 1.0}}
    interim = routing_deployment(target, current, [current.replicas[1]])
    # a is not up yet: short keeps r1's target share, long falls back to the old row (r1)
    assert interim.weights == {"short": {"r1": 0.5}, "long": {"r1": 1.0}}


def test_staged_switches_keep_half_the_cluster_serving_in_the_simulator():
    """4 x TP1 -> 2 x TP2, staged: two waves; through the switch, never more than half the GPUs are out."""
    trace = Trace.from_arrays(np.linspace(0.0, 120.0, 600), [500] * 600, [50] * 600)
    target = dep(("a", 2, (0, 1)), ("b", 2, (2, 3)))
    switch_plan = plan_switch(TP1X4, target, MODEL, CLUSTER, restart_s=5.0)
    switches = staged_switches(TP1X4, switch_plan, MODEL, CLUSTER)
    assert len(switches) == 2
    assert [sorted(r.name for r in s.deployment.replicas) for s in switches] == [
        ["a", "r2", "r3"],
        ["a", "b"],
    ]

    class Staged:
        def __init__(self):
            self.todo = list(switches)

        def next_decision(self, now):
            return 10.0 if now < 10.0 else (now + 1.0 if self.todo and now < 100 else None)

        def decide(self, now, view):
            if view.switching or not self.todo:
                return None
            return self.todo.pop(0)

    result = simulate(trace, TP1X4, MODEL, CLUSTER, router="least-tokens", policy=Staged())
    assert result.summary["switches"] == 2 and result.summary["completed"] == len(trace)
    reps = result.replicas.set_index("replica")
    # the second pair stops only once the first new replica serves
    assert reps.loc["r2", "release_s"] >= reps.loc["a", "ready_s"]
    assert reps.loc["b", "ready_s"] > reps.loc["a", "ready_s"]


def test_a_weights_only_switch_reroutes_without_stopping_anything():
    trace = Trace.from_arrays(np.linspace(0.0, 60.0, 300), [500] * 300, [20] * 300)
    grid = TypeGrid((), ())
    only_r0 = replace(TP1X4, weights={grid.names[0]: {"r0": 1.0}})

    class Reroute:
        def next_decision(self, now):
            return 30.0 if now < 30.0 else None

        def decide(self, now, view):
            return Switch(only_r0)

    result = simulate(trace, TP1X4, MODEL, CLUSTER, router="weighted", policy=Reroute(), grid=grid)
    assert result.summary["switches"] == 0 and result.summary["reroutes"] == 1
    late = result.records[result.records["arrival_s"] > 31.0]
    assert set(late["replica"]) == {"r0"}
    assert result.summary["completed"] == len(trace)
