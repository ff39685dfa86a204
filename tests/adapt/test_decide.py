"""The switch decision: gain vs the switch plan's cost, hysteresis, minimum interval, latency mode."""

from __future__ import annotations

import dataclasses

import pytest
from tests.factories import make_replica

from oserve.adapt import WAKE_RESTART_S
from oserve.adapt.decide import DecisionConfig, counts_of, decide, served_share
from oserve.errors import ConfigError
from oserve.planner import TypeDemand, default_slo, plan
from oserve.planner.placement import place
from oserve.spec import Deployment, get_model, parse_cluster

MODEL, CLUSTER = get_model("llama-3-8b"), parse_cluster("1x8xH100")
SLO = default_slo(MODEL, CLUSTER)


def _demand(rate: float) -> list[TypeDemand]:
    return [TypeDemand("short", rate, 300.0, 60.0), TypeDemand("long", rate / 4, 3000.0, 400.0)]


def _busy() -> list[TypeDemand]:
    """Demand at 90% of what the best plan carries."""
    return _demand(0.9 * plan(MODEL, CLUSTER, _demand(1.0), SLO).alpha)


def _one_tp8() -> Deployment:
    replicas = place(CLUSTER, [(make_replica(tp=8), 1)])
    return Deployment(MODEL.name, tuple(replicas))


def test_switches_when_the_running_deployment_cannot_carry_the_forecast() -> None:
    planned = plan(MODEL, CLUSTER, _busy(), SLO)
    current = _one_tp8()
    d = decide(600.0, current, planned, MODEL, CLUSTER, DecisionConfig())
    assert d.current_alpha < 1 < planned.alpha
    assert d.switch and d.plan is not None and d.target is not None
    assert d.gain_requests > 2 * d.cost_requests > 0
    assert counts_of(d.target, planned).sum() == planned.counts.sum()


def test_holds_inside_the_minimum_interval_and_when_the_cost_is_too_high() -> None:
    planned = plan(MODEL, CLUSTER, _busy(), SLO)
    current = _one_tp8()
    early = decide(600.0, current, planned, MODEL, CLUSTER, DecisionConfig(), last_switch_s=550.0)
    assert not early.switch and "last switch" in early.reason
    costly = decide(600.0, current, planned, MODEL, CLUSTER, DecisionConfig(cost_factor=1e6))
    assert not costly.switch and "switch cost" in costly.reason


def test_hysteresis_keeps_an_equal_deployment() -> None:
    planned = plan(MODEL, CLUSTER, _busy(), SLO)
    d = decide(600.0, planned.deployment, planned, MODEL, CLUSTER, DecisionConfig())
    assert not d.switch
    assert d.current_alpha == pytest.approx(d.target_alpha, rel=1e-6)


def test_latency_mode_switches_a_lightly_loaded_cluster_only_when_the_switch_is_cheap() -> None:
    light = plan(MODEL, CLUSTER, _demand(2.0), SLO, latency_headroom=1.5)
    assert light.method.endswith("+latency") and light.alpha >= 1.5
    # eight TP1 replicas (the throughput plan's shape) serve it all; the latency plan's wider replicas are faster
    many = Deployment(MODEL.name, tuple(place(CLUSTER, [(make_replica(tp=1), 8)])))
    cold = decide(600.0, many, light, MODEL, CLUSTER, DecisionConfig())
    assert cold.gain_requests == 0.0 and not cold.switch
    assert "mean latency" in cold.reason and "not worth" in cold.reason
    warm = decide(600.0, many, light, MODEL, CLUSTER, DecisionConfig(restart_s=WAKE_RESTART_S))
    assert warm.switch and "mean latency" in warm.reason
    assert warm.cost_requests < cold.cost_requests


def test_served_share_and_config_validation() -> None:
    assert served_share(2.0, 0.9) == 1.0
    assert served_share(0.5, 0.9) == pytest.approx(0.45)
    with pytest.raises(ConfigError, match="window_s"):
        DecisionConfig(window_s=0)
    with pytest.raises(ConfigError, match="utilisation"):
        dataclasses.replace(DecisionConfig(), utilisation=1.5)


def test_holds_when_the_target_cannot_drain_the_backlog_of_the_switch() -> None:
    """Both overloaded (demand 1.5x what the best plan carries): a switch adds a queue that never empties."""
    over = plan(MODEL, CLUSTER, _demand(1.5 * plan(MODEL, CLUSTER, _demand(1.0), SLO).alpha), SLO)
    d = decide(600.0, _one_tp8(), over, MODEL, CLUSTER, DecisionConfig())
    assert d.target_alpha < 1 and d.gain_requests > 0
    assert not d.switch and "cannot drain" in d.reason
