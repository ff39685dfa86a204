"""The controller: its decision rule, its pricing of the running deployment, and the live loop switching a serve
whose deployment no longer fits the traffic (observe -> forecast -> plan -> decide -> apply)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from serving import ServerThread, serve_config

from oserve.errors import ConfigError
from oserve.planner import default_slo, parse_rates, plan
from oserve.runtime.controller import DecisionInput, deployment_alpha, gain_rule, type_lengths_from_grid
from oserve.runtime.loadgen import LoadRequest, run_load, summarise
from oserve.spec import Deployment, Replica, ReplicaConfig, get_gpu, get_model, parse_cluster
from oserve.trace import TypeGrid

H100 = get_gpu("H100")
TWO_TP2 = Deployment(
    "llama-3-8b",
    (Replica(ReplicaConfig(H100, tp=2), (0, 1), "a"), Replica(ReplicaConfig(H100, tp=2), (2, 3), "b")),
)


@pytest.mark.parametrize(
    ("now", "last", "current", "planned", "switch"),
    [
        (100.0, None, 1.0, 1.2, True),  # 20% more load sustained
        (100.0, None, 1.0, 1.05, False),  # 5%: noise, hold
        (100.0, 70.0, 1.0, 2.0, False),  # switched 30 s ago: wait out the interval
        (100.0, 30.0, 1.0, 2.0, True),
        (100.0, None, 0.0, 0.5, True),  # the running deployment cannot serve a type at all
        (100.0, None, 0.0, 0.0, False),
    ],
)
def test_gain_rule(now, last, current, planned, switch):
    decide = gain_rule(min_gain=0.10, min_interval_s=60.0)
    decision = decide(DecisionInput(now, last, current, planned, {}))
    assert decision.switch is switch and decision.reason


def test_gain_rule_rejects_negative_settings():
    with pytest.raises(ConfigError):
        gain_rule(min_gain=-0.1)


def test_type_lengths_sit_inside_their_bins():
    grid = TypeGrid((1000,), (200,))
    lengths = type_lengths_from_grid(grid)
    assert lengths == {
        "p<1000,o<200": (500.0, 100.0),
        "p<1000,o>=200": (500.0, 300.0),
        "p>=1000,o<200": (1500.0, 100.0),
        "p>=1000,o>=200": (1500.0, 300.0),
    }
    for name, (p, o) in lengths.items():
        assert grid.names[int(grid.classify_lengths(p, o))] == name


def test_running_deployment_is_priced_by_the_plans_lp():
    model, cluster = get_model("llama-3-8b"), parse_cluster("1x4xH100")
    demands, grid = parse_rates("512:128=20")
    result = plan(model, cluster, demands, default_slo(model, cluster), grid=grid, pps=(1,))
    assert deployment_alpha(result.deployment, result) == pytest.approx(result.alpha)
    # two TP2 sustain less of this short-request load than the plan's four TP1
    assert 0 < deployment_alpha(TWO_TP2, result) < result.alpha / 1.1
    assert deployment_alpha(None, result) == 0.0


def test_live_loop_switches_a_deployment_that_no_longer_fits(tmp_path: Path):
    """Serve two TP2 replicas, send short requests only: the controller observes them, plans four TP1 (more
    load at the SLO), switches once, and no request fails."""
    file = tmp_path / "two-tp2.yaml"
    TWO_TP2.save(file)
    config = serve_config(
        tmp_path,
        deployment=str(file),
        **{
            "controller.enabled": True,
            "controller.window_s": 0.5,
            "controller.min_history_windows": 2,
            "controller.horizon_windows": 1,
            "controller.forecaster": "last",
            "controller.min_interval_s": 0.0,
        },
    )
    served = ServerThread(config)
    try:
        assert served.report.deployment.describe() == "2 x H100-SXM-80GB:tp2"
        steady = [LoadRequest(i / 20, 400, 100, stream=i % 2 == 0) for i in range(100)]  # 20 req/s for 5 s
        outcomes = asyncio.run(run_load(served.url, "llama-3-8b", steady))
        assert summarise(outcomes)["failed"] == 0, summarise(outcomes)["errors"]
        controller = served.server.controller
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(e.kind == "switch" for e in controller.events):
            time.sleep(0.1)
        switches = [e for e in controller.events if e.kind == "switch"]
        assert len(switches) == 1, [e.to_dict() for e in controller.events]
        detail = switches[0].detail
        assert detail["planned"] == "4 x H100-SXM-80GB:tp1"
        assert detail["planned_alpha"] > 1.1 * detail["current_alpha"]
        assert detail["forecast_rps"]["p<1024,o<256"] > 5
        assert served.server.orchestrator.current().describe() == "4 x H100-SXM-80GB:tp1"
    finally:
        served.close()
