"""The verify step replays a switch from the work in flight: a switch that looks good from an empty cluster but
loses with the real backlog is not made. A burst of the real Azure conversation trace (15x for a minute) leaves
eight TP1 replicas of Llama-3-8B holding ~200 requests; then the traffic falls to 4x, where two TP4 replicas
would serve it with a lower p99 E2E."""

from __future__ import annotations

import numpy as np
import pytest

from oserve.adapt.decide import Decision, DecisionConfig
from oserve.adapt.policy import AdaptivePolicy, OracleSource
from oserve.adapt.replay import ReplayInput, replay_switch
from oserve.adapt.switch import plan_switch
from oserve.adapt.waves import staged_switches
from oserve.planner import default_slo
from oserve.planner.placement import place
from oserve.sim import ClusterView, simulate
from oserve.sim.backlog import Backlog
from oserve.spec import Deployment, ReplicaConfig, RequestGrid, get_model, parse_cluster
from oserve.trace import Trace, TypeGrid, load_trace, scale_rate, window

MODEL, CLUSTER = get_model("llama-3-8b"), parse_cluster("1x8xH100")
SLO = default_slo(MODEL, CLUSTER)
NOW_S = 60.0
H100 = CLUSTER.gpu_types()[0]
EIGHT_TP1 = Deployment(MODEL.name, tuple(place(CLUSTER, [(ReplicaConfig(H100, tp=1), 8)])))
TWO_TP4 = Deployment(MODEL.name, tuple(place(CLUSTER, [(ReplicaConfig(H100, tp=4), 2)])))


class Capture:
    def __init__(self, at_s: float) -> None:
        self.at_s, self.view = at_s, None

    def next_decision(self, now: float) -> float | None:
        return self.at_s if now < self.at_s else None

    def decide(self, now: float, view: ClusterView):
        self.view = view


@pytest.fixture(scope="module")
def scene(shared_traces):
    conv = load_trace(shared_traces / "azure_conv_2023.csv")
    burst = scale_rate(window(conv, 0.0, NOW_S), 15.0, seed=1)
    after = scale_rate(window(conv, NOW_S, NOW_S + 120.0), 4.0)
    trace = Trace.from_arrays(
        np.concatenate([burst.arrival_s, after.arrival_s + NOW_S]),
        np.concatenate([burst.prompt_tokens, after.prompt_tokens]),
        np.concatenate([burst.output_tokens, after.output_tokens]),
        duration_s=NOW_S + 120.0,
    )
    capture = Capture(NOW_S)
    simulate(burst, EIGHT_TP1, MODEL, CLUSTER, router="allowed-least-work", policy=capture, slo=SLO.to_dict())
    plan = plan_switch(EIGHT_TP1, TWO_TP4, MODEL, CLUSTER)
    waves = tuple(staged_switches(EIGHT_TP1, plan, MODEL, CLUSTER))
    return trace, after, capture.view, plan, waves


def _replay(after, backlog, waves):
    x = ReplayInput(NOW_S, EIGHT_TP1, waves, backlog, after)
    return replay_switch(x, MODEL, CLUSTER, SLO, DecisionConfig(), router="allowed-least-work")


def test_a_switch_that_wins_from_an_empty_cluster_loses_with_the_backlog(scene) -> None:
    _, after, view, _, waves = scene
    assert len(view.backlog) > 100  # the burst's requests still running and queued
    empty = _replay(after, Backlog.empty(NOW_S), waves)
    assert empty.confirmed, empty.reason  # from nothing, the TP4s cut the p99 E2E and meet as many
    assert empty.switch.met >= empty.stay.met and empty.switch.e2e_p99_s < empty.stay.e2e_p99_s
    real = _replay(after, view.backlog, waves)
    assert not real.confirmed, real.reason
    assert real.backlog == len(view.backlog) and real.stay.requests == len(after) + len(view.backlog)
    assert real.switch.met < real.stay.met  # the switch delays the backlog: fewer meet the SLO


def test_the_policy_holds_what_its_replay_refuses(scene) -> None:
    """The core's verify step on the switch the capacity model wants, from the view the simulator gave it."""
    trace, _, view, plan, _ = scene
    grid = TypeGrid.for_types(trace, 6)
    policy = AdaptivePolicy(trace, grid, MODEL, CLUSTER, SLO, OracleSource(), DecisionConfig())
    wanted = Decision(NOW_S, True, "model says so", 18.0, 1.0, 2.0, 100.0, 1.0, plan.target, plan)
    checked = policy._verify(NOW_S, view, wanted, 18.0)
    assert checked.switch is False and checked.replay is not None
    assert checked.reason.startswith("model: model says so; but replayed")
    # the same switch from an empty cluster would have gone ahead
    empty = ClusterView(
        NOW_S, view.deployment, view.load, view.arrivals_by_type, (), 0, False, Backlog.empty(NOW_S)
    )
    assert policy._verify(NOW_S, empty, wanted, 18.0).switch is True


def test_over_the_burst_the_adaptive_policy_does_no_worse_than_staying(scene) -> None:
    """A real simulation of the whole slice: the ``oserve-oracle`` policy from eight TP1 replicas (what it sees of
    the future only makes a switch more tempting), with a capacity model told to take any latency cut whatever
    the switch costs (so only the replay stands between it and a switch), meets the SLO for at least as many
    requests as staying."""
    trace, *_ = scene
    grid = TypeGrid.for_types(trace, 6)
    start = Deployment(MODEL.name, EIGHT_TP1.replicas, type_edges=RequestGrid.of(grid))
    config = DecisionConfig(
        window_s=30.0, min_interval_s=60.0, verify_s=120.0, latency_cost_share=1.0, lull_check=False
    )
    policy = AdaptivePolicy(trace, grid, MODEL, CLUSTER, SLO, OracleSource(), config)
    ran = simulate(
        trace, start, MODEL, CLUSTER, router=policy.router, policy=policy, slo=SLO.to_dict()
    ).summary
    static = simulate(trace, start, MODEL, CLUSTER, router=policy.router, slo=SLO.to_dict()).summary
    assert policy.decisions and all(d.reason for d in policy.decisions)
    refused = [d for d in policy.decisions if d.replay is not None and not d.replay.confirmed]
    assert refused and all(d.replay.backlog > 0 for d in refused)  # replays from the work in flight said no
    assert ran["slo_attainment"] >= static["slo_attainment"] - 1e-9, [d.reason for d in policy.decisions]
    for d in policy.switches:  # every switch made was confirmed by its replay from the backlog
        assert d.replay is not None and d.replay.confirmed and d.replay.backlog >= 0


def test_the_replay_charges_the_switch_its_own_cost(scene) -> None:
    """The same switch priced with instant engine starts and with the 30 s cold start: the replay's switching
    branch pays the difference (capacity out of service while weights load and engines start)."""
    _, after, view, plan, _ = scene
    assert plan.duration_s >= 30.0 and plan.capacity_lost_gpu_s > 0
    instant = plan_switch(EIGHT_TP1, TWO_TP4, MODEL, CLUSTER, restart_s=0.0)
    assert instant.duration_s < plan.duration_s
    cold = _replay(after, view.backlog, tuple(staged_switches(EIGHT_TP1, plan, MODEL, CLUSTER)))
    free = _replay(after, view.backlog, tuple(staged_switches(EIGHT_TP1, instant, MODEL, CLUSTER)))
    assert cold.stay == free.stay  # staying does not depend on the switch
    assert cold.switch.met < free.switch.met
    assert cold.switch.ttft_p99_s > free.switch.ttft_p99_s
